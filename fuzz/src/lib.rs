//! The storage crate's codec modules (record batches, bounded decompression, produce-time
//! validation, record decoding, message format v0/v1 conversion, WAL segments) and the
//! broker's decoder of pre-0.11 request versions, compiled here on their own: they depend on
//! nothing but each other and a few small crates, so fuzzing them does not build the
//! metadata backends and object store clients the rest of the storage crate needs. These
//! are the very source files the broker and compactor run.

#[path = "../../storage/src/batch.rs"]
pub mod batch;
#[path = "../../storage/src/compression.rs"]
pub mod compression;
#[path = "../../storage/src/legacy.rs"]
pub mod legacy;
#[path = "../../broker/src/api/legacy.rs"]
pub mod legacy_requests;
#[path = "../../storage/src/records.rs"]
pub mod records;
#[path = "../../storage/src/segment.rs"]
pub mod segment;
#[path = "../../storage/src/validate.rs"]
pub mod validate;
