//! The storage crate's codec modules (record batches, bounded decompression, produce-time
//! validation, record decoding, WAL segments), compiled here on their own: they depend on
//! nothing but each other and a few small crates, so fuzzing them does not build the
//! metadata backends and object store clients the rest of the storage crate needs. These
//! are the very source files the broker and compactor run.

#[path = "../../storage/src/batch.rs"]
pub mod batch;
#[path = "../../storage/src/compression.rs"]
pub mod compression;
#[path = "../../storage/src/records.rs"]
pub mod records;
#[path = "../../storage/src/segment.rs"]
pub mod segment;
#[path = "../../storage/src/validate.rs"]
pub mod validate;
