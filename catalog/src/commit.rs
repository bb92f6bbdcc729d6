//! Snapshot commits pinned to the snapshot they were computed from.
//!
//! iceberg-rust's `Transaction::commit` reloads the table and re-applies an append on top
//! of whatever is current, so a commit computed from stale offsets would succeed and
//! duplicate rows. Here the catalog handed to the transaction returns the base table when
//! asked to reload it, so the append's requirement (the branch still points at the base
//! snapshot) is checked by the real catalog against the real current state, and a stale
//! commit fails instead. The caller then reloads and decides.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use iceberg::spec::{
    DataFile, FormatVersion, ManifestContentType, ManifestFile, ManifestListWriter, ManifestWriter,
    ManifestWriterBuilder, Operation, Snapshot, SnapshotReference, SnapshotRetention,
    SnapshotSummaryCollector, Summary, MAIN_BRANCH,
};
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::{Catalog, Result, TableCommit, TableIdent, TableRequirement, TableUpdate};
use uuid::Uuid;

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

/// A change to a table's data files, committed as one snapshot on top of exactly a base
/// table: an `append` when nothing is removed, a `replace` (the same rows in other files,
/// e.g. small files rewritten into one) when files are removed.
#[derive(Debug, Default)]
pub struct FileChange {
    pub added: Vec<DataFile>,
    /// Paths of data files live in the base snapshot that this snapshot removes.
    pub removed: Vec<String>,
    /// Extra snapshot summary properties.
    pub properties: HashMap<String, String>,
}

/// When a commit merges manifests (as Iceberg's merge-append does): once the snapshot would
/// list at least `min_count` manifests, the carried manifests smaller than `target_bytes`
/// are rewritten into manifests of about `target_bytes`. The manifest count of the current
/// snapshot then stays below `min_count` plus the few a single commit writes, however many
/// commits there were.
#[derive(Debug, Clone)]
pub struct ManifestMerge {
    pub min_count: usize,
    pub target_bytes: u64,
}

impl Default for ManifestMerge {
    fn default() -> Self {
        Self {
            min_count: 16,
            target_bytes: 8 * 1024 * 1024,
        }
    }
}

/// What a committed [`FileChange`] did to the manifests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitStats {
    pub manifests: usize,
    pub merged_manifests: usize,
}

