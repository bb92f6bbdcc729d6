//! The table of a topic: its schema, partitioning and sort order, its identity, and the
//! committed offsets every snapshot carries in its summary.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use iceberg::spec::{
    ListType, NestedField, NullOrder, PrimitiveType, Schema, SortDirection, SortField, SortOrder,
    StructType, Transform, Type, UnboundPartitionSpec,
};
use iceberg::table::Table;
use iceberg::{Catalog, NamespaceIdent, TableCreation, TableIdent};
use uuid::Uuid;

use crate::CatalogError;

pub const FIELD_PARTITION: i32 = 1;
pub const FIELD_OFFSET: i32 = 2;
pub const FIELD_TIMESTAMP: i32 = 3;
pub const FIELD_KEY: i32 = 4;
pub const FIELD_VALUE: i32 = 5;
pub const FIELD_HEADERS: i32 = 6;
const FIELD_HEADER: i32 = 7;
const FIELD_HEADER_KEY: i32 = 8;
const FIELD_HEADER_VALUE: i32 = 9;

/// Snapshot summary key holding the next offset of every partition, as JSON.
pub const SUMMARY_OFFSETS: &str = "icestream.next-offsets";
/// Snapshot summary key naming a file (in the table's `metadata/` directory) holding the
/// next offset of every partition, used instead of [`SUMMARY_OFFSETS`] when the map is
/// large, so that the table metadata does not repeat it for every retained snapshot.
pub const SUMMARY_OFFSETS_FILE: &str = "icestream.next-offsets-file";
/// Offset maps up to this many bytes of JSON are kept in the snapshot summary itself.
pub const INLINE_OFFSETS_MAX_BYTES: usize = 1024;
/// File name prefix of offset map files.
pub const OFFSETS_FILE_PREFIX: &str = "icestream-offsets-";
/// Snapshot summary key holding the id of the compaction round that made the snapshot.
pub const SUMMARY_COMMIT_ID: &str = "icestream.commit-id";
/// Table property naming the topic id the table belongs to.
pub const PROP_TOPIC_ID: &str = "icestream.topic-id";

/// `partition int, offset long, timestamp timestamptz, key binary, value binary,
/// headers list<struct<key string, value binary>>`.
pub fn topic_schema() -> Result<Schema, CatalogError> {
    let header = StructType::new(vec![
        NestedField::required(
            FIELD_HEADER_KEY,
            "key",
            Type::Primitive(PrimitiveType::String),
        )
        .into(),
        NestedField::optional(
            FIELD_HEADER_VALUE,
            "value",
            Type::Primitive(PrimitiveType::Binary),
        )
        .into(),
    ]);
    Schema::builder()
        .with_fields(vec![
            NestedField::required(
                FIELD_PARTITION,
                "partition",
                Type::Primitive(PrimitiveType::Int),
            )
            .into(),
            NestedField::required(FIELD_OFFSET, "offset", Type::Primitive(PrimitiveType::Long))
                .into(),
            NestedField::required(
                FIELD_TIMESTAMP,
                "timestamp",
                Type::Primitive(PrimitiveType::Timestamptz),
            )
            .into(),
            NestedField::optional(FIELD_KEY, "key", Type::Primitive(PrimitiveType::Binary)).into(),
            NestedField::optional(FIELD_VALUE, "value", Type::Primitive(PrimitiveType::Binary))
                .into(),
            NestedField::optional(
                FIELD_HEADERS,
                "headers",
                Type::List(ListType::new(
                    NestedField::list_element(FIELD_HEADER, Type::Struct(header), true).into(),
                )),
            )
            .into(),
        ])
        .build()
        .map_err(CatalogError::from)
}

/// Identity on `partition`: one Kafka partition's rows are in their own files.
pub fn partition_spec() -> Result<UnboundPartitionSpec, CatalogError> {
    UnboundPartitionSpec::builder()
        .add_partition_field(FIELD_PARTITION, "partition", Transform::Identity)
        .map(|b| b.build())
        .map_err(CatalogError::from)
}

