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

use async_trait::async_trait;
use iceberg::spec::DataFile;
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::{Catalog, Namespace, NamespaceIdent, Result, TableCommit, TableCreation, TableIdent};

use crate::CatalogError;

#[derive(Debug)]
struct PinnedCatalog<'a> {
    inner: &'a dyn Catalog,
    base: Table,
}

#[async_trait]
impl Catalog for PinnedCatalog<'_> {
    async fn list_namespaces(
        &self,
        parent: Option<&NamespaceIdent>,
    ) -> Result<Vec<NamespaceIdent>> {
        self.inner.list_namespaces(parent).await
    }
    async fn create_namespace(
        &self,
        namespace: &NamespaceIdent,
        properties: HashMap<String, String>,
    ) -> Result<Namespace> {
        self.inner.create_namespace(namespace, properties).await
    }
    async fn get_namespace(&self, namespace: &NamespaceIdent) -> Result<Namespace> {
        self.inner.get_namespace(namespace).await
    }
    async fn namespace_exists(&self, namespace: &NamespaceIdent) -> Result<bool> {
        self.inner.namespace_exists(namespace).await
    }
    async fn update_namespace(
        &self,
        namespace: &NamespaceIdent,
        properties: HashMap<String, String>,
    ) -> Result<()> {
        self.inner.update_namespace(namespace, properties).await
    }
    async fn drop_namespace(&self, namespace: &NamespaceIdent) -> Result<()> {
        self.inner.drop_namespace(namespace).await
    }
    async fn list_tables(&self, namespace: &NamespaceIdent) -> Result<Vec<TableIdent>> {
        self.inner.list_tables(namespace).await
    }
    async fn create_table(
        &self,
        namespace: &NamespaceIdent,
        creation: TableCreation,
    ) -> Result<Table> {
        self.inner.create_table(namespace, creation).await
    }
    async fn load_table(&self, table: &TableIdent) -> Result<Table> {
        if table == self.base.identifier() {
            return Ok(self.base.clone());
        }
        self.inner.load_table(table).await
    }
    async fn drop_table(&self, table: &TableIdent) -> Result<()> {
        self.inner.drop_table(table).await
    }
    async fn purge_table(&self, table: &TableIdent) -> Result<()> {
        self.inner.purge_table(table).await
    }
    async fn table_exists(&self, table: &TableIdent) -> Result<bool> {
        self.inner.table_exists(table).await
    }
    async fn rename_table(&self, src: &TableIdent, dest: &TableIdent) -> Result<()> {
        self.inner.rename_table(src, dest).await
    }
    async fn register_table(&self, table: &TableIdent, metadata_location: String) -> Result<Table> {
        self.inner.register_table(table, metadata_location).await
    }
    async fn update_table(&self, commit: TableCommit) -> Result<Table> {
        self.inner.update_table(commit).await
    }
}

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
