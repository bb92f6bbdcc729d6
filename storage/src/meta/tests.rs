//! Domain tests of the metadata store, run against every backend that is reachable: the
//! embedded store always, PostgreSQL when `ICESTREAM_TEST_POSTGRES_URL` is set, and
//! FoundationDB (builds with the feature) when `ICESTREAM_TEST_FDB_CLUSTER_FILE` is set.
//! Each test is a function of a fresh store and its clock; [`meta_domain_tests!`] runs the
//! list against one backend.

use std::collections::BTreeMap;
use std::sync::Arc;

use uuid::Uuid;

use super::*;
use crate::clock::ManualClock;
use crate::kv::embedded::EmbeddedKv;

const NOW: i64 = 1_700_000_000_000;

fn embedded() -> Option<(tempfile::TempDir, Arc<dyn crate::kv::KvStore>)> {
    let dir = tempfile::tempdir().expect("tempdir");
    let kv = EmbeddedKv::open(&dir.path().join("meta.redb")).expect("open");
    Some((dir, Arc::new(kv)))
}

fn batch(position: u64, span: u32, producer: Option<(i64, i16, i32)>) -> AppendBatch {
    AppendBatch {
        position,
        length: 100,
        offset_span: span,
        max_timestamp: NOW,
        producer: producer.map(|(producer_id, epoch, first)| ProducerBatch {
            producer_id,
            epoch,
            first_sequence: first,
            last_sequence: first + span as i32 - 1,
        }),
        transactional: false,
        marker: None,
    }
}

fn txn_batch(position: u64, span: u32, pid: i64, epoch: i16, first: i32) -> AppendBatch {
    AppendBatch {
        transactional: true,
        ..batch(position, span, Some((pid, epoch, first)))
    }
}

fn marker(position: u64, pid: i64, epoch: i16, marker: Marker) -> AppendBatch {
    AppendBatch {
        position,
        length: 70,
        offset_span: 1,
        max_timestamp: NOW,
        producer: Some(ProducerBatch {
            producer_id: pid,
            epoch,
            first_sequence: -1,
            last_sequence: -1,
        }),
        transactional: true,
        marker: Some(marker),
    }
}

fn segment(partitions: Vec<PartitionAppend>) -> SegmentAppend {
    SegmentAppend {
        segment: Uuid::now_v7(),
        size: 1000,
        created_ms: NOW,
        partitions,
    }
}

fn unit(batches: Vec<AppendBatch>) -> AppendUnit {
    AppendUnit { batches }
}

pub(super) async fn topic_lifecycle(meta: MetaStore, _clock: Arc<ManualClock>) {
    let t = meta
        .create_topic("orders", 3, BTreeMap::new())
        .await
        .expect("create");
    assert_eq!(t.partitions, 3);
    assert!(matches!(
        meta.create_topic("orders", 1, BTreeMap::new()).await,
        Err(MetaError::TopicExists(_))
    ));
    assert!(matches!(
        meta.create_topic("bad", 0, BTreeMap::new()).await,
        Err(MetaError::InvalidPartitions(_))
    ));
    assert_eq!(
        meta.topic_by_id(t.id).await.expect("by id"),
        Some(t.clone())
    );
    let grown = meta.create_partitions("orders", 5).await.expect("grow");
    assert_eq!(grown.partitions, 5);
    assert!(meta
        .partition_state(t.id, 4)
        .await
        .expect("state")
        .is_some());
    assert!(matches!(
        meta.create_partitions("orders", 2).await,
        Err(MetaError::InvalidPartitions(_))
    ));
    let altered = meta
        .alter_topic_configs("orders", vec![("retention.ms".into(), Some("1000".into()))])
        .await
        .expect("alter");
    assert_eq!(altered.configs["retention.ms"], "1000");
    meta.delete_topic(Some("orders"), None)
        .await
        .expect("delete");
    assert_eq!(meta.topic("orders").await.expect("get"), None);
    assert_eq!(meta.deleted_topics().await.expect("deleted").len(), 1);
    let again = meta
        .create_topic("orders", 1, BTreeMap::new())
        .await
        .expect("recreate");
    assert_ne!(again.id, t.id);
    assert_eq!(meta.topics().await.expect("list"), vec![again]);
}