pub fn sort_order() -> Result<SortOrder, CatalogError> {
    SortOrder::builder()
        .with_order_id(1)
        .with_sort_field(
            SortField::builder()
                .source_id(FIELD_OFFSET)
                .transform(Transform::Identity)
                .direction(SortDirection::Ascending)
                .null_order(NullOrder::First)
                .build(),
        )
        .build_unbound()
        .map_err(CatalogError::from)
}

pub fn table_ident(namespace: &str, topic: &str) -> Result<TableIdent, CatalogError> {
    Ok(TableIdent::new(
        NamespaceIdent::new(namespace.to_string()),
        topic.to_string(),
    ))
}

/// Loads the topic's table, creating the namespace and table if needed. A table left by
/// an earlier topic of the same name (another topic id) is dropped first.
pub async fn ensure_table(
    catalog: &dyn Catalog,
    namespace: &str,
    topic: &str,
    topic_id: Uuid,
) -> Result<Table, CatalogError> {
    let ident = table_ident(namespace, topic)?;
    let ns = ident.namespace().clone();
    if !catalog.namespace_exists(&ns).await? {
        match catalog.create_namespace(&ns, HashMap::new()).await {
            Ok(_) => {}
            // A concurrent creator won.
            Err(_) if catalog.namespace_exists(&ns).await? => {}
            Err(e) => return Err(e.into()),
        }
    }
    if catalog.table_exists(&ident).await? {
        let table = catalog.load_table(&ident).await?;
        let owner = table.metadata().properties().get(PROP_TOPIC_ID).cloned();
        if owner.as_deref() == Some(topic_id.to_string().as_str()) {
            return Ok(table);
        }
        tracing::warn!(table = %ident, ?owner, %topic_id, "dropping the table of a deleted topic of the same name");
        catalog.drop_table(&ident).await?;
    }
    let creation = TableCreation::builder()
        .name(topic.to_string())
        .schema(topic_schema()?)
        .partition_spec(partition_spec()?)
        .sort_order(sort_order()?)
        .properties([
            (PROP_TOPIC_ID.to_string(), topic_id.to_string()),
            // Commits are pinned to the snapshot they were computed from: never retried
            // by the library on top of newer metadata.
            ("commit.retry.num-retries".to_string(), "0".to_string()),
            (
                "write.parquet.compression-codec".to_string(),
                "zstd".to_string(),
            ),
            // The metadata log stays short; icestream's janitor deletes the metadata files
            // that drop out of it.
            (
                "write.metadata.previous-versions-max".to_string(),
                "20".to_string(),
            ),
            (
                "write.metadata.delete-after-commit.enabled".to_string(),
                "true".to_string(),
            ),
        ])
        .build();
    match catalog.create_table(&ns, creation).await {
        Ok(t) => Ok(t),
        Err(e) => {
            // Someone else created it meanwhile.
            if catalog.table_exists(&ident).await? {
                Ok(catalog.load_table(&ident).await?)
            } else {
                Err(e.into())
            }
        }
    }
}

/// The next offset of every partition committed to the table (empty for a new table).
pub async fn committed_offsets(table: &Table) -> Result<BTreeMap<i32, i64>, CatalogError> {
    let Some(snapshot) = table.metadata().current_snapshot() else {
        return Ok(BTreeMap::new());
    };
    let summary = &snapshot.summary().additional_properties;
    if let Some(json) = summary.get(SUMMARY_OFFSETS) {
        return parse_offsets(json);
    }
    match summary.get(SUMMARY_OFFSETS_FILE) {
        None => Ok(BTreeMap::new()),
        Some(file) => {
            let bytes = table.file_io().new_input(file)?.read().await?;
            let json = std::str::from_utf8(&bytes)
                .map_err(|e| CatalogError::Corrupt(format!("{file}: {e}")))?;
            parse_offsets(json)
        }
    }
}