/// Commits `change` as one snapshot whose parent is `base`'s current snapshot, failing
/// (changing nothing) if the table moved on since `base` was loaded, or if a file to remove
/// is not live in `base`. The snapshot is built here with the manifest writers: a manifest
/// of the added files, the manifests holding removed files rewritten with those entries
/// `DELETED` and the others `EXISTING`, small manifests merged ([`ManifestMerge`]), every
/// other manifest carried as it is.
pub async fn commit_files(
    catalog: &dyn Catalog,
    base: &Table,
    change: FileChange,
    merge: &ManifestMerge,
) -> std::result::Result<(Table, CommitStats), CatalogError> {
    let metadata = base.metadata();
    let version = metadata.format_version();
    if version == FormatVersion::V3 {
        return Err(CatalogError::Config(
            "format v3 tables are not written by icestream".into(),
        ));
    }
    let mut out = ManifestOutput {
        table: base,
        snapshot_id: unique_snapshot_id(base),
        commit: Uuid::now_v7(),
        counter: 0,
    };
    let parent = metadata.current_snapshot();
    let carried: Vec<ManifestFile> = match parent {
        Some(s) => base
            .manifest_list_reader(s)
            .load()
            .await?
            .consume_entries()
            .into_iter()
            .collect(),
        None => Vec::new(),
    };

    // Manifests written by this commit, newest first, then the carried ones.
    let mut written: Vec<ManifestFile> = Vec::new();
    if !change.added.is_empty() {
        let mut w = out.writer()?;
        for f in &change.added {
            // Sequence number inherited from the manifest list at commit.
            w.add_file(f.clone(), -1)?;
        }
        written.push(w.write_manifest_file().await?);
    }

    let removed: HashSet<&str> = change.removed.iter().map(String::as_str).collect();
    let mut removed_files: Vec<DataFile> = Vec::new();
    let mut untouched: Vec<ManifestFile> = Vec::new();
    for m in carried {
        let may_hold = m.content == ManifestContentType::Data
            && (m.has_added_files() || m.has_existing_files());
        if removed.is_empty() || !may_hold {
            untouched.push(m);
            continue;
        }
        let manifest = m.load_manifest(base.file_io()).await?;
        let hits = manifest
            .entries()
            .iter()
            .any(|e| e.is_alive() && removed.contains(e.file_path()));
        if !hits {
            untouched.push(m);
            continue;
        }
        let mut w = out.writer()?;
        for e in manifest.entries().iter().filter(|e| e.is_alive()) {
            let seq = e.sequence_number.unwrap_or(m.sequence_number);
            let file_seq = Some(e.file_sequence_number.unwrap_or(seq));
            if removed.contains(e.file_path()) {
                w.add_delete_file(e.data_file.clone(), seq, file_seq)?;
                removed_files.push(e.data_file.clone());
            } else {
                let snapshot = e.snapshot_id.unwrap_or(m.added_snapshot_id);
                w.add_existing_file(e.data_file.clone(), snapshot, seq, file_seq)?;
            }
        }
        written.push(w.write_manifest_file().await?);
    }
    if removed_files.len() != removed.len() {
        return Err(CatalogError::Conflict(format!(
            "{} of {} files to replace are not live in snapshot {:?}",
            removed.len() - removed_files.len(),
            removed.len(),
            metadata.current_snapshot_id()
        )));
    }

    // Merge small carried manifests once the list would be long.
    let mut stats = CommitStats::default();
    let mut carried = untouched;
    if written.len() + carried.len() >= merge.min_count.max(2) {
        let (small, large): (Vec<_>, Vec<_>) = carried.into_iter().partition(|m| {
            m.content == ManifestContentType::Data
                && (m.manifest_length as u64) < merge.target_bytes
        });
        carried = large;
        let mut bins: Vec<Vec<ManifestFile>> = Vec::new();
        let mut bin_bytes = 0u64;
        for m in small {
            let len = m.manifest_length.max(0) as u64;
            match bins.last_mut() {
                Some(bin) if bin_bytes + len <= merge.target_bytes => {
                    bin_bytes += len;
                    bin.push(m);
                }
                _ => {
                    bin_bytes = len;
                    bins.push(vec![m]);
                }
            }
        }
        for bin in bins {
            if bin.len() == 1 {
                carried.extend(bin);
                continue;
            }
            stats.merged_manifests += bin.len();
            let mut w = out.writer()?;
            for m in &bin {
                let manifest = m.load_manifest(base.file_io()).await?;
                // Entries deleted by earlier snapshots are dropped, as in Iceberg's merge.
                for e in manifest.entries().iter().filter(|e| e.is_alive()) {
                    let seq = e.sequence_number.unwrap_or(m.sequence_number);
                    let file_seq = Some(e.file_sequence_number.unwrap_or(seq));
                    let snapshot = e.snapshot_id.unwrap_or(m.added_snapshot_id);
                    w.add_existing_file(e.data_file.clone(), snapshot, seq, file_seq)?;
                }
            }
            written.push(w.write_manifest_file().await?);
        }
    }
    let mut manifests = written;
    manifests.extend(carried);
    stats.manifests = manifests.len();

    let operation = if removed_files.is_empty() {
        Operation::Append
    } else {
        Operation::Replace
    };
    let summary = summary(base, &change, &removed_files, operation)?;

    let list_path = format!(
        "{}/metadata/snap-{}-0-{}.avro",
        metadata.location().trim_end_matches('/'),
        out.snapshot_id,
        out.commit
    );
    let sequence = metadata.next_sequence_number();
    let parent_id = metadata.current_snapshot_id();
    let writer = base.file_io().new_output(&list_path)?.writer().await?;
    let mut list = match version {
        FormatVersion::V1 => ManifestListWriter::v1(writer, out.snapshot_id, parent_id),
        _ => ManifestListWriter::v2(writer, out.snapshot_id, parent_id, sequence),
    };
    list.add_manifests(manifests.into_iter())?;
    list.close().await?;

    let snapshot = Snapshot::builder()
        .with_manifest_list(list_path)
        .with_snapshot_id(out.snapshot_id)
        .with_parent_snapshot_id(parent_id)
        .with_sequence_number(sequence)
        .with_summary(summary)
        .with_schema_id(metadata.current_schema_id())
        .with_timestamp_ms(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0)
                .max(metadata.last_updated_ms()),
        )
        .build();
    let commit = TableCommit::builder()
        .ident(base.identifier().clone())
        .requirements(vec![
            TableRequirement::UuidMatch {
                uuid: metadata.uuid(),
            },
            TableRequirement::RefSnapshotIdMatch {
                r#ref: MAIN_BRANCH.to_string(),
                snapshot_id: parent_id,
            },
        ])
        .updates(vec![
            TableUpdate::AddSnapshot { snapshot },
            TableUpdate::SetSnapshotRef {
                ref_name: MAIN_BRANCH.to_string(),
                reference: SnapshotReference::new(
                    out.snapshot_id,
                    SnapshotRetention::branch(None, None, None),
                ),
            },
        ])
        .build();
    Ok((catalog.update_table(commit).await?, stats))
}

