//! The Iceberg side of icestream: each topic is a table `<namespace>.<topic>` in a catalog
//! (SQL on SQLite or PostgreSQL, or REST), its files in icestream's object store.

/// `impl Catalog for $ty` with the methods given in braces (`load_table` and
/// `update_table`) and every other method delegated to the catalog in field `$inner`: for
/// wrappers that change only how tables are loaded or committed.
macro_rules! catalog_wrapper {
    ($ty:ty, $inner:ident, { $($own:tt)* }) => {
        #[async_trait::async_trait]
        impl iceberg::Catalog for $ty {
        $($own)*
        async fn list_namespaces(
            &self,
            parent: Option<&iceberg::NamespaceIdent>,
        ) -> iceberg::Result<Vec<iceberg::NamespaceIdent>> {
            self.$inner.list_namespaces(parent).await
        }
        async fn create_namespace(
            &self,
            namespace: &iceberg::NamespaceIdent,
            properties: std::collections::HashMap<String, String>,
        ) -> iceberg::Result<iceberg::Namespace> {
            self.$inner.create_namespace(namespace, properties).await
        }
        async fn get_namespace(
            &self,
            namespace: &iceberg::NamespaceIdent,
        ) -> iceberg::Result<iceberg::Namespace> {
            self.$inner.get_namespace(namespace).await
        }
        async fn namespace_exists(
            &self,
            namespace: &iceberg::NamespaceIdent,
        ) -> iceberg::Result<bool> {
            self.$inner.namespace_exists(namespace).await
        }
        async fn update_namespace(
            &self,
            namespace: &iceberg::NamespaceIdent,
            properties: std::collections::HashMap<String, String>,
        ) -> iceberg::Result<()> {
            self.$inner.update_namespace(namespace, properties).await
        }
        async fn drop_namespace(&self, namespace: &iceberg::NamespaceIdent) -> iceberg::Result<()> {
            self.$inner.drop_namespace(namespace).await
        }
        async fn list_tables(
            &self,
            namespace: &iceberg::NamespaceIdent,
        ) -> iceberg::Result<Vec<iceberg::TableIdent>> {
            self.$inner.list_tables(namespace).await
        }
        async fn create_table(
            &self,
            namespace: &iceberg::NamespaceIdent,
            creation: iceberg::TableCreation,
        ) -> iceberg::Result<iceberg::table::Table> {
            self.$inner.create_table(namespace, creation).await
        }
        async fn drop_table(&self, table: &iceberg::TableIdent) -> iceberg::Result<()> {
            self.$inner.drop_table(table).await
        }
        async fn purge_table(&self, table: &iceberg::TableIdent) -> iceberg::Result<()> {
            self.$inner.purge_table(table).await
        }
        async fn table_exists(&self, table: &iceberg::TableIdent) -> iceberg::Result<bool> {
            self.$inner.table_exists(table).await
        }
        async fn rename_table(
            &self,
            src: &iceberg::TableIdent,
            dest: &iceberg::TableIdent,
        ) -> iceberg::Result<()> {
            self.$inner.rename_table(src, dest).await
        }
        async fn register_table(
            &self,
            table: &iceberg::TableIdent,
            metadata_location: String,
        ) -> iceberg::Result<iceberg::table::Table> {
            self.$inner.register_table(table, metadata_location).await
        }
        }
    };
}

pub mod commit;
pub mod connect;
pub mod faults;
pub mod reader;
pub mod storage;
pub mod table;
pub mod typed;

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
    #[error("commit conflict: {0}")]
    Conflict(String),
}
