//! One compaction round of one topic: WAL chunks past the table's committed offsets are
//! decoded, written as Parquet (one file per partition, rolling at a size limit), and
//! committed as ONE snapshot carrying the full per-partition next-offset map; then the
//! offset index is swapped to the new files.
//!
//! Exactly once: the round's intent (commit id and files) is recorded in the metadata
//! store before the snapshot commit, and the commit is pinned to the snapshot the offsets
//! were read from. After a crash anywhere, the next round resolves the intent: the index is
//! swapped if the table has the round's snapshot, the files are deleted if not.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures::TryStreamExt;
use iceberg::arrow::schema_to_arrow_schema;
use iceberg::spec::{DataFile, DataFileFormat, Literal, PartitionKey, PrimitiveLiteral, Struct};
use iceberg::table::Table;
use iceberg::writer::base_writer::data_file_writer::DataFileWriterBuilder;
use iceberg::writer::file_writer::location_generator::{
    DefaultFileNameGenerator, DefaultLocationGenerator,
};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::{IcebergWriter, IcebergWriterBuilder};
use iceberg::Catalog;
use icestream_catalog::commit::FileChange;
use icestream_catalog::table::{
    committed_offsets, ensure_table, has_commit, offsets_property, FIELD_OFFSET, FIELD_TIMESTAMP,
    SUMMARY_COMMIT_ID,
};
use icestream_storage::batch::{batches, control_type, MARKER_COMMIT};
use icestream_storage::meta::{
    AbortedTxn, IndexEntry, KeptRun, Location, RoundFile, RoundIntent, TopicMeta,
};
use icestream_storage::records::{decode_batch, Row};
use icestream_storage::segment::segment_key;
use icestream_storage::{MetaStore, Objects};
use object_store::ObjectStoreExt;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::arrow::rows_to_batch;
use crate::typed::{latest_id, typed_schema, ValueDecoder};
use crate::{failpoint, CompactError, CompactorConfig, SwapListener};

/// The WAL bytes of partitions read together, at most (a larger partition is read alone).
const READ_GROUP_BYTES: u64 = 32 << 20;
/// Ranges of a segment this close are read as one (the bytes between are read and dropped).
const READ_GAP_BYTES: u64 = 1 << 20;

fn entry_bytes(entries: &[IndexEntry]) -> u64 {
    entries.iter().map(IndexEntry::size_bytes).sum()
}

/// What a round did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RoundReport {
    pub rows: u64,
    pub bytes: u64,
    pub files: usize,
    pub resolved_intent: bool,
    /// Offsets acknowledged but not in the table after this round.
    pub lag: i64,
}

pub struct RoundContext<'a> {
    pub meta: &'a MetaStore,
    pub objects: &'a Objects,
    pub catalog: &'a Arc<dyn Catalog>,
    pub config: &'a CompactorConfig,
    pub listener: Option<&'a Arc<dyn SwapListener>>,
}