pub(super) async fn offsets_are_dense_and_indexed(meta: MetaStore, _clock: Arc<ManualClock>) {
    let t = meta
        .create_topic("t", 2, BTreeMap::new())
        .await
        .expect("create");
    let seg = segment(vec![
        PartitionAppend {
            topic_id: t.id,
            partition: 0,
            units: vec![
                unit(vec![batch(16, 3, None)]),
                unit(vec![batch(116, 2, None), batch(216, 5, None)]),
            ],
        },
        PartitionAppend {
            topic_id: t.id,
            partition: 1,
            units: vec![unit(vec![batch(316, 4, None)])],
        },
        PartitionAppend {
            topic_id: t.id,
            partition: 7,
            units: vec![unit(vec![batch(416, 1, None)])],
        },
    ]);
    let r = meta
        .commit_segment(Arc::new(seg.clone()), 60_000)
        .await
        .expect("commit");
    assert_eq!(
        r[0].outcomes,
        vec![
            UnitOutcome::Appended {
                base_offset: 0,
                log_start_offset: 0
            },
            UnitOutcome::Appended {
                base_offset: 3,
                log_start_offset: 0
            }
        ]
    );
    assert_eq!(r[0].high_watermark, 10);
    // Three adjacent batches make one index entry.
    assert_eq!(r[0].entries.len(), 1);
    assert_eq!(r[0].entries[0].last_offset, 9);
    assert_eq!(r[0].entries[0].batch_count, 3);
    assert_eq!(r[2].outcomes, vec![UnitOutcome::UnknownTopicOrPartition]);
    let seg2 = segment(vec![PartitionAppend {
        topic_id: t.id,
        partition: 0,
        units: vec![unit(vec![batch(16, 1, None)])],
    }]);
    let r2 = meta
        .commit_segment(Arc::new(seg2.clone()), 60_000)
        .await
        .expect("commit");
    assert_eq!(r2[0].high_watermark, 11);
    let entries = meta.index_entries(t.id, 0, 5, 0).await.expect("index");
    assert_eq!(
        entries
            .iter()
            .map(|e| (e.base_offset, e.last_offset))
            .collect::<Vec<_>>(),
        vec![(0, 9), (10, 10)]
    );
    let from_10 = meta.index_entries(t.id, 0, 10, 1).await.expect("index");
    assert_eq!(from_10[0].base_offset, 10);
    let state = meta
        .partition_state(t.id, 0)
        .await
        .expect("state")
        .expect("exists");
    assert_eq!(state.high_watermark, 11);
    assert_eq!(state.size_bytes, 400);
    assert!(matches!(
        meta.commit_segment(Arc::new(seg2.clone()), 60_000).await,
        Err(MetaError::SegmentAlreadyCommitted(_))
    ));
}

/// Segments committed together get the offsets and producer checks they would get one
/// after another; a group with one segment that cannot be committed commits none.
pub(super) async fn group_commits_are_sequential_and_atomic(
    meta: MetaStore,
    _clock: Arc<ManualClock>,
) {
    let t = meta
        .create_topic("t", 2, BTreeMap::new())
        .await
        .expect("create");
    let (pid, epoch) = meta.init_producer_id(None).await.expect("pid");
    let p = |partition, units| PartitionAppend {
        topic_id: t.id,
        partition,
        units,
    };
    let first = Arc::new(segment(vec![
        p(0, vec![unit(vec![batch(16, 3, Some((pid, epoch, 0)))])]),
        p(1, vec![unit(vec![batch(116, 2, None)])]),
    ]));
    let second = Arc::new(segment(vec![p(
        0,
        vec![
            // A retry of the first segment's batch, then the next sequence.
            unit(vec![batch(16, 3, Some((pid, epoch, 0)))]),
            unit(vec![batch(116, 4, Some((pid, epoch, 3)))]),
        ],
    )]));
    let third = Arc::new(segment(vec![p(
        0,
        vec![unit(vec![batch(16, 1, Some((pid, epoch, 9)))])],
    )]));
    let results = meta
        .commit_segments(vec![first.clone(), second.clone(), third.clone()], 60_000)
        .await
        .expect("group commit");
    assert_eq!(results.len(), 3);
    let appended = |base_offset| UnitOutcome::Appended {
        base_offset,
        log_start_offset: 0,
    };
    assert_eq!(results[0][0].outcomes, vec![appended(0)]);
    assert_eq!(results[0][1].outcomes, vec![appended(0)]);
    assert_eq!(
        results[1][0].outcomes,
        vec![
            UnitOutcome::Duplicate {
                base_offset: 0,
                log_start_offset: 0
            },
            appended(3)
        ]
    );
    assert_eq!(results[1][0].high_watermark, 7);
    assert_eq!(
        results[2][0].outcomes,
        vec![UnitOutcome::OutOfOrderSequence]
    );
    let entries = meta.index_entries(t.id, 0, 0, 0).await.expect("index");
    assert_eq!(
        entries
            .iter()
            .map(|e| (e.base_offset, e.last_offset))
            .collect::<Vec<_>>(),
        vec![(0, 2), (3, 6)]
    );
    // Every segment of the group was recorded as committed.
    for s in [&first, &second, &third] {
        assert!(matches!(
            meta.commit_segment(s.clone(), 60_000).await,
            Err(MetaError::SegmentAlreadyCommitted(_))
        ));
    }

    // A group holding an already committed segment fails whole: the new one is not
    // committed either, and commits afterwards on its own at the next offset.
    let fresh = Arc::new(segment(vec![p(1, vec![unit(vec![batch(16, 5, None)])])]));
    assert!(matches!(
        meta.commit_segments(vec![fresh.clone(), first.clone()], 60_000)
            .await,
        Err(MetaError::SegmentAlreadyCommitted(id)) if id == first.segment
    ));
    let state = meta
        .partition_state(t.id, 1)
        .await
        .expect("state")
        .expect("exists");
    assert_eq!(state.high_watermark, 2);
    let r = meta.commit_segment(fresh, 60_000).await.expect("commit");
    assert_eq!(r[0].outcomes, vec![appended(2)]);
}

