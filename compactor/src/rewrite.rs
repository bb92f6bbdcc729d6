//! Small-file rewrite: every round adds one small Parquet file per partition it folds, so
//! the live data files of each partition are merged, in offset order, into files of about
//! `target_file_bytes`, committed as one `replace` snapshot (the same rows in other files).
//!
//! Which files merge: runs of consecutive small files (offset order) are merged when
//! `rewrite_fan_in` of similar size (same size tier, tiers a factor `rewrite_fan_in` apart)
//! are adjacent, so each row is rewritten about log(target / round file) times; and when a
//! partition still has more than `max_small_files`, its newest small files are merged too.
//!
//! Exactly once, like a round: the intent (commit id, files replaced, files written) is
//! recorded before the commit; the commit is pinned to the snapshot the plan was read from
//! and rebuilt on a newer one only while every replaced file is still live; after a crash
//! the next rewrite finishes the index move if the table holds the commit and deletes the
//! written files if not. Replaced files stay until no retained snapshot lists them (see
//! [`crate::janitor`]), so time travel and consumers mid-read keep working.

use std::collections::{BTreeMap, HashMap};

use futures::TryStreamExt;
use iceberg::spec::{DataFile, Literal, PrimitiveLiteral};
use iceberg::table::Table;
use iceberg::writer::IcebergWriter;
use icestream_catalog::commit::FileChange;
use icestream_catalog::table::{
    committed_offsets, current_offsets_properties, has_commit, table_ident, FIELD_OFFSET,
    SUMMARY_COMMIT_ID,
};
use icestream_storage::meta::{RewriteGroup, RewriteIntent, RoundFile, TopicMeta};
use parquet::arrow::async_reader::{ParquetObjectReader, ParquetRecordBatchStreamBuilder};

use crate::round::{round_file, RoundContext, TableWriter};
use crate::{failpoint, metrics, CompactError, CompactorConfig};

/// Files below this size are all in the smallest size tier.
const TIER_UNIT_BYTES: u64 = 64 * 1024;

/// What a rewrite did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RewriteReport {
    pub groups: usize,
    pub files_in: usize,
    pub files_out: usize,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub rows: u64,
    pub resolved_intent: bool,
    /// Live data files and manifests of the table after the rewrite.
    pub data_files: usize,
    pub manifests: usize,
}

/// A live data file of the current snapshot.
#[derive(Debug, Clone)]
pub struct LiveFile {
    pub partition: i32,
    pub path: String,
    pub bytes: u64,
    pub rows: u64,
    pub first_offset: i64,
    pub last_offset: i64,
}

/// The live data files of `table`'s current snapshot, and how many manifests list them.
pub async fn live_files(table: &Table) -> Result<(Vec<LiveFile>, usize), CompactError> {
    let Some(snapshot) = table.metadata().current_snapshot() else {
        return Ok((Vec::new(), 0));
    };
    let list = table.manifest_list_reader(snapshot).load().await?;
    let manifests = list.entries().len();
    let mut files = Vec::new();
    for m in list.entries() {
        let manifest = m.load_manifest(table.file_io()).await?;
        for e in manifest.entries().iter().filter(|e| e.is_alive()) {
            let f = e.data_file();
            let partition = match f.partition().fields().first() {
                Some(Some(Literal::Primitive(PrimitiveLiteral::Int(p)))) => *p,
                _ => continue,
            };
            let bound = |m: &HashMap<i32, iceberg::spec::Datum>| match m
                .get(&FIELD_OFFSET)
                .map(|d| d.literal())
            {
                Some(PrimitiveLiteral::Long(v)) => Some(*v),
                _ => None,
            };
            let (Some(first_offset), Some(last_offset)) =
                (bound(f.lower_bounds()), bound(f.upper_bounds()))
            else {
                continue;
            };
            files.push(LiveFile {
                partition,
                path: f.file_path().to_string(),
                bytes: f.file_size_in_bytes(),
                rows: f.record_count(),
                first_offset,
                last_offset,
            });
        }
    }
    Ok((files, manifests))
}

fn tier(bytes: u64, fan_in: u64) -> u32 {
    let mut t = 0;
    let mut limit = TIER_UNIT_BYTES;
    while bytes >= limit && t < 32 {
        limit = limit.saturating_mul(fan_in.max(2));
        t += 1;
    }
    t
}

/// Splits consecutive files into runs of at most `target` bytes (a file larger than that is
/// a run by itself); runs of one file are dropped.
fn pack(files: &[LiveFile], target: u64) -> Vec<Vec<LiveFile>> {
    let mut bins: Vec<Vec<LiveFile>> = Vec::new();
    let mut bytes = 0;
    for f in files {
        match bins.last_mut() {
            Some(bin) if bytes + f.bytes <= target => {
                bytes += f.bytes;
                bin.push(f.clone());
            }
            _ => {
                bytes = f.bytes;
                bins.push(vec![f.clone()]);
            }
        }
    }
    bins.retain(|b| b.len() > 1);
    bins
}