impl RoundContext<'_> {
    /// Finishes a round a crash interrupted.
    pub async fn resolve_intent(
        &self,
        topic: &TopicMeta,
        table: &Table,
    ) -> Result<bool, CompactError> {
        let Some(intent) = self.meta.round_intent(topic.id).await? else {
            return Ok(false);
        };
        if has_commit(table, &intent.commit_id) {
            tracing::info!(topic = %topic.name, commit = %intent.commit_id, "compaction: finishing the index swap of a committed round");
            self.swap(topic, &intent.files, &intent.kept).await?;
        } else {
            tracing::info!(topic = %topic.name, commit = %intent.commit_id, "compaction: discarding the files of a round that never committed");
            self.delete_files(&intent.files).await;
            self.meta.clear_round_intent(topic.id).await?;
        }
        Ok(true)
    }

    async fn swap(
        &self,
        topic: &TopicMeta,
        files: &[RoundFile],
        kept: &[KeptRun],
    ) -> Result<(), CompactError> {
        let created = self.meta.swap_to_table(topic.id, files, kept).await?;
        failpoint("compactor.after_swap");
        self.notify_swapped(topic, created);
        Ok(())
    }

    /// Tells the listener (the broker's read side) about new index entries.
    pub(crate) fn notify_swapped(&self, topic: &TopicMeta, created: Vec<(i32, IndexEntry)>) {
        if let Some(l) = self.listener {
            let mut by_partition: BTreeMap<i32, Vec<IndexEntry>> = BTreeMap::new();
            for (p, e) in created {
                by_partition.entry(p).or_default().push(e);
            }
            for (p, entries) in by_partition {
                l.on_swap(topic.id, p, &entries);
            }
        }
    }

    pub(crate) async fn delete_files(&self, files: &[RoundFile]) {
        for f in files {
            if let Some((store, path)) = self.objects.resolve_url(&f.file) {
                if let Err(e) = store.delete(&path).await {
                    tracing::warn!(file = %f.file, error = %e, "deleting an uncommitted data file");
                }
            }
        }
    }

    /// Runs one round for `topic`.
    pub async fn run(&self, topic: &TopicMeta) -> Result<RoundReport, CompactError> {
        let mut report = RoundReport::default();
        let table = ensure_table(
            self.catalog.as_ref(),
            &self.config.namespace,
            &topic.name,
            topic.id,
        )
        .await?;
        if self.resolve_intent(topic, &table).await? {
            report.resolved_intent = true;
        }
        // Reload: resolving may have changed nothing in the table, but be exact.
        let table = self.catalog.load_table(table.identifier()).await?;
        let table = self.follow_value_schema(topic, table).await?;
        let committed = committed_offsets(&table).await?;

        // Choose whole index entries per partition, within the round's byte budget.
        let mut budget = self.config.max_round_bytes as u64;
        let mut plan: Vec<(i32, Vec<IndexEntry>)> = Vec::new();
        let mut lag = 0i64;
        for p in 0..topic.partitions {
            let Some(state) = self.meta.partition_state(topic.id, p).await? else {
                continue;
            };
            let start = committed.get(&p).copied().unwrap_or(0).max(0);
            lag += (state.high_watermark - start).max(0);
            // Only decided offsets are folded: the table never holds a record of a
            // transaction that may still abort.
            let stable = state.last_stable_offset();
            if start >= stable || budget == 0 {
                continue;
            }
            let entries = self.meta.index_entries(topic.id, p, start, 4096).await?;
            let mut chosen = Vec::new();
            for e in entries {
                if e.last_offset >= stable {
                    break;
                }
                if e.base_offset < start || !matches!(e.location, Location::Wal { .. }) {
                    // Already compacted, or an entry a retention trim cut into.
                    continue;
                }
                if !chosen.is_empty() && e.size_bytes() > budget {
                    break;
                }
                budget = budget.saturating_sub(e.size_bytes());
                chosen.push(e);
            }
            if !chosen.is_empty() {
                plan.push((p, chosen));
            }
        }
        if plan.is_empty() {
            report.lag = lag;
            return Ok(report);
        }

        failpoint("compactor.before_write");
        let commit_id = uuid::Uuid::now_v7().to_string();
        let (data_files, round_files, kept, rows) =
            self.write_files(&table, topic, &plan, &commit_id).await?;
        failpoint("compactor.after_write");

        let mut next = committed.clone();
        for (p, entries) in &plan {
            if let Some(last) = entries.last() {
                next.insert(*p, last.next_offset());
            }
        }
        let intent = RoundIntent {
            v: 1,
            commit_id: commit_id.clone(),
            files: round_files.clone(),
            kept: kept.clone(),
        };
        self.meta.set_round_intent(topic.id, &intent).await?;
        let properties: HashMap<String, String> = [
            offsets_property(&table, &commit_id, &next).await?,
            (SUMMARY_COMMIT_ID.to_string(), commit_id.clone()),
        ]
        .into_iter()
        .collect();
        // A rewrite committed meanwhile changes files, not offsets: the round is rebuilt on
        // top of it. Any other change of the offsets (another compactor) fails the round.
        let outcome = crate::commit::commit_change(
            self.catalog.as_ref(),
            &table,
            &commit_id,
            "compactor.after_commit",
            &self.config.manifest_merge,
            |_| FileChange {
                added: data_files.clone(),
                removed: Vec::new(),
                properties: properties.clone(),
            },
            |current| {
                let committed = &committed;
                async move { Ok(committed_offsets(&current).await? == *committed) }
            },
        )
        .await;
        // A commit is done when the catalog shows it, whatever the call returned: a lost
        // response fails a commit that happened, and the SQL catalog reports success for a
        // transaction whose COMMIT failed (SQLite busy) and was rolled back. Nothing moves
        // (index swap, next offsets) until a fresh load of the table holds the snapshot.
        if let Err(error) = outcome {
            tracing::warn!(topic = %topic.name, commit = %commit_id, error = %error, "compaction commit did not take effect; the round will be retried");
            self.delete_files(&round_files).await;
            self.meta.clear_round_intent(topic.id).await?;
            return Err(error);
        }
        self.swap(topic, &round_files, &kept).await?;
        report.rows = rows;
        report.bytes = plan
            .iter()
            .flat_map(|(_, es)| es.iter().map(IndexEntry::size_bytes))
            .sum();
        report.files = round_files.len();
        report.lag = (lag - rows as i64).max(0);
        Ok(report)
    }

    /// Evolves the table to the latest schema of the topic's value subject, if the
    /// registry has a newer one than the table's columns came from.
    async fn follow_value_schema(
        &self,
        topic: &TopicMeta,
        table: Table,
    ) -> Result<Table, CompactError> {
        let Some(id) = latest_id(self.meta, &format!("{}-value", topic.name)).await? else {
            return Ok(table);
        };
        if value_schema_id(&table) == Some(id) {
            return Ok(table);
        }
        let Some(typed) = typed_schema(self.meta, id).await? else {
            return Ok(table);
        };
        let metadata = table.metadata();
        let Some(schema) = icestream_catalog::typed::typed_schema(
            metadata.current_schema(),
            metadata.last_column_id(),
            &typed.avro,
        )?
        else {
            return Ok(table);
        };
        let table =
            icestream_catalog::typed::evolve(self.catalog.as_ref(), &table, schema, id).await?;
        tracing::info!(topic = %topic.name, schema_id = id, "compaction: the table follows the value schema");
        Ok(table)
    }

    /// Reads and decodes the planned entries and writes one rolling Parquet writer per
    /// partition.
    async fn write_files(
        &self,
        table: &Table,
        topic: &TopicMeta,
        plan: &[(i32, Vec<IndexEntry>)],
        commit_id: &str,
    ) -> Result<(Vec<DataFile>, Vec<RoundFile>, Vec<KeptRun>, u64), CompactError> {
        let out = TableWriter::new(
            table,
            self.config,
            format!("{}-{}", &topic.id.simple().to_string()[..8], commit_id),
        )?;
        let mut data_files = Vec::new();
        let mut round_files = Vec::new();
        let mut all_kept = Vec::new();
        let mut total_rows = 0u64;
        // Partitions are read in groups of at most READ_GROUP_BYTES, each WAL segment once
        // per group (one ranged GET for the chunks of all the group's partitions in it):
        // a segment holds a chunk of every partition written during its interval, and
        // reading partition by partition cost a GET (an open and a read on the local
        // store) per partition and segment.
        let mut fetched: std::collections::VecDeque<Vec<bytes::Bytes>> = Default::default();
        let mut group_end = 0;
        for (n, (p, entries)) in plan.iter().enumerate() {
            if n == group_end {
                let mut bytes = 0u64;
                let start = n;
                while group_end < plan.len()
                    && (group_end == start
                        || bytes + entry_bytes(&plan[group_end].1) <= READ_GROUP_BYTES)
                {
                    bytes += entry_bytes(&plan[group_end].1);
                    group_end += 1;
                }
                fetched = self.read_wal(&plan[start..group_end]).await?.into();
            }
            let data = fetched.pop_front().unwrap_or_default();
            let (rows, kept) = self.read_rows(topic.id, *p, entries, data).await?;
            all_kept.extend(kept);
            if rows.is_empty() {
                continue;
            }
            // The files' index entries tile the round's offsets (around the kept runs):
            // commit markers, which no consumer needs, are covered by the file entries.
            let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
                continue;
            };
            let range = (first.base_offset, last.last_offset);
            total_rows += rows.len() as u64;
            let max_timestamp = entries.iter().map(|e| e.max_timestamp).max().unwrap_or(-1);
            let decoder = match value_schema_id(table) {
                Some(id) => ValueDecoder::for_rows(self.meta, id, &rows).await?,
                None => None,
            };
            let batch = {
                let schema = out.arrow_schema.clone();
                let p = *p;
                let (batch, undecodable) = tokio::task::spawn_blocking(move || {
                    rows_to_batch(&schema, p, &rows, decoder.as_ref())
                })
                .await
                .map_err(|e| CompactError::Schema(format!("batch task: {e}")))??;
                if undecodable > 0 {
                    crate::metrics::add(&crate::metrics::UNDECODABLE_VALUES, undecodable);
                    tracing::debug!(topic = %topic.name, partition = p, undecodable, "compaction: values that did not decode with the registered schemas");
                }
                batch
            };
            let mut writer = out.partition(*p).await?;
            writer.write(batch).await?;
            let mut files = Vec::new();
            for file in writer.close().await? {
                files.push(round_file(*p, &file, max_timestamp)?);
                data_files.push(file);
            }
            round_files.extend(tile(files, range));
        }
        Ok((data_files, round_files, all_kept, total_rows))
    }

    /// The bytes of the WAL entries of `plan`'s partitions, per partition and in entry order
    /// (empty for entries not in the WAL): one ranged GET per segment, its ranges merged
    /// across gaps of at most READ_GAP_BYTES (other topics' chunks).
    async fn read_wal(
        &self,
        plan: &[(i32, Vec<IndexEntry>)],
    ) -> Result<Vec<Vec<bytes::Bytes>>, CompactError> {
        // (partition index, entry index, range) per segment
        type Wanted = Vec<(usize, usize, std::ops::Range<u64>)>;
        let mut by_segment: BTreeMap<uuid::Uuid, Wanted> = BTreeMap::new();
        for (g, (_, entries)) in plan.iter().enumerate() {
            for (i, e) in entries.iter().enumerate() {
                if let Location::Wal {
                    segment,
                    position,
                    length,
                } = e.location
                {
                    by_segment.entry(segment).or_default().push((
                        g,
                        i,
                        position..position + u64::from(length),
                    ));
                }
            }
        }
        let fetches = by_segment
            .into_iter()
            .map(|(segment, mut wanted)| async move {
                wanted.sort_by_key(|(_, _, r)| r.start);
                let mut spans: Vec<std::ops::Range<u64>> = Vec::new();
                for (_, _, r) in &wanted {
                    match spans.last_mut() {
                        Some(last) if r.start <= last.end.saturating_add(READ_GAP_BYTES) => {
                            last.end = last.end.max(r.end);
                        }
                        _ => spans.push(r.clone()),
                    }
                }
                let key = segment_key(segment);
                let got = self
                    .objects
                    .store
                    .get_ranges(&self.objects.path(&key), &spans)
                    .await?;
                let mut out = Vec::with_capacity(wanted.len());
                let mut span = 0;
                for (g, i, r) in wanted {
                    while spans.get(span).is_some_and(|s| s.end < r.end) {
                        span += 1;
                    }
                    let (Some(s), Some(bytes)) = (spans.get(span), got.get(span)) else {
                        return Err(CompactError::Corrupt(format!("{key}: no bytes for {r:?}")));
                    };
                    let (from, to) = ((r.start - s.start) as usize, (r.end - s.start) as usize);
                    if to > bytes.len() {
                        return Err(CompactError::Corrupt(format!(
                            "{key}: {} bytes read for {s:?}",
                            bytes.len()
                        )));
                    }
                    out.push((g, i, bytes.slice(from..to)));
                }
                Ok::<_, CompactError>(out)
            });
        let results: Vec<Vec<(usize, usize, bytes::Bytes)>> = futures::stream::iter(fetches)
            .buffer_unordered(8)
            .try_collect()
            .await?;
        let mut data: Vec<Vec<bytes::Bytes>> = plan
            .iter()
            .map(|(_, entries)| vec![bytes::Bytes::new(); entries.len()])
            .collect();
        for (g, i, b) in results.into_iter().flatten() {
            data[g][i] = b;
        }
        Ok(data)
    }

    /// The records of WAL index entries of a partition (`data`: their bytes), in offset
    /// order, without control batches and without the records of aborted transactions;
    /// those batches (and any that cannot be decoded) are returned as runs that stay in the
    /// WAL.
    async fn read_rows(
        &self,
        topic_id: uuid::Uuid,
        partition: i32,
        entries: &[IndexEntry],
        data: Vec<bytes::Bytes>,
    ) -> Result<(Vec<Row>, Vec<KeptRun>), CompactError> {
        let aborted = match (entries.first(), entries.last()) {
            (Some(first), Some(last)) => {
                self.meta
                    .aborted_txns(topic_id, partition, first.base_offset, last.last_offset, 0)
                    .await?
            }
            _ => Vec::new(),
        };
        if data.len() != entries.len() {
            return Err(CompactError::Corrupt(format!(
                "partition {partition}: {} entries, {} read",
                entries.len(),
                data.len()
            )));
        }
        let entries = entries.to_vec();
        tokio::task::spawn_blocking(move || {
            let mut rows = Vec::new();
            let mut kept = Vec::new();
            let mut commits = Vec::new();
            for (e, bytes) in entries.iter().zip(&data) {
                let out = entry_rows(e, bytes, &aborted);
                rows.extend(out.rows);
                kept.extend(out.kept);
                commits.extend(out.commit_markers);
            }
            if rows.is_empty() {
                // No file to cover the commit markers: they stay in the WAL too.
                kept.extend(commits);
                kept.sort_by_key(|k| k.base_offset);
            }
            for k in &mut kept {
                k.partition = partition;
            }
            Ok((rows, kept))
        })
        .await
        .map_err(|e| CompactError::Corrupt(format!("decode task: {e}")))?
    }
}

