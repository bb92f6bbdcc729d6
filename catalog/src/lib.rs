//! The Iceberg side of icestream: each topic is a table `<namespace>.<topic>` in a catalog
//! (SQL on SQLite or PostgreSQL, or REST), its files in icestream's object store.

pub mod commit;
pub mod connect;
pub mod reader;
pub mod storage;
pub mod table;

/// Errors of the catalog layer.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("iceberg: {0}")]
    Iceberg(#[from] iceberg::Error),
    #[error("catalog configuration: {0}")]
    Config(String),
    #[error("table metadata is corrupt: {0}")]
    Corrupt(String),
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("object store: {0}")]
    Objects(#[from] object_store::Error),
}