pub(super) async fn idempotent_producers(meta: MetaStore, _clock: Arc<ManualClock>) {
    let t = meta
        .create_topic("t", 1, BTreeMap::new())
        .await
        .expect("create");
    let (pid, epoch) = meta.init_producer_id(None).await.expect("pid");
    let (pid2, _) = meta.init_producer_id(None).await.expect("pid");
    assert_ne!(pid, pid2);
    let p = |units| PartitionAppend {
        topic_id: t.id,
        partition: 0,
        units,
    };
    let first = segment(vec![p(vec![
        unit(vec![batch(16, 5, Some((pid, epoch, 0)))]),
        unit(vec![batch(116, 5, Some((pid, epoch, 5)))]),
    ])]);
    meta.commit_segment(Arc::new(first.clone()), 60_000)
        .await
        .expect("commit");
    // A retry of the second batch plus new data from another producer.
    let retry = segment(vec![p(vec![
        unit(vec![batch(16, 5, Some((pid, epoch, 5)))]),
        unit(vec![batch(116, 3, Some((pid2, 0, 0)))]),
        unit(vec![batch(216, 5, Some((pid, epoch, 20)))]),
        unit(vec![batch(316, 5, Some((pid, epoch, 10)))]),
    ])]);
    let r = meta
        .commit_segment(Arc::new(retry.clone()), 60_000)
        .await
        .expect("commit");
    assert_eq!(
        r[0].outcomes,
        vec![
            UnitOutcome::Duplicate {
                base_offset: 5,
                log_start_offset: 0
            },
            UnitOutcome::Appended {
                base_offset: 10,
                log_start_offset: 0
            },
            UnitOutcome::OutOfOrderSequence,
            UnitOutcome::Appended {
                base_offset: 13,
                log_start_offset: 0
            },
        ]
    );
    assert_eq!(r[0].high_watermark, 18);
    // The duplicate's bytes are not indexed: entries skip position 16.
    let positions: Vec<_> = r[0]
        .entries
        .iter()
        .map(|e| {
            let Location::Wal { position, .. } = e.location else {
                panic!("a fresh entry points at the WAL");
            };
            (position, e.base_offset)
        })
        .collect();
    assert_eq!(positions, vec![(116, 10), (316, 13)]);
    // An epoch bump fences the old epoch.
    let (same, bumped) = meta
        .init_producer_id(Some((pid, epoch)))
        .await
        .expect("bump");
    assert_eq!((same, bumped), (pid, epoch + 1));
    let new_epoch = segment(vec![p(vec![unit(vec![batch(
        16,
        1,
        Some((pid, bumped, 0)),
    )])])]);
    meta.commit_segment(Arc::new(new_epoch.clone()), 60_000)
        .await
        .expect("commit");
    let stale = segment(vec![p(vec![unit(vec![batch(
        16,
        1,
        Some((pid, epoch, 15)),
    )])])]);
    let r = meta
        .commit_segment(Arc::new(stale.clone()), 60_000)
        .await
        .expect("commit");
    assert_eq!(r[0].outcomes, vec![UnitOutcome::ProducerFenced]);
}