use futures::StreamExt as _;

type Builder =
    DataFileWriterBuilder<ParquetWriterBuilder, DefaultLocationGenerator, DefaultFileNameGenerator>;

/// Writes a table's data files: zstd Parquet, rolling at `target_file_bytes`, named
/// `<prefix>-<n>`, one writer per Kafka partition.
pub(crate) struct TableWriter {
    builder: Builder,
    schema: iceberg::spec::SchemaRef,
    spec: iceberg::spec::PartitionSpec,
    /// The table schema as Arrow (field ids carried): batches written must have it.
    pub(crate) arrow_schema: arrow_schema::SchemaRef,
}

impl TableWriter {
    pub(crate) fn new(
        table: &Table,
        config: &CompactorConfig,
        prefix: String,
    ) -> Result<Self, CompactError> {
        let metadata = table.metadata();
        let schema = metadata.current_schema().clone();
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .set_max_row_group_row_count(Some(config.row_group_rows))
            .build();
        let builder = DataFileWriterBuilder::new(RollingFileWriterBuilder::new(
            ParquetWriterBuilder::new(props, schema.clone()),
            config.target_file_bytes,
            table.file_io().clone(),
            DefaultLocationGenerator::new(metadata)?,
            DefaultFileNameGenerator::new(prefix, None, DataFileFormat::Parquet),
        ));
        Ok(Self {
            builder,
            arrow_schema: Arc::new(schema_to_arrow_schema(&schema)?),
            spec: metadata.default_partition_spec().as_ref().clone(),
            schema,
        })
    }

