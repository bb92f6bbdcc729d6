//! Deletes table metadata files that nothing references any more: metadata JSON files
//! that fell out of the metadata log, manifest lists of expired snapshots, manifests no
//! live snapshot lists, and whatever a failed commit left behind. Only files older than a
//! grace period go, so a commit in flight (its files written, its catalog update not yet
//! made) and readers of a just-replaced snapshot are never disturbed. Data files are left
//! to the round intents (an uncommitted round's files are deleted when it is resolved).

use std::collections::HashSet;
use std::time::Duration;

use futures::TryStreamExt;
use iceberg::spec::{ManifestList, Operation};
use iceberg::table::Table;
use icestream_storage::Objects;
use object_store::path::Path;
use object_store::ObjectStoreExt;

use crate::CompactError;

/// Object paths of every metadata file `table` still needs.
async fn referenced(objects: &Objects, table: &Table) -> Result<HashSet<Path>, CompactError> {
    let metadata = table.metadata();
    let mut urls: Vec<String> = Vec::new();
    if let Some(current) = table.metadata_location() {
        urls.push(current.to_string());
    }
    urls.extend(
        metadata
            .metadata_log()
            .iter()
            .map(|m| m.metadata_file.clone()),
    );
    let mut snapshots: Vec<_> = metadata.snapshots().cloned().collect();
    snapshots.sort_by_key(|s| s.sequence_number());
    urls.extend(snapshots.iter().map(|s| s.manifest_list().to_string()));
    // Appends only add manifests: the newest snapshot of an append-only history lists
    // every manifest an older one does. Any other operation: read every manifest list.
    let append_only = snapshots
        .iter()
        .all(|s| matches!(s.summary().operation, Operation::Append));
    let lists: Vec<_> = if append_only {
        snapshots.last().into_iter().collect()
    } else {
        snapshots.iter().collect()
    };
    for snapshot in lists {
        let bytes = table
            .file_io()
            .new_input(snapshot.manifest_list())?
            .read()
            .await?;
        let list = ManifestList::parse_with_version(&bytes, metadata.format_version())?;
        urls.extend(list.entries().iter().map(|m| m.manifest_path.clone()));
    }
    Ok(urls
        .iter()
        .filter_map(|u| objects.resolve_url(u).map(|(_, p)| p))
        .collect())
}

/// Deletes the unreferenced files under `table`'s `metadata/` directory that are older
/// than `grace`. Returns how many were deleted.
pub async fn sweep_metadata(
    objects: &Objects,
    table: &Table,
    grace: Duration,
) -> Result<usize, CompactError> {
    let dir = format!(
        "{}/metadata/",
        table.metadata().location().trim_end_matches('/')
    );
    let Some((store, prefix)) = objects.resolve_url(&dir) else {
        return Ok(0);
    };
    let keep = referenced(objects, table).await?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let cutoff_ms = now_ms - grace.as_millis() as i64;
    let stale: Vec<Path> = store
        .list(Some(&prefix))
        .try_filter(|o| {
            let name = o.location.filename().unwrap_or_default();
            let ours = name.ends_with(".metadata.json") || name.ends_with(".avro");
            futures::future::ready(
                ours && o.last_modified.timestamp_millis() < cutoff_ms
                    && !keep.contains(&o.location),
            )
        })
        .map_ok(|o| o.location)
        .try_collect()
        .await?;
    let mut deleted = 0;
    for path in stale {
        match store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => deleted += 1,
            Err(e) => tracing::warn!(file = %path, error = %e, "deleting a table metadata file"),
        }
    }
    Ok(deleted)
}