struct ManifestOutput<'a> {
    table: &'a Table,
    snapshot_id: i64,
    commit: Uuid,
    counter: u32,
}

impl ManifestOutput<'_> {
    fn writer(&mut self) -> Result<ManifestWriter> {
        let metadata = self.table.metadata();
        let path = format!(
            "{}/metadata/{}-m{}.avro",
            metadata.location().trim_end_matches('/'),
            self.commit,
            self.counter
        );
        self.counter += 1;
        let builder = ManifestWriterBuilder::new(
            self.table.file_io().new_output(path)?,
            Some(self.snapshot_id),
            metadata.current_schema().clone(),
            metadata.default_partition_spec().as_ref().clone(),
        );
        Ok(match metadata.format_version() {
            FormatVersion::V1 => builder.build_v1(),
            _ => builder.build_v2_data(),
        })
    }
}

fn unique_snapshot_id(table: &Table) -> i64 {
    loop {
        let (a, b) = Uuid::new_v4().as_u64_pair();
        let id = ((a ^ b) & (i64::MAX as u64)) as i64;
        if id != 0 && table.metadata().snapshot_by_id(id).is_none() {
            return id;
        }
    }
}

/// The snapshot summary: the caller's properties, what this snapshot added and removed,
/// and the table totals carried forward from the parent's summary.
fn summary(
    base: &Table,
    change: &FileChange,
    removed: &[DataFile],
    operation: Operation,
) -> std::result::Result<Summary, CatalogError> {
    let metadata = base.metadata();
    let mut collector = SnapshotSummaryCollector::default();
    collector.set_partition_summary_limit(0);
    let schema = metadata.current_schema().clone();
    let spec = metadata.default_partition_spec().clone();
    for f in &change.added {
        collector.add_file(f, schema.clone(), spec.clone());
    }
    for f in removed {
        collector.remove_file(f, schema.clone(), spec.clone());
    }
    let mut properties = change.properties.clone();
    properties.extend(collector.build());
    let previous = metadata.current_snapshot().map(|s| s.summary());
    for (total, added, gone) in [
        ("total-data-files", "added-data-files", "deleted-data-files"),
        (
            "total-delete-files",
            "added-delete-files",
            "removed-delete-files",
        ),
        ("total-records", "added-records", "deleted-records"),
        ("total-files-size", "added-files-size", "removed-files-size"),
        (
            "total-position-deletes",
            "added-position-deletes",
            "removed-position-deletes",
        ),
        (
            "total-equality-deletes",
            "added-equality-deletes",
            "removed-equality-deletes",
        ),
    ] {
        let get =
            |m: &HashMap<String, String>, k: &str| -> std::result::Result<u64, CatalogError> {
                m.get(k)
                    .map(|v| {
                        v.parse::<u64>().map_err(|e| {
                            CatalogError::Corrupt(format!("snapshot summary {k}={v:?}: {e}"))
                        })
                    })
                    .transpose()
                    .map(|v| v.unwrap_or(0))
            };
        let before = match previous {
            Some(s) => get(&s.additional_properties, total)?,
            None => 0,
        };
        let value = (before + get(&properties, added)?).saturating_sub(get(&properties, gone)?);
        properties.insert(total.to_string(), value.to_string());
    }
    Ok(Summary {
        operation,
        additional_properties: properties,
    })
}