    /// A writer of partition `p`'s files.
    pub(crate) async fn partition(
        &self,
        p: i32,
    ) -> Result<<Builder as IcebergWriterBuilder>::R, CompactError> {
        let key = PartitionKey::new(
            self.spec.clone(),
            self.schema.clone(),
            Struct::from_iter([Some(Literal::int(p))]),
        );
        Ok(self.builder.build(Some(key)).await?)
    }
}

/// What the index needs of a data file of partition `p`: its offsets (from the column
/// bounds), rows and largest timestamp (`fallback_timestamp` when it has no bound).
pub(crate) fn round_file(
    p: i32,
    file: &DataFile,
    fallback_timestamp: i64,
) -> Result<RoundFile, CompactError> {
    let bound =
        |m: &HashMap<i32, iceberg::spec::Datum>| match m.get(&FIELD_OFFSET).map(|d| d.literal()) {
            Some(PrimitiveLiteral::Long(v)) => Ok(*v),
            _ => Err(CompactError::Schema(
                "data file without offset bounds".into(),
            )),
        };
    Ok(RoundFile {
        partition: p,
        file: file.file_path().to_string(),
        first_offset: bound(file.lower_bounds())?,
        last_offset: bound(file.upper_bounds())?,
        rows: file.record_count() as u32,
        max_timestamp: max_timestamp_ms(file).unwrap_or(fallback_timestamp),
    })
}

