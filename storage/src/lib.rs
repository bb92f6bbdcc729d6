//! Storage for icestream: object store access, the Kafka record batch and WAL segment
//! formats, and the metadata store (a transactional key-value interface with its backends,
//! and the domain written over it).

pub mod batch;
pub mod clock;
pub mod compression;
pub mod direct_fs;
pub mod faults;
pub mod kv;
pub mod meta;
pub mod metrics;
pub mod objects;
pub mod records;
pub mod segment;
pub mod validate;

pub use clock::{Clock, ManualClock, SystemClock};
pub use meta::{MetaError, MetaStore};
pub use objects::{Objects, StoreKind};