/// The merges one partition needs: runs of consecutive files (offset order), each to be
/// rewritten into files of about the target size. `files` are one partition's live files.
pub fn plan_partition(mut files: Vec<LiveFile>, config: &CompactorConfig) -> Vec<Vec<LiveFile>> {
    files.sort_by_key(|f| f.first_offset);
    let target = config.target_file_bytes as u64;
    let small_limit = target / 4 * 3;
    let fan_in = config.rewrite_fan_in.max(2);
    let is_small = |f: &LiveFile| f.bytes < small_limit;
    let mut planned = vec![false; files.len()];
    let mut bins: Vec<Vec<LiveFile>> = Vec::new();
    // Plans the runs of `files[range]`; returns how many files fewer there will be.
    let take =
        |range: std::ops::Range<usize>, planned: &mut Vec<bool>, bins: &mut Vec<Vec<LiveFile>>| {
            let mut fewer = 0;
            for bin in pack(&files[range.clone()], target) {
                for f in &bin {
                    if let Some(i) = files[range.clone()].iter().position(|x| x.path == f.path) {
                        planned[i + range.start] = true;
                    }
                }
                fewer += bin.len() - 1;
                bins.push(bin);
            }
            fewer
        };
    // Tiered merges within runs of small files.
    let mut i = 0;
    while i < files.len() {
        if !is_small(&files[i]) {
            i += 1;
            continue;
        }
        let t = tier(files[i].bytes, fan_in as u64);
        let mut j = i;
        while j < files.len() && is_small(&files[j]) && tier(files[j].bytes, fan_in as u64) == t {
            j += 1;
        }
        if j - i >= fan_in {
            take(i..j, &mut planned, &mut bins);
        }
        i = j;
    }
    // Cap: merge the newest unplanned small files while too many would stay.
    let small = files.iter().filter(|f| is_small(f)).count();
    let merged_away: usize = bins.iter().map(|b| b.len() - 1).sum();
    let mut excess = (small - merged_away).saturating_sub(config.max_small_files);
    let mut end = files.len();
    while excess > 0 && end > 0 {
        // The newest maximal run of unplanned small files ending at or before `end`.
        while end > 0 && (planned[end - 1] || !is_small(&files[end - 1])) {
            end -= 1;
        }
        let mut start = end;
        while start > 0 && !planned[start - 1] && is_small(&files[start - 1]) {
            start -= 1;
        }
        if end - start >= 2 {
            let reduced = take(start..end, &mut planned, &mut bins);
            excess = excess.saturating_sub(reduced);
        }
        end = start;
    }
    bins.sort_by_key(|b| b.first().map(|f| f.first_offset).unwrap_or(0));
    bins
}