/// The largest record timestamp (ms) of a data file, from its column bounds.
pub(crate) fn max_timestamp_ms(file: &DataFile) -> Option<i64> {
    match file
        .upper_bounds()
        .get(&FIELD_TIMESTAMP)
        .map(|d| d.literal())
    {
        Some(PrimitiveLiteral::Long(us)) => Some(us.div_euclid(1000)),
        _ => None,
    }
}

/// The rows of one WAL index entry, in offset order, and the runs of its batches that stay
/// in the WAL: control batches (transaction markers), batches of aborted transactions
/// (`aborted`, the partition's aborted ranges) and batches that cannot be decoded. Stored
/// bytes are not trusted: an undecodable batch is quarantined (counted, logged with its
/// segment and offsets, left out of the table, served from the WAL as it was stored), so
/// one bad batch never fails the round or stalls the topic; rows outside the entry's
/// offsets or out of order (a batch whose header disagreed with its records) are dropped.
/// Commit markers are returned apart: consumers need no commit marker, so the table's
/// entries cover them, unless the entry has no rows at all. Runs are returned with
/// partition 0; the caller sets it.
pub(crate) fn entry_rows(
    e: &IndexEntry,
    bytes: &bytes::Bytes,
    aborted: &[AbortedTxn],
) -> EntryRows {
    let (segment, base_position) = match e.location {
        Location::Wal {
            segment, position, ..
        } => (segment, position),
        _ => (uuid::Uuid::nil(), 0),
    };
    let quarantine = |first: i64, last: i64, reason: &dyn std::fmt::Display| {
        crate::metrics::inc(&crate::metrics::QUARANTINED);
        tracing::error!(%segment, first_offset = first, last_offset = last, error = %reason, "compaction: quarantined a batch that cannot be decoded; its offsets are left out of the table");
    };
    let mut rows: Vec<Row> = Vec::new();
    let mut runs: [Vec<KeptRun>; 2] = [Vec::new(), Vec::new()];
    const KEEP: usize = 0;
    const COMMIT: usize = 1;
    let mut keep = |to: usize, first: i64, last: i64, at: usize, len: usize, max_timestamp: i64| {
        let kept = &mut runs[to];
        let position = base_position + at as u64;
        if let Some(k) = kept.last_mut() {
            if k.last_offset + 1 == first && k.position + u64::from(k.length) == position {
                k.last_offset = last;
                k.length += len as u32;
                k.batch_count += 1;
                k.max_timestamp = k.max_timestamp.max(max_timestamp);
                return;
            }
        }
        kept.push(KeptRun {
            partition: 0,
            base_offset: first,
            last_offset: last,
            segment,
            position,
            length: len as u32,
            batch_count: 1,
            max_timestamp,
        });
    };
    let mut offset = e.base_offset;
    let mut iter = batches(bytes);
    loop {
        let at = iter.position();
        let Some(item) = iter.next() else { break };
        if offset > e.last_offset {
            quarantine(offset, offset, &"batches past the end of their index entry");
            break;
        }
        let (header, batch) = match item {
            Ok(x) => x,
            Err(err) => {
                quarantine(offset, e.last_offset, &err);
                keep(
                    KEEP,
                    offset,
                    e.last_offset,
                    at,
                    bytes.len() - at,
                    e.max_timestamp,
                );
                break;
            }
        };
        let end = offset
            .saturating_add(header.offset_span())
            .min(e.next_offset());
        if header.is_control() {
            let to = if control_type(&batch) == Some(MARKER_COMMIT) {
                COMMIT
            } else {
                KEEP
            };
            keep(to, offset, end - 1, at, batch.len(), header.max_timestamp);
            offset = end;
            continue;
        }
        if header.is_transactional() && aborted.iter().any(|a| a.covers(header.producer_id, offset))
        {
            keep(KEEP, offset, end - 1, at, batch.len(), header.max_timestamp);
            offset = end;
            continue;
        }
        // The batch CRC, checked as the bytes come back from storage, is what stands for
        // the codecs' own checksums, which decoding does not verify.
        match header
            .validate(&batch)
            .map_err(|e| e.to_string())
            .and_then(|()| decode_batch(&batch, offset).map_err(|e| e.to_string()))
        {
            Ok(decoded) => {
                let before = decoded.len();
                let mut next = offset;
                let kept_rows: Vec<Row> = decoded
                    .into_iter()
                    .filter(|r| {
                        let ok = r.offset >= next && r.offset < end;
                        if ok {
                            next = r.offset + 1;
                        }
                        ok
                    })
                    .collect();
                if kept_rows.len() != before {
                    quarantine(offset, end - 1, &"records outside their batch's offsets");
                }
                rows.extend(kept_rows);
            }
            Err(err) => {
                quarantine(offset, end - 1, &err);
                keep(KEEP, offset, end - 1, at, batch.len(), header.max_timestamp);
            }
        }
        offset = end;
    }
    let [kept, commit_markers] = runs;
    EntryRows {
        rows,
        kept,
        commit_markers,
    }
}

