//! Snapshot commits pinned to the snapshot they were computed from.
//!
//! iceberg-rust's `Transaction::commit` reloads the table and re-applies an append on top
//! of whatever is current, so a commit computed from stale offsets would succeed and
//! duplicate rows. Here the catalog handed to the transaction returns the base table when
//! asked to reload it, so the append's requirement (the branch still points at the base
//! snapshot) is checked by the real catalog against the real current state, and a stale
//! commit fails instead. The caller then reloads and decides.

use std::collections::HashMap;
use std::sync::Arc;

use iceberg::spec::DataFile;
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::{Catalog, Result, TableCommit, TableIdent};

use crate::CatalogError;

#[derive(Debug)]
struct PinnedCatalog<'a> {
    inner: &'a dyn Catalog,
    base: Table,
}

catalog_wrapper!(PinnedCatalog<'_>, inner, {
    async fn load_table(&self, table: &TableIdent) -> Result<Table> {
        if table == self.base.identifier() {
            return Ok(self.base.clone());
        }
        self.inner.load_table(table).await
    }
    async fn update_table(&self, commit: TableCommit) -> Result<Table> {
        self.inner.update_table(commit).await
    }
});

/// Appends `files` as one snapshot on top of exactly `base`, with `properties` in its
/// summary. Fails (changing nothing) if the table moved on since `base` was loaded.
pub async fn append_pinned(
    catalog: &Arc<dyn Catalog>,
    base: &Table,
    files: Vec<DataFile>,
    properties: HashMap<String, String>,
) -> std::result::Result<Table, CatalogError> {
    let tx = Transaction::new(base);
    let action = tx
        .fast_append()
        .with_check_duplicate(false)
        .add_data_files(files)
        .set_snapshot_properties(properties);
    let tx = action.apply(tx)?;
    let pinned = PinnedCatalog {
        inner: catalog.as_ref(),
        base: base.clone(),
    };
    Ok(tx.commit(&pinned).await?)
}

/// Expires snapshots older than `older_than_ms`, keeping at least `retain_last`.
pub async fn expire_snapshots(
    catalog: &Arc<dyn Catalog>,
    base: &Table,
    older_than_ms: i64,
    retain_last: usize,
) -> std::result::Result<Table, CatalogError> {
    let tx = Transaction::new(base);
    let action = tx
        .expire_snapshots()
        .expire_older_than_ms(older_than_ms)
        .retain_last(retain_last);
    let tx = action.apply(tx)?;
    let pinned = PinnedCatalog {
        inner: catalog.as_ref(),
        base: base.clone(),
    };
    Ok(tx.commit(&pinned).await?)
}
