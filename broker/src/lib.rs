//! icestream's broker: the Kafka wire protocol server over icestream's storage.
//!
//! Layers: [`server`] (listener) → [`connection`] (framing, ordering) → [`api`] (dispatch,
//! one module per Kafka API) → the broker's components: [`topics`], [`appender`] (write
//! path), [`log`] (read path), [`gc`].

pub mod admin_http;
pub mod api;
pub mod appender;
pub mod broker;
pub mod broker_configs;
mod cache;
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
pub mod topics;
pub mod topics_cli;
pub mod txn;

pub use broker::{Broker, Components};
pub use server::Server;
pub use settings::Settings;