/// What one WAL index entry holds, as the fold sees it.
pub(crate) struct EntryRows {
    pub rows: Vec<Row>,
    /// Batches that stay in the WAL.
    pub kept: Vec<KeptRun>,
    /// Commit markers.
    pub commit_markers: Vec<KeptRun>,
}

/// Stretches the index ranges of a partition's data files (in offset order, each from its
/// first to its last row) to tile `range`: offsets without rows (commit markers, and the
/// kept runs, which the index carves out again) belong to the file before them, or to the
/// first file.
pub(crate) fn tile(mut files: Vec<RoundFile>, range: (i64, i64)) -> Vec<RoundFile> {
    files.sort_by_key(|f| f.first_offset);
    let n = files.len();
    let mut next = range.0;
    for (i, f) in files.iter_mut().enumerate() {
        f.first_offset = next;
        if i + 1 == n {
            f.last_offset = f.last_offset.max(range.1);
        }
        next = f.last_offset + 1;
    }
    files
}

/// The registry id of the value schema the table's typed columns come from.
pub(crate) fn value_schema_id(table: &Table) -> Option<i32> {
    table
        .metadata()
        .properties()
        .get(icestream_catalog::typed::PROP_VALUE_SCHEMA_ID)
        .and_then(|v| v.parse().ok())
}
