//! Consumer group coordinators, one per protocol:
//! - [`classic`]: JoinGroup/SyncGroup/Heartbeat/LeaveGroup with client-side assignors and
//!   static members (the protocol every Kafka client speaks);
//! - [`consumer`]: KIP-848's ConsumerGroupHeartbeat (`group.protocol=consumer`) with
//!   server-side assignors.
//!
//! Each holds its groups in a [`registry::Registry`] (one lock per group).
//! Both keep committed offsets in the metadata store; `api/` turns their answers into
//! responses. `icestream groups` (the command line) is [`crate::groups_cli`].

pub mod classic;
pub mod consumer;
mod registry;

pub use classic::{ClientInfo, Coordinator, GroupConfig, State};
pub use consumer::{ConsumerGroupConfig, ConsumerGroups};