pub(super) async fn transactions_on_partitions(meta: MetaStore, _clock: Arc<ManualClock>) {
    let t = meta
        .create_topic("t", 1, BTreeMap::new())
        .await
        .expect("create");
    let pid = meta.allocate_producer_id().await.expect("pid");
    let p = |units| PartitionAppend {
        topic_id: t.id,
        partition: 0,
        units,
    };
    // Not added to a transaction: refused.
    let r = meta
        .commit_segment(
            Arc::new(segment(vec![p(vec![unit(vec![txn_batch(
                16, 2, pid, 0, 0,
            )])])])),
            60_000,
        )
        .await
        .expect("commit");
    assert_eq!(r[0].outcomes, vec![UnitOutcome::InvalidTxnState]);

    // The coordinator adds the partition (compare-and-set on the record).
    let empty = TxnRecord::new("tx", pid, 60_000, NOW);
    assert!(meta
        .replace_txn(None, Some(&empty), TxnEffects::default())
        .await
        .expect("create"));
    let mut ongoing = empty.clone();
    ongoing.state = TxnState::Ongoing;
    ongoing.partitions.push(TxnPartition {
        topic_id: t.id,
        topic: "t".into(),
        partition: 0,
    });
    let register = TxnEffects {
        register: vec![(t.id, 0)],
        finish_offsets: None,
    };
    assert!(!meta
        .replace_txn(Some(&ongoing), Some(&ongoing), register.clone())
        .await
        .expect("stale"));
    assert!(meta
        .replace_txn(Some(&empty), Some(&ongoing), register)
        .await
        .expect("add"));
    assert_eq!(
        meta.load_txn("tx").await.expect("load"),
        Some(ongoing.clone())
    );
    assert_eq!(
        meta.active_txns().await.expect("active"),
        vec![ongoing.clone()]
    );

    // Plain data at 0..2, the transaction's at 2..5: the last stable offset stays at 2.
    let r = meta
        .commit_segment(
            Arc::new(segment(vec![p(vec![
                unit(vec![batch(16, 2, None)]),
                unit(vec![txn_batch(116, 3, pid, 0, 0)]),
                unit(vec![batch(216, 1, None)]),
            ])])),
            60_000,
        )
        .await
        .expect("commit");
    assert_eq!((r[0].high_watermark, r[0].last_stable_offset), (6, 2));
    // The abort marker at 6 closes it and records the aborted range 2..=6.
    let r = meta
        .commit_segment(
            Arc::new(segment(vec![p(vec![unit(vec![marker(
                16,
                pid,
                0,
                Marker::Abort,
            )])])])),
            60_000,
        )
        .await
        .expect("commit");
    assert_eq!((r[0].high_watermark, r[0].last_stable_offset), (7, 7));
    let aborted = meta
        .aborted_txns(t.id, 0, 0, 10, 100)
        .await
        .expect("aborted");
    assert_eq!(
        aborted,
        vec![AbortedTxn {
            producer_id: pid,
            first_offset: 2,
            last_offset: 6
        }]
    );
    assert!(aborted[0].covers(pid, 3) && !aborted[0].covers(pid, 7));
    assert!(meta
        .aborted_txns(t.id, 0, 7, 10, 100)
        .await
        .expect("aborted")
        .is_empty());
    // A marker again (a coordinator finishing after a crash) stores nothing, and the
    // partition is no longer in a transaction: transactional data is refused.
    let r = meta
        .commit_segment(
            Arc::new(segment(vec![p(vec![
                unit(vec![marker(16, pid, 0, Marker::Abort)]),
                unit(vec![txn_batch(116, 1, pid, 0, 3)]),
            ])])),
            60_000,
        )
        .await
        .expect("commit");
    assert_eq!(
        r[0].outcomes,
        vec![
            UnitOutcome::Duplicate {
                base_offset: 7,
                log_start_offset: 0
            },
            UnitOutcome::InvalidTxnState
        ]
    );
    assert_eq!(r[0].high_watermark, 7);

    // Offsets committed in a transaction move to the group only when it commits.
    let offset = CommittedOffset {
        offset: 42,
        leader_epoch: -1,
        metadata: None,
        commit_ms: NOW,
    };
    meta.store_txn_offsets(pid, "g", vec![(t.id, 0, offset.clone())])
        .await
        .expect("txn offsets");
    let mut with_group = ongoing.clone();
    with_group.groups.push("g".into());
    assert!(meta
        .replace_txn(Some(&ongoing), Some(&with_group), TxnEffects::default())
        .await
        .expect("group"));
    assert_eq!(
        meta.pending_txn_offsets("g").await.expect("pending"),
        vec![(t.id, 0)]
    );
    assert!(meta
        .fetch_offsets("g", None)
        .await
        .expect("fetch")
        .is_empty());
    let mut done = with_group.clone();
    done.state = TxnState::CompleteCommit;
    done.groups.clear();
    assert!(meta
        .replace_txn(
            Some(&with_group),
            Some(&done),
            TxnEffects {
                register: Vec::new(),
                finish_offsets: Some(true),
            }
        )
        .await
        .expect("commit"));
    assert_eq!(
        meta.fetch_offsets("g", None).await.expect("fetch"),
        vec![(t.id, 0, offset)]
    );
    assert!(meta
        .pending_txn_offsets("g")
        .await
        .expect("pending")
        .is_empty());
    assert_eq!(meta.list_txns().await.expect("list"), vec![done.clone()]);
    assert!(meta.active_txns().await.expect("active").is_empty());
    assert!(meta
        .replace_txn(Some(&done), None, TxnEffects::default())
        .await
        .expect("delete"));
    assert_eq!(meta.load_txn("tx").await.expect("load"), None);
}

pub(super) async fn old_segments_are_refused(meta: MetaStore, clock: Arc<ManualClock>) {
    let t = meta
        .create_topic("t", 1, BTreeMap::new())
        .await
        .expect("create");
    let seg = segment(vec![PartitionAppend {
        topic_id: t.id,
        partition: 0,
        units: vec![unit(vec![batch(16, 1, None)])],
    }]);
    clock.advance(120_000);
    assert!(matches!(
        meta.commit_segment(Arc::new(seg.clone()), 60_000).await,
        Err(MetaError::SegmentTooOld(_))
    ));
}

