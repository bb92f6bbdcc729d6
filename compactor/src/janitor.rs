//! Deletes table metadata files that nothing references any more: metadata JSON files
//! that fell out of the metadata log, manifest lists of expired snapshots, manifests no
//! live snapshot lists, and whatever a failed commit left behind. Only files older than a
//! grace period go, so a commit in flight (its files written, its catalog update not yet
//! made) and readers of a just-replaced snapshot are never disturbed. Data files are left
//! to the round intents (an uncommitted round's files are deleted when it is resolved).
//! Staging files of local-store puts a crash interrupted (`<name>#<hex>`) are swept with
//! the kind of file they were for, once older than the grace period.

use std::collections::HashSet;
use std::time::Duration;

use futures::TryStreamExt;
use iceberg::spec::{ManifestList, Operation};
use iceberg::table::Table;
use icestream_catalog::table::{OFFSETS_FILE_PREFIX, SUMMARY_OFFSETS_FILE};
use icestream_storage::direct_fs::staged_for;
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
    urls.extend(snapshots.iter().filter_map(|s| {
        s.summary()
            .additional_properties
            .get(SUMMARY_OFFSETS_FILE)
            .cloned()
    }));
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

fn cutoff_ms(grace: Duration) -> i64 {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    now_ms - grace.as_millis() as i64
}

async fn delete_all(store: &dyn object_store::ObjectStore, paths: Vec<Path>) -> usize {
    let mut deleted = 0;
    for path in paths {
        match store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => deleted += 1,
            Err(e) => tracing::warn!(file = %path, error = %e, "deleting a table file"),
        }
    }
    deleted
}

/// Deletes the data files under `table`'s `data/` directory that no retained snapshot
/// lists and that are older than `grace`: files replaced by rewrites once the snapshots
/// that listed them expired, and files of rounds that never committed. The caller makes
/// sure no round or rewrite is in flight (their files are listed nowhere yet). Returns how
/// many were deleted.
pub async fn sweep_data(
    objects: &Objects,
    table: &Table,
    grace: Duration,
) -> Result<usize, CompactError> {
    let metadata = table.metadata();
    let dir = format!("{}/data/", metadata.location().trim_end_matches('/'));
    let Some((store, prefix)) = objects.resolve_url(&dir) else {
        return Ok(0);
    };
    // Every manifest of every retained snapshot, each read once.
    let mut manifests: HashSet<String> = HashSet::new();
    let mut keep: HashSet<Path> = HashSet::new();
    for snapshot in metadata.snapshots() {
        let list = table.manifest_list_reader(snapshot).load().await?;
        for m in list.entries() {
            if !manifests.insert(m.manifest_path.clone()) {
                continue;
            }
            let manifest = m.load_manifest(table.file_io()).await?;
            // The live entries of a snapshot's manifests are exactly its files (a file a
            // snapshot deleted is live in its parent, whose own manifests list it if that
            // parent is retained).
            for e in manifest.entries().iter().filter(|e| e.is_alive()) {
                if let Some((_, p)) = objects.resolve_url(e.file_path()) {
                    keep.insert(p);
                }
            }
        }
    }
    let cutoff = cutoff_ms(grace);
    let stale: Vec<Path> = store
        .list(Some(&prefix))
        .try_filter(|o| {
            let parquet = o
                .location
                .filename()
                .map(|n| staged_for(n).unwrap_or(n))
                .is_some_and(|n| n.ends_with(".parquet"));
            futures::future::ready(
                parquet
                    && o.last_modified.timestamp_millis() < cutoff
                    && !keep.contains(&o.location),
            )
        })
        .map_ok(|o| o.location)
        .try_collect()
        .await?;
    Ok(delete_all(store.as_ref(), stale).await)
}

/// What a metadata sweep found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MetadataSweep {
    /// Files deleted.
    pub deleted: usize,
    /// Bytes of the files under `metadata/` that stay.
    pub bytes: u64,
    /// Bytes of the current metadata file.
    pub metadata_file_bytes: u64,
}

/// Deletes the unreferenced files under `table`'s `metadata/` directory that are older
/// than `grace` (metadata files superseded beyond the metadata log at once).
pub async fn sweep_metadata(
    objects: &Objects,
    table: &Table,
    grace: Duration,
) -> Result<MetadataSweep, CompactError> {
    let dir = format!(
        "{}/metadata/",
        table.metadata().location().trim_end_matches('/')
    );
    let Some((store, prefix)) = objects.resolve_url(&dir) else {
        return Ok(MetadataSweep::default());
    };
    let keep = referenced(objects, table).await?;
    // Metadata files older than the oldest one the metadata log keeps were committed and
    // superseded: nothing in flight can need them, they go at once (Iceberg's
    // `write.metadata.delete-after-commit`). Others wait out the grace period.
    let oldest_logged = table
        .metadata()
        .metadata_log()
        .iter()
        .map(|m| m.metadata_file.as_str())
        .chain(table.metadata_location())
        .filter_map(metadata_version)
        .min();
    let cutoff = cutoff_ms(grace);
    let current = table
        .metadata_location()
        .and_then(|u| objects.resolve_url(u))
        .map(|(_, p)| p);
    let mut stale: Vec<Path> = Vec::new();
    let mut sweep = MetadataSweep::default();
    let mut listing = store.list(Some(&prefix));
    while let Some(o) = listing.try_next().await? {
        let listed = o.location.filename().unwrap_or_default();
        let staging = staged_for(listed);
        let name = staging.unwrap_or(listed);
        let superseded = staging.is_none()
            && name.ends_with(".metadata.json")
            && matches!((metadata_version(name), oldest_logged), (Some(v), Some(min)) if v < min);
        let ours = name.ends_with(".metadata.json")
            || name.ends_with(".avro")
            || name.starts_with(OFFSETS_FILE_PREFIX);
        let old = o.last_modified.timestamp_millis() < cutoff;
        if (superseded || (ours && old)) && !keep.contains(&o.location) {
            stale.push(o.location);
        } else {
            sweep.bytes += o.size;
            if current.as_ref() == Some(&o.location) {
                sweep.metadata_file_bytes = o.size;
            }
        }
    }
    sweep.deleted = delete_all(store.as_ref(), stale).await;
    Ok(sweep)
}

/// The version of a metadata file named `NNNNN-<uuid>.metadata.json` (or a URL of one).
fn metadata_version(url: &str) -> Option<u64> {
    let name = url.rsplit('/').next()?;
    let (version, rest) = name.split_once('-')?;
    rest.ends_with(".metadata.json")
        .then(|| version.parse().ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    #[test]
    fn metadata_versions() {
        use super::metadata_version;
        assert_eq!(
            metadata_version("file:///w/t/metadata/00042-0f3c.metadata.json"),
            Some(42)
        );
        assert_eq!(metadata_version("snap-1-0-abc.avro"), None);
        assert_eq!(metadata_version("v3.metadata.json"), None);
    }
}