impl RoundContext<'_> {
    /// Finishes a rewrite a crash interrupted.
    pub async fn resolve_rewrite(
        &self,
        topic: &TopicMeta,
        table: &Table,
    ) -> Result<bool, CompactError> {
        let Some(intent) = self.meta.rewrite_intent(topic.id).await? else {
            return Ok(false);
        };
        if has_commit(table, &intent.commit_id) {
            tracing::info!(topic = %topic.name, commit = %intent.commit_id, "rewrite: finishing the index move of a committed rewrite");
            self.swap_rewritten(topic, &intent.groups).await?;
        } else {
            tracing::info!(topic = %topic.name, commit = %intent.commit_id, "rewrite: discarding the files of a rewrite that never committed");
            let added: Vec<RoundFile> =
                intent.groups.iter().flat_map(|g| g.added.clone()).collect();
            self.delete_files(&added).await;
            self.meta.clear_rewrite_intent(topic.id).await?;
        }
        Ok(true)
    }

    async fn swap_rewritten(
        &self,
        topic: &TopicMeta,
        groups: &[RewriteGroup],
    ) -> Result<(), CompactError> {
        let created = self.meta.swap_rewritten(topic.id, groups).await?;
        failpoint("compactor.rewrite.after_swap");
        self.notify_swapped(topic, created);
        Ok(())
    }

    /// Rewrites the small files of `topic`'s table that the policy picks, within
    /// `max_round_bytes` of input.
    pub async fn rewrite(&self, topic: &TopicMeta) -> Result<RewriteReport, CompactError> {
        let mut report = RewriteReport::default();
        let ident = table_ident(&self.config.namespace, &topic.name)?;
        if !self.catalog.table_exists(&ident).await? {
            return Ok(report);
        }
        let table = self.catalog.load_table(&ident).await?;
        if self.resolve_rewrite(topic, &table).await? {
            report.resolved_intent = true;
        }
        let table = self.catalog.load_table(&ident).await?;
        let (mut files, manifests) = live_files(&table).await?;
        // A round that committed but has not moved the index to its files yet (its intent,
        // read after the table, is still there): its files are not rewritten before the
        // index names them. They count as large, so no run of small files spans them.
        if let Some(round) = self.meta.round_intent(topic.id).await? {
            for f in files.iter_mut() {
                if round.files.iter().any(|r| r.file == f.path) {
                    f.bytes = u64::MAX / 4;
                }
            }
        }
        report.data_files = files.len();
        report.manifests = manifests;
        let mut by_partition: BTreeMap<i32, Vec<LiveFile>> = BTreeMap::new();
        for f in files {
            by_partition.entry(f.partition).or_default().push(f);
        }
        let mut budget = self.config.max_round_bytes as u64;
        let mut plan: Vec<(i32, Vec<LiveFile>)> = Vec::new();
        'plan: for (p, files) in by_partition {
            for bin in plan_partition(files, self.config) {
                let bytes: u64 = bin.iter().map(|f| f.bytes).sum();
                if !plan.is_empty() && bytes > budget {
                    break 'plan;
                }
                budget = budget.saturating_sub(bytes);
                plan.push((p, bin));
            }
        }
        if plan.is_empty() {
            return Ok(report);
        }

        let commit_id = uuid::Uuid::now_v7().to_string();
        let (data_files, mut groups) = self.write_rewrite(&table, topic, &plan, &commit_id).await?;
        let committed = committed_offsets(&table).await?;
        for g in &mut groups {
            g.until = committed.get(&g.partition).copied();
        }
        failpoint("compactor.rewrite.after_write");
        let intent = RewriteIntent {
            v: 1,
            commit_id: commit_id.clone(),
            groups: groups.clone(),
        };
        self.meta.set_rewrite_intent(topic.id, &intent).await?;
        let removed: Vec<String> = plan
            .iter()
            .flat_map(|(_, bin)| bin.iter().map(|f| f.path.clone()))
            .collect();
        let outcome = crate::commit::commit_change(
            self.catalog.as_ref(),
            &table,
            &commit_id,
            "compactor.rewrite.after_commit",
            &self.config.manifest_merge,
            |base| {
                let mut properties = current_offsets_properties(base);
                properties.insert(SUMMARY_COMMIT_ID.to_string(), commit_id.clone());
                properties.insert("icestream.operation".to_string(), "rewrite".to_string());
                FileChange {
                    added: data_files.clone(),
                    removed: removed.clone(),
                    properties,
                }
            },
            // Rounds only add files: any newer table is fine as long as every replaced
            // file is still live, which the commit itself checks.
            |_| async { Ok(true) },
        )
        .await;
        let added: Vec<RoundFile> = groups.iter().flat_map(|g| g.added.clone()).collect();
        let stats = match outcome {
            Ok((_, stats)) => stats,
            Err(error) => {
                tracing::warn!(topic = %topic.name, commit = %commit_id, error = %error, "rewrite commit did not take effect; it will be planned again");
                self.delete_files(&added).await;
                self.meta.clear_rewrite_intent(topic.id).await?;
                return Err(error);
            }
        };
        self.swap_rewritten(topic, &groups).await?;
        report.groups = plan.len();
        report.files_in = removed.len();
        report.files_out = added.len();
        report.bytes_in = plan
            .iter()
            .flat_map(|(_, b)| b.iter().map(|f| f.bytes))
            .sum();
        report.bytes_out = data_files.iter().map(|f| f.file_size_in_bytes()).sum();
        report.rows = added.iter().map(|f| u64::from(f.rows)).sum();
        report.data_files = report.data_files + added.len() - removed.len();
        report.manifests = stats.manifests;
        metrics::inc(&metrics::REWRITES);
        metrics::add(&metrics::REWRITE_BYTES, report.bytes_in);
        Ok(report)
    }

    /// Streams each run's files, in offset order, through a rolling Parquet writer.
    async fn write_rewrite(
        &self,
        table: &Table,
        topic: &TopicMeta,
        plan: &[(i32, Vec<LiveFile>)],
        commit_id: &str,
    ) -> Result<(Vec<DataFile>, Vec<RewriteGroup>), CompactError> {
        let out = TableWriter::new(
            table,
            self.config,
            format!("{}-{}-r", &topic.id.simple().to_string()[..8], commit_id),
        )?;
        let mut data_files = Vec::new();
        let mut groups = Vec::new();
        for (p, bin) in plan {
            let mut writer = out.partition(*p).await?;
            let mut rows = 0u64;
            let mut next = i64::MIN;
            for f in bin {
                let (store, path) = self.objects.resolve_url(&f.path).ok_or_else(|| {
                    CompactError::Corrupt(format!(
                        "data file {} is outside the object store",
                        f.path
                    ))
                })?;
                let reader = ParquetObjectReader::new(store, path);
                let mut stream = ParquetRecordBatchStreamBuilder::new(reader)
                    .await?
                    .with_batch_size(8192)
                    .build()?;
                while let Some(batch) = stream.try_next().await? {
                    let batch = crate::arrow::conform(&batch, &out.arrow_schema)?;
                    check_offsets(&batch, &mut next, &f.path)?;
                    rows += batch.num_rows() as u64;
                    writer.write(batch).await?;
                }
            }
            let expected: u64 = bin.iter().map(|f| f.rows).sum();
            if rows != expected {
                return Err(CompactError::Corrupt(format!(
                    "partition {p}: the files to rewrite hold {rows} rows, their manifests say {expected}"
                )));
            }
            let mut added = Vec::new();
            for file in writer.close().await? {
                added.push(round_file(*p, &file, -1)?);
                data_files.push(file);
            }
            groups.push(RewriteGroup {
                partition: *p,
                removed: bin.iter().map(|f| f.path.clone()).collect(),
                added,
                until: None,
            });
        }
        Ok((data_files, groups))
    }
}

