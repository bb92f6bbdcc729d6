//! icestream's broker: the Kafka wire protocol server over icestream's storage.
//!
//! Layers: [`server`] (listener) → [`connection`] (framing, ordering) → [`api`] (the
//! protocol: dispatch, one module per Kafka API) → the broker's components: [`log`] (the
//! write path, [`log::appender`], and the read path with its cache), [`groups`] (the
//! group coordinators), [`cluster`] (live brokers, topics, dynamic broker configs),
//! [`txn`] (transactions), [`gc`].

pub mod admin_http;
pub mod api;
pub mod broker;
pub mod cluster;
pub mod compaction;
pub mod connection;
pub mod errors;
pub mod fetch_sessions;
pub mod gc;
pub mod groups;
pub mod groups_cli;
pub mod http_serve;
pub mod log;
pub mod metrics;
pub mod registry;
pub mod security;
pub mod server;
pub mod settings;
pub mod supervisor;
pub mod topics_cli;
pub mod txn;

pub use broker::{Broker, Components};
pub use server::Server;
pub use settings::Settings;