/// The snapshot summary entry carrying `offsets`: inline when small, otherwise written to
/// an offsets file (named after `commit_id`) that the entry names.
pub async fn offsets_property(
    table: &Table,
    commit_id: &str,
    offsets: &BTreeMap<i32, i64>,
) -> Result<(String, String), CatalogError> {
    let json = format_offsets(offsets);
    if json.len() <= INLINE_OFFSETS_MAX_BYTES {
        return Ok((SUMMARY_OFFSETS.to_string(), json));
    }
    let file = format!(
        "{}/metadata/{OFFSETS_FILE_PREFIX}{commit_id}.json",
        table.metadata().location().trim_end_matches('/')
    );
    table
        .file_io()
        .new_output(&file)?
        .write(bytes::Bytes::from(json))
        .await?;
    Ok((SUMMARY_OFFSETS_FILE.to_string(), file))
}

/// The summary entries of the current snapshot that carry the committed offsets, to be
/// copied into a snapshot that does not change them.
pub fn current_offsets_properties(table: &Table) -> HashMap<String, String> {
    table
        .metadata()
        .current_snapshot()
        .map(|s| {
            s.summary()
                .additional_properties
                .iter()
                .filter(|(k, _)| *k == SUMMARY_OFFSETS || *k == SUMMARY_OFFSETS_FILE)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// Writes `metadata/version-hint.text` naming the table's current metadata file, for
/// engines that open a table by its directory (DuckDB's `iceberg_scan`, Hadoop-style
/// readers): it holds the metadata file name without `.metadata.json`.
pub async fn write_version_hint(table: &Table) -> Result<(), CatalogError> {
    let Some(current) = table.metadata_location() else {
        return Ok(());
    };
    let name = current.rsplit('/').next().unwrap_or(current);
    let stem = name.strip_suffix(".metadata.json").unwrap_or(name);
    let hint = format!(
        "{}/metadata/version-hint.text",
        table.metadata().location().trim_end_matches('/')
    );
    table
        .file_io()
        .new_output(&hint)?
        .write(bytes::Bytes::from(stem.to_string()))
        .await?;
    Ok(())
}

pub fn parse_offsets(json: &str) -> Result<BTreeMap<i32, i64>, CatalogError> {
    let raw: BTreeMap<String, i64> = serde_json::from_str(json)
        .map_err(|e| CatalogError::Corrupt(format!("{SUMMARY_OFFSETS}: {e}")))?;
    raw.into_iter()
        .map(|(k, v)| {
            k.parse::<i32>()
                .map(|p| (p, v))
                .map_err(|e| CatalogError::Corrupt(format!("{SUMMARY_OFFSETS} key {k:?}: {e}")))
        })
        .collect()
}

pub fn format_offsets(offsets: &BTreeMap<i32, i64>) -> String {
    let raw: BTreeMap<String, i64> = offsets.iter().map(|(p, o)| (p.to_string(), *o)).collect();
    serde_json::to_string(&raw).unwrap_or_default()
}

/// Whether a snapshot made by the round `commit_id` is in the table's history.
pub fn has_commit(table: &Table, commit_id: &str) -> bool {
    table.metadata().snapshots().any(|s| {
        s.summary()
            .additional_properties
            .get(SUMMARY_COMMIT_ID)
            .is_some_and(|c| c == commit_id)
    })
}

pub type TableRef = Arc<Table>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_and_offsets() {
        let schema = topic_schema().expect("schema");
        assert_eq!(schema.as_struct().fields().len(), 6);
        let offsets: BTreeMap<i32, i64> = [(0, 10), (3, 7)].into_iter().collect();
        assert_eq!(
            parse_offsets(&format_offsets(&offsets)).expect("parse"),
            offsets
        );
        assert!(parse_offsets("{\"x\":1}").is_err());
        partition_spec().expect("spec");
        sort_order().expect("order");
    }
}