pub(super) async fn deleted_topics_release_their_segments(
    meta: MetaStore,
    clock: Arc<ManualClock>,
) {
    let t = meta
        .create_topic("t", 2, BTreeMap::new())
        .await
        .expect("create");
    let seg = segment(vec![
        PartitionAppend {
            topic_id: t.id,
            partition: 0,
            units: vec![unit(vec![batch(16, 1, Some((5, 0, 0)))])],
        },
        PartitionAppend {
            topic_id: t.id,
            partition: 1,
            units: vec![unit(vec![batch(116, 1, None)])],
        },
    ]);
    meta.commit_segment(Arc::new(seg.clone()), 60_000)
        .await
        .expect("commit");
    let record = meta
        .segment_record(seg.segment)
        .await
        .expect("record")
        .expect("exists");
    assert_eq!(record.live_entries, 2);
    meta.delete_topic(None, Some(t.id)).await.expect("delete");
    assert!(!meta.purge_deleted_topic(t.id, 1).await.expect("purge"));
    assert!(!meta.purge_deleted_topic(t.id, 1).await.expect("purge"));
    assert!(meta.purge_deleted_topic(t.id, 1).await.expect("purge"));
    assert!(meta.deleted_topics().await.expect("deleted").is_empty());
    assert!(meta
        .unreferenced_segments(NOW)
        .await
        .expect("gc")
        .is_empty());
    clock.advance(10);
    let gc = meta.unreferenced_segments(NOW + 1).await.expect("gc");
    assert_eq!(gc.len(), 1);
    assert_eq!(gc[0].segment, seg.segment);
    assert!(meta.forget_segment(seg.segment).await.expect("forget"));
    assert_eq!(
        meta.segments_known(&[seg.segment]).await.expect("known"),
        vec![false]
    );
}

pub(super) async fn cluster_id_is_stable(meta: MetaStore, _clock: Arc<ManualClock>) {
    let a = meta.cluster_id().await.expect("id");
    assert_eq!(meta.cluster_id().await.expect("id"), a);
}

pub(super) async fn leases_exclude_other_holders_until_expiry(
    meta: MetaStore,
    clock: Arc<ManualClock>,
) {
    assert!(meta
        .acquire_lease("compact/t", "a", 1000)
        .await
        .expect("lease"));
    assert!(!meta
        .acquire_lease("compact/t", "b", 1000)
        .await
        .expect("lease"));
    assert!(meta
        .acquire_lease("compact/t", "a", 1000)
        .await
        .expect("renew"));
    clock.advance(1001);
    assert!(meta
        .acquire_lease("compact/t", "b", 1000)
        .await
        .expect("expired"));
    meta.release_lease("compact/t", "b").await.expect("release");
    assert!(meta
        .acquire_lease("compact/t", "a", 1000)
        .await
        .expect("free"));
}

pub(super) async fn swap_replaces_wal_entries_and_releases_segments(
    meta: MetaStore,
    clock: Arc<ManualClock>,
) {
    let t = meta
        .create_topic("t", 1, BTreeMap::new())
        .await
        .expect("create");
    let mut segments = Vec::new();
    for _ in 0..3 {
        let seg = segment(vec![PartitionAppend {
            topic_id: t.id,
            partition: 0,
            units: vec![unit(vec![batch(16, 10, None)])],
        }]);
        segments.push(seg.segment);
        meta.commit_segment(Arc::new(seg), 60_000)
            .await
            .expect("commit");
    }
    let files = vec![
        RoundFile {
            partition: 0,
            file: "file:///w/a.parquet".into(),
            first_offset: 0,
            last_offset: 14,
            rows: 15,
            max_timestamp: NOW,
        },
        RoundFile {
            partition: 0,
            file: "file:///w/b.parquet".into(),
            first_offset: 15,
            last_offset: 19,
            rows: 5,
            max_timestamp: NOW,
        },
    ];
    let intent = RoundIntent {
        v: 1,
        commit_id: "c1".into(),
        files: files.clone(),
        kept: Vec::new(),
    };
    meta.set_round_intent(t.id, &intent).await.expect("intent");
    assert_eq!(meta.round_intent(t.id).await.expect("read"), Some(intent));
    let created = meta.swap_to_table(t.id, &files, &[]).await.expect("swap");
    assert_eq!(created.len(), 2);
    assert_eq!(meta.round_intent(t.id).await.expect("read"), None);
    // Idempotent.
    assert!(meta
        .swap_to_table(t.id, &files, &[])
        .await
        .expect("again")
        .is_empty());
    let entries = meta.index_entries(t.id, 0, 0, 0).await.expect("index");
    let shape: Vec<_> = entries
        .iter()
        .map(|e| {
            (
                e.base_offset,
                e.last_offset,
                matches!(e.location, Location::Table { .. }),
            )
        })
        .collect();
    assert_eq!(shape, vec![(0, 14, true), (15, 19, true), (20, 29, false)]);
    let state = meta
        .partition_state(t.id, 0)
        .await
        .expect("state")
        .expect("exists");
    assert_eq!(
        state.size_bytes, 300,
        "sizes carried over to the table entries"
    );
    let records = meta.segments_known(&segments).await.expect("known");
    assert_eq!(records, vec![true, true, true]);
    clock.advance(5);
    let gc = meta.unreferenced_segments(NOW + 5).await.expect("gc");
    let released: Vec<_> = gc.iter().map(|c| c.segment).collect();
    assert_eq!(released, vec![segments[0], segments[1]]);

    // Retention: trimming to 17 drops the entry ending at 14 only.
    let state = meta
        .trim_log(t.id, 0, 17)
        .await
        .expect("trim")
        .expect("state");
    assert_eq!(state.log_start_offset, 17);
    let entries = meta.index_entries(t.id, 0, 0, 0).await.expect("index");
    assert_eq!(entries[0].base_offset, 15);

    // DeleteRecords: the log start moves, never past the high watermark, never back; the
    // entries stay until a trim below the log start (the table holds their rows) removes
    // them.
    let refused = meta.advance_log_start(t.id, 0, 31).await.expect("advance");
    assert!(matches!(refused, Some(Err(s)) if s.log_start_offset == 17 && s.high_watermark == 30));
    let moved = meta.advance_log_start(t.id, 0, 25).await.expect("advance");
    assert!(matches!(moved, Some(Ok(s)) if s.log_start_offset == 25));
    let kept = meta.advance_log_start(t.id, 0, 20).await.expect("advance");
    assert!(matches!(kept, Some(Ok(s)) if s.log_start_offset == 25));
    assert!(meta
        .advance_log_start(t.id, 7, 1)
        .await
        .expect("advance")
        .is_none());
    let entries = meta.index_entries(t.id, 0, 0, 0).await.expect("index");
    assert_eq!(entries.len(), 2, "entries stay until the table holds them");
    let state = meta
        .trim_log(t.id, 0, 20)
        .await
        .expect("trim")
        .expect("state");
    assert_eq!(
        state.log_start_offset, 25,
        "a trim below the log start keeps it"
    );
    let entries = meta.index_entries(t.id, 0, 0, 0).await.expect("index");
    assert_eq!(entries[0].base_offset, 20);
    assert!(
        meta.trim_log(t.id, 0, 1000)
            .await
            .expect("trim")
            .expect("state")
            .log_start_offset
            == 30
    );
}