/// Offsets must rise strictly through a run being rewritten.
fn check_offsets(
    batch: &arrow_array::RecordBatch,
    next: &mut i64,
    file: &str,
) -> Result<(), CompactError> {
    use arrow_array::cast::AsArray;
    let offsets = batch
        .column_by_name("offset")
        .and_then(|c| c.as_primitive_opt::<arrow_array::types::Int64Type>())
        .ok_or_else(|| CompactError::Corrupt(format!("{file}: no offset column")))?;
    for o in offsets.values().iter() {
        if *o <= *next && *next != i64::MIN {
            return Err(CompactError::Corrupt(format!(
                "{file}: offset {o} after {next} in a run being rewritten"
            )));
        }
        *next = *o;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(sizes: &[u64]) -> Vec<LiveFile> {
        let mut offset = 0;
        sizes
            .iter()
            .enumerate()
            .map(|(i, &bytes)| {
                let f = LiveFile {
                    partition: 0,
                    path: format!("f{i}"),
                    bytes,
                    rows: 10,
                    first_offset: offset,
                    last_offset: offset + 9,
                };
                offset += 10;
                f
            })
            .collect()
    }

    fn paths(bins: &[Vec<LiveFile>]) -> Vec<Vec<String>> {
        bins.iter()
            .map(|b| b.iter().map(|f| f.path.clone()).collect())
            .collect()
    }

    #[test]
    fn same_tier_files_merge_in_fours_and_the_rest_wait() {
        let config = CompactorConfig::default();
        // Three small files: nothing to do yet.
        assert!(plan_partition(files(&[1000; 3]), &config).is_empty());
        // Four of one tier: merged into one.
        let bins = plan_partition(files(&[1000; 4]), &config);
        assert_eq!(paths(&bins), vec![vec!["f0", "f1", "f2", "f3"]]);
        // A large file is never rewritten, and runs do not span it.
        let big = config.target_file_bytes as u64;
        let bins = plan_partition(files(&[1000, 1000, big, 1000, 1000, 1000, 1000]), &config);
        assert_eq!(paths(&bins), vec![vec!["f3", "f4", "f5", "f6"]]);
        // Files of different tiers wait for their peers.
        let bins = plan_partition(files(&[4 << 20, 1000, 1000, 1000]), &config);
        assert!(bins.is_empty());
    }

    #[test]
    fn too_many_small_files_merge_newest_first() {
        let config = CompactorConfig {
            max_small_files: 1,
            ..CompactorConfig::default()
        };
        let big = config.target_file_bytes as u64;
        let bins = plan_partition(files(&[1000, 1000, big, 1000, 1000]), &config);
        assert_eq!(paths(&bins), vec![vec!["f0", "f1"], vec!["f3", "f4"]]);
        // Unsorted input is planned in offset order.
        let mut shuffled = files(&[1000, 1000, 1000]);
        shuffled.reverse();
        let bins = plan_partition(shuffled, &config);
        assert_eq!(paths(&bins), vec![vec!["f0", "f1", "f2"]]);
    }

    #[test]
    fn runs_pack_up_to_the_target_size() {
        let config = CompactorConfig {
            target_file_bytes: 10_000,
            ..CompactorConfig::default()
        };
        // Eight files of 3,000 bytes (tier 0): bins of at most 10,000 bytes.
        let bins = plan_partition(files(&[3000; 8]), &config);
        assert_eq!(
            paths(&bins),
            vec![
                vec!["f0", "f1", "f2"],
                vec!["f3", "f4", "f5"],
                vec!["f6", "f7"]
            ]
        );
    }
}
