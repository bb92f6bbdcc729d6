//! Catalog connections, chosen by URL:
//! - `sqlite://PATH` (default `sqlite://DATA_DIR/catalog.db`): an Iceberg SQL catalog in
//!   SQLite, readable by PyIceberg's `SqlCatalog`, Spark's `JdbcCatalog` and others;
//! - `postgres://…`: the same SQL catalog in PostgreSQL;
//! - `http://…` / `https://…`: an Iceberg REST catalog; query parameters become catalog
//!   properties (`?warehouse=…&token=…`).
//!
//! Every catalog stores table files through icestream's own object store.

use std::collections::HashMap;
use std::sync::Arc;

use iceberg::{Catalog, CatalogBuilder};
use iceberg_catalog_rest::RestCatalogBuilder;
use iceberg_catalog_sql::{SqlBindStyle, SqlCatalogBuilder};
use icestream_storage::Objects;

use crate::storage::ObjectStorageFactory;
use crate::CatalogError;

/// The catalog name icestream registers tables under (engines configure the same name).
pub const CATALOG_NAME: &str = "icestream";

/// Puts the SQLite catalog database in WAL mode (a property of the database file, so every
/// later connection, ours or an engine's, uses it). In the default rollback-journal mode a
/// reader that keeps a transaction open (Spark's JdbcCatalog does, and any `sqlite3` shell
/// can) makes every commit fail with SQLITE_BUSY; with WAL, readers never block the writer.
async fn use_wal_journal(path: &str) -> Result<(), CatalogError> {
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
    use sqlx::ConnectOptions;
    let mut conn = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(std::time::Duration::from_secs(30))
        .connect()
        .await
        .map_err(|e| CatalogError::Config(format!("opening the SQLite catalog {path}: {e}")))?;
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .map_err(|e| CatalogError::Config(format!("SQLite catalog {path}: {e}")))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(%path, %mode, "the SQLite catalog could not be put in WAL mode; readers may block commits");
    }
    let _ = sqlx::Connection::close(conn).await;
    Ok(())
}

/// The advisory lock key under which brokers open (and so create) the PostgreSQL catalog
/// one at a time (the bytes of "icestrct").
const CATALOG_SCHEMA_LOCK: i64 = 0x6963_6573_7472_6374;

async fn lock_postgres(url: &str) -> Result<sqlx::PgConnection, CatalogError> {
    use sqlx::Connection;
    let fail = |e: sqlx::Error| CatalogError::Config(format!("PostgreSQL catalog: {e}"));
    let mut conn = sqlx::PgConnection::connect(url).await.map_err(fail)?;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(CATALOG_SCHEMA_LOCK)
        .execute(&mut conn)
        .await
        .map_err(fail)?;
    Ok(conn)
}

/// Opens the catalog at `url` with table files under `warehouse` (a URL in `objects`).
pub async fn open(
    url: &str,
    warehouse: &str,
    objects: &Objects,
) -> Result<Arc<dyn Catalog>, CatalogError> {
    let factory = Arc::new(ObjectStorageFactory::new(objects.clone()));
    if let Some(path) = url.strip_prefix("sqlite://") {
        if let Some(dir) = std::path::Path::new(path).parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| CatalogError::Config(format!("creating {}: {e}", dir.display())))?;
        }
        use_wal_journal(path).await?;
        let catalog = SqlCatalogBuilder::default()
            .uri(format!("sqlite:{path}?mode=rwc"))
            .warehouse_location(warehouse)
            .sql_bind_style(SqlBindStyle::QMark)
            .with_storage_factory(factory)
            .load(CATALOG_NAME, HashMap::new())
            .await?;
        return Ok(Arc::new(catalog));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        // Opening the catalog creates its tables if they are missing; brokers of a new
        // cluster starting together would race on PostgreSQL's `CREATE TABLE IF NOT EXISTS`
        // (one fails on a unique violation in `pg_type`), so they take turns under an
        // advisory lock held on a connection of its own.
        let mut turn = lock_postgres(url).await?;
        let catalog = SqlCatalogBuilder::default()
            .uri(url)
            .warehouse_location(warehouse)
            .sql_bind_style(SqlBindStyle::DollarNumeric)
            .with_storage_factory(factory)
            .load(CATALOG_NAME, HashMap::new())
            .await;
        // Closing the connection releases the lock even if the unlock is lost.
        let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(CATALOG_SCHEMA_LOCK)
            .execute(&mut turn)
            .await;
        let _ = sqlx::Connection::close(turn).await;
        return Ok(Arc::new(catalog?));
    }
    if url.starts_with("http://") || url.starts_with("https://") {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut props: HashMap<String, String> = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (k.to_string(), v.to_string())
            })
            .collect();
        props.insert("uri".into(), base.to_string());
        props
            .entry("warehouse".into())
            .or_insert_with(|| warehouse.to_string());
        let catalog = RestCatalogBuilder::default()
            .with_storage_factory(factory)
            .load(CATALOG_NAME, props)
            .await?;
        return Ok(Arc::new(catalog));
    }
    Err(CatalogError::Config(format!(
        "unsupported catalog url {url:?}: expected sqlite://PATH, postgres://… or http(s)://…"
    )))
}