/// A round that leaves a WAL entry exactly as it was (an aborted batch alone in its entry)
/// keeps its segment counted once, so the segment is released when the entry goes.
pub(super) async fn swap_counts_unchanged_kept_entries_once(
    meta: MetaStore,
    clock: Arc<ManualClock>,
) {
    let t = meta
        .create_topic("t", 1, BTreeMap::new())
        .await
        .expect("create");
    let mut segments = Vec::new();
    for _ in 0..3 {
        let seg = segment(vec![PartitionAppend {
            topic_id: t.id,
            partition: 0,
            units: vec![unit(vec![batch(16, 10, None)])],
        }]);
        segments.push(seg.segment);
        meta.commit_segment(Arc::new(seg), 60_000)
            .await
            .expect("commit");
    }
    let entries = meta.index_entries(t.id, 0, 0, 0).await.expect("index");
    let middle = &entries[1];
    let Location::Wal {
        segment: kept_segment,
        position,
        length,
    } = middle.location
    else {
        panic!("a WAL entry: {middle:?}");
    };
    let kept = vec![KeptRun {
        partition: 0,
        base_offset: middle.base_offset,
        last_offset: middle.last_offset,
        segment: kept_segment,
        position,
        length,
        batch_count: middle.batch_count,
        max_timestamp: middle.max_timestamp,
    }];
    let files = vec![RoundFile {
        partition: 0,
        file: "file:///w/a.parquet".into(),
        first_offset: 0,
        last_offset: 29,
        rows: 20,
        max_timestamp: NOW,
    }];
    let live = |meta: MetaStore, id: Uuid| async move {
        meta.segment_record(id)
            .await
            .expect("read")
            .expect("record")
            .live_entries
    };
    meta.swap_to_table(t.id, &files, &kept).await.expect("swap");
    assert_eq!(live(meta.clone(), kept_segment).await, 1);
    // Run again (as after a crash): nothing changes.
    meta.swap_to_table(t.id, &files, &kept)
        .await
        .expect("again");
    assert_eq!(live(meta.clone(), kept_segment).await, 1);
    assert_eq!(live(meta.clone(), segments[0]).await, 0);
    assert_eq!(live(meta.clone(), segments[2]).await, 0);
    // Retention past the kept entry releases its segment too.
    clock.advance(5);
    meta.trim_log(t.id, 0, 30).await.expect("trim");
    assert_eq!(live(meta.clone(), kept_segment).await, 0);
    let gc = meta.unreferenced_segments(NOW + 6).await.expect("gc");
    assert_eq!(gc.len(), 3, "every segment can be collected: {gc:?}");
}

pub(super) async fn group_offsets_and_records(meta: MetaStore, _clock: Arc<ManualClock>) {
    let t = Uuid::new_v4();
    let o = |offset| CommittedOffset {
        offset,
        leader_epoch: 0,
        metadata: Some("m".into()),
        commit_ms: NOW,
    };
    meta.commit_offsets("g1", vec![(t, 0, o(10)), (t, 1, o(20))])
        .await
        .expect("commit");
    meta.commit_offsets("g2", vec![(t, 0, o(5))])
        .await
        .expect("commit");
    let all = meta.fetch_offsets("g1", None).await.expect("fetch");
    assert_eq!(all.len(), 2);
    let some = meta
        .fetch_offsets("g1", Some(vec![(t, 1), (t, 9)]))
        .await
        .expect("fetch");
    assert_eq!(some, vec![(t, 1, o(20))]);
    let record = GroupRecord {
        v: GroupRecord::VERSION,
        group_id: "g3".into(),
        protocol_type: Some("consumer".into()),
        protocol: Some("range".into()),
        generation: 4,
        leader: None,
        members: vec![],
        saved_ms: NOW,
    };
    meta.save_group(&record).await.expect("save");
    assert_eq!(meta.load_group("g3").await.expect("load"), Some(record));
    assert_eq!(
        meta.group_ids().await.expect("ids"),
        vec!["g1".to_string(), "g2".to_string(), "g3".to_string()]
    );
    meta.delete_group("g1").await.expect("delete");
    assert!(meta
        .fetch_offsets("g1", None)
        .await
        .expect("fetch")
        .is_empty());
    assert_eq!(
        meta.expire_offsets(&["g2".into()], NOW + 1)
            .await
            .expect("expire"),
        1
    );
    assert!(meta
        .fetch_offsets("g2", None)
        .await
        .expect("fetch")
        .is_empty());
}

pub(super) async fn brokers_register_with_leases(meta: MetaStore, clock: Arc<ManualClock>) {
    let id = meta.allocate_node_id().await.expect("id");
    let other = meta.allocate_node_id().await.expect("id");
    assert_ne!(id, other);
    let record = |node_id, incarnation: &str| BrokerRecord {
        node_id,
        host: "127.0.0.1".into(),
        port: 9092,
        rack: None,
        incarnation: incarnation.into(),
        expires_ms: 0,
        listeners: Vec::new(),
    };
    meta.register_broker(record(id, "a"), 1000, false)
        .await
        .expect("register");
    meta.register_broker(record(other, "b"), 5000, false)
        .await
        .expect("register");
    let mut elsewhere = record(id, "c");
    elsewhere.port = 9093;
    assert!(matches!(
        meta.register_broker(elsewhere.clone(), 1000, false).await,
        Err(MetaError::NodeIdInUse(_))
    ));
    // The same address is the same broker restarted: it takes its id back.
    meta.register_broker(record(id, "d"), 1000, false)
        .await
        .expect("restart");
    assert_eq!(meta.live_brokers().await.expect("live").len(), 2);
    clock.advance(1500);
    let live = meta.live_brokers().await.expect("live");
    assert_eq!(
        live.iter().map(|b| b.node_id).collect::<Vec<_>>(),
        vec![other]
    );
    meta.register_broker(elsewhere, 1000, false)
        .await
        .expect("expired id reused");
    meta.deregister_broker(other, "b")
        .await
        .expect("deregister");
    assert_eq!(meta.live_brokers().await.expect("live").len(), 1);
}

/// Concurrent segment commits to the same partitions (two brokers): every offset is given
/// exactly once, densely, whatever the interleaving and retries.
pub(super) async fn concurrent_commits_are_dense(meta: MetaStore, _clock: Arc<ManualClock>) {
    let t = meta
        .create_topic("contended", 2, BTreeMap::new())
        .await
        .expect("create");
    let writer = |meta: MetaStore| async move {
        let mut spans = Vec::new();
        for i in 0..25u32 {
            let span = 1 + i % 4;
            let seg = segment(vec![
                PartitionAppend {
                    topic_id: t.id,
                    partition: 0,
                    units: vec![unit(vec![batch(0, span, None)])],
                },
                PartitionAppend {
                    topic_id: t.id,
                    partition: 1,
                    units: vec![unit(vec![batch(100, 1, None)])],
                },
            ]);
            let results = meta
                .commit_segment(Arc::new(seg), 60_000)
                .await
                .expect("commit");
            match results[0].outcomes[0] {
                UnitOutcome::Appended { base_offset, .. } => spans.push((base_offset, span)),
                other => panic!("unexpected outcome {other:?}"),
            }
        }
        spans
    };
    let (a, b) = tokio::join!(
        tokio::spawn(writer(meta.clone())),
        tokio::spawn(writer(meta.clone()))
    );
    let mut spans: Vec<(i64, u32)> = a.expect("a").into_iter().chain(b.expect("b")).collect();
    spans.sort();
    let mut next = 0i64;
    for (base, span) in &spans {
        assert_eq!(*base, next, "offsets are dense and given once: {spans:?}");
        next += i64::from(*span);
    }
    let state = meta
        .partition_state(t.id, 0)
        .await
        .expect("state")
        .expect("partition");
    assert_eq!(state.high_watermark, next);
    let p1 = meta
        .partition_state(t.id, 1)
        .await
        .expect("state")
        .expect("partition");
    assert_eq!(p1.high_watermark, 50);
    let entries = meta.index_entries(t.id, 0, 0, 0).await.expect("index");
    let mut expect = 0;
    for e in &entries {
        assert_eq!(e.base_offset, expect, "index entries are contiguous");
        expect = e.next_offset();
    }
    assert_eq!(expect, next);
}

pub(super) async fn schema_registry_state(meta: MetaStore, _clock: Arc<ManualClock>) {
    let schema = |text: &str| StoredSchema {
        schema_type: "AVRO".into(),
        schema: text.into(),
        references: Vec::new(),
    };
    let (a, b) = (schema("\"string\""), schema("\"long\""));
    // First version; the same schema again (any subject) keeps its id.
    let r = meta
        .register_schema("s-value", &a, b"fp-a", None)
        .await
        .expect("register");
    assert_eq!(r, Registered::New { id: 1, version: 1 });
    let r = meta
        .register_schema("s-value", &a, b"fp-a", Some(1))
        .await
        .expect("again");
    assert_eq!(r, Registered::Existing { id: 1, version: 1 });
    let r = meta
        .register_schema("t-value", &a, b"fp-a", None)
        .await
        .expect("other subject");
    assert_eq!(r, Registered::New { id: 1, version: 1 });
    // A registration checked against a stale latest version is turned back.
    let r = meta
        .register_schema("s-value", &b, b"fp-b", None)
        .await
        .expect("stale");
    assert_eq!(r, Registered::Changed);
    let r = meta
        .register_schema("s-value", &b, b"fp-b", Some(1))
        .await
        .expect("second");
    assert_eq!(r, Registered::New { id: 2, version: 2 });
    assert_eq!(meta.schema_by_id(2).await.expect("by id"), Some(b.clone()));
    assert_eq!(meta.schema_by_id(3).await.expect("absent"), None);
    let subjects = meta.subjects().await.expect("subjects");
    assert_eq!(
        subjects
            .iter()
            .map(|(s, v)| (s.as_str(), v.len()))
            .collect::<Vec<_>>(),
        vec![("s-value", 2), ("t-value", 1)]
    );
    // Soft delete keeps the version (and the id) around; hard delete removes it; a new
    // version numbers after the highest one left.
    assert!(meta
        .delete_subject_version("s-value", 2, false)
        .await
        .expect("soft"));
    let versions = meta.subject_versions("s-value").await.expect("versions");
    assert!(versions[1].deleted);
    assert!(meta
        .delete_subject_version("s-value", 2, true)
        .await
        .expect("hard"));
    assert!(!meta
        .delete_subject_version("s-value", 2, true)
        .await
        .expect("gone"));
    let r = meta
        .register_schema("s-value", &b, b"fp-b", Some(1))
        .await
        .expect("re-add");
    assert_eq!(r, Registered::New { id: 2, version: 2 });
    // Settings, global and per subject.
    let kind = RegistrySetting::Compatibility;
    assert_eq!(
        meta.registry_setting(kind, None).await.expect("unset"),
        None
    );
    meta.set_registry_setting(kind, Some("s-value"), Some("FULL"))
        .await
        .expect("set");
    assert_eq!(
        meta.registry_setting(kind, Some("s-value"))
            .await
            .expect("get"),
        Some("FULL".into())
    );
    assert_eq!(
        meta.registry_setting(kind, None).await.expect("global"),
        None
    );
    meta.set_registry_setting(kind, Some("s-value"), None)
        .await
        .expect("clear");
    assert_eq!(
        meta.registry_setting(kind, Some("s-value"))
            .await
            .expect("cleared"),
        None
    );
}

/// Runs every domain test against the backend `$make` yields (`Option<(guard, kv)>`,
/// `None` to skip).
macro_rules! meta_domain_tests {
    ($backend:ident, $make:expr) => {
        meta_domain_tests!($backend, $make, [
            topic_lifecycle,
            offsets_are_dense_and_indexed,
            group_commits_are_sequential_and_atomic,
            idempotent_producers,
            transactions_on_partitions,
            old_segments_are_refused,
            deleted_topics_release_their_segments,
            cluster_id_is_stable,
            leases_exclude_other_holders_until_expiry,
            swap_replaces_wal_entries_and_releases_segments,
            swap_counts_unchanged_kept_entries_once,
            group_offsets_and_records,
            brokers_register_with_leases,
            concurrent_commits_are_dense,
            schema_registry_state,
        ]);
    };
    ($backend:ident, $make:expr, [$($name:ident,)*]) => {
        mod $backend {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some((_guard, kv)) = $make else {
                        eprintln!("{}: backend not configured, skipping", stringify!($backend));
                        return;
                    };
                    let clock = Arc::new(ManualClock::new(NOW));
                    super::$name(MetaStore::new(kv, clock.clone()), clock).await;
                }
            )*
        }
    };
}

meta_domain_tests!(embedded, embedded());
meta_domain_tests!(
    postgres,
    crate::kv::postgres::tests::fresh()
        .await
        .map(|(g, kv)| (g, Arc::new(kv) as Arc<dyn crate::kv::KvStore>))
);
#[cfg(feature = "foundationdb")]
meta_domain_tests!(
    foundationdb,
    crate::kv::fdb::tests::fresh().map(|(g, kv)| (g, Arc::new(kv) as Arc<dyn crate::kv::KvStore>))
);
