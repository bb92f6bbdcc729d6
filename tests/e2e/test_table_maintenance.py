"""The table stays small while it is written for a long time: small data files are
rewritten into large ones (replace snapshots), manifests merged, snapshots capped; and
through all of it PyIceberg, DuckDB and Kafka consumers read every acknowledged record
exactly once."""

import os
import time

import pytest

from helpers import Broker, admin_settings, metric
from tables import duckdb_count, duck_connection, rows, sql_catalog, wait_for_rows
from test_durability import run_crash_test
from workload import (assert_dense, assert_same, consume, create_topic, expected_tuple,
                      make_records, produce)

# Rewrites as often as rounds, and a partition keeps at most 2 small files.
REWRITING = {"compaction_interval_ms": 100, "table_rewrite_interval_ms": 300,
             "table_max_small_files": 2, "table_manifest_merge_count": 4,
             "max_snapshots": 20}


def produce_in_rounds(broker, topic, records, bursts, pause=0.25):
    """Produces `records` in `bursts`, pausing so each lands in its own round (file)."""
    acked = {}
    step = -(-len(records) // bursts)
    for i in range(0, len(records), step):
        got, errors = produce(broker.bootstrap, topic, records[i:i + step])
        assert not errors, errors[:3]
        acked.update(got)
        time.sleep(pause)
    return acked


def live_files(table):
    return [t.file for t in table.scan().plan_files()]


def test_rewrites_keep_every_record_while_rounds_go_on(make_broker):
    broker = make_broker(admin_settings(REWRITING))
    create_topic(broker.bootstrap, "events", 3)
    records = make_records(6_000, 3, seed=91)
    acked = produce_in_rounds(broker, "events", records, bursts=40, pause=0.1)
    catalog = sql_catalog(broker)
    wait_for_rows(catalog, "events", len(acked))
    # Rewrites ran while rounds kept committing, and caught up.
    deadline = time.time() + 60
    while time.time() < deadline:
        files = live_files(catalog.load_table(("kafka", "events")))
        if metric(broker, "icestream_table_rewrites_total") > 0 and len(files) <= 3 * 3:
            break
        time.sleep(0.5)
    table = catalog.load_table(("kafka", "events"))
    files = live_files(table)
    assert len(files) <= 9, f"{len(files)} data files after rewrites"
    operations = [s.summary.operation.value for s in table.metadata.snapshots]
    assert "replace" in operations, operations
    assert len(table.metadata.snapshots) <= 20 + 10, "snapshots are capped"
    assert len(table.current_snapshot().manifests(table.io)) <= 8

    # PyIceberg: every acknowledged record once, equal field by field.
    got = rows(catalog, "events")
    assert sorted(got) == sorted(acked)
    for k, rec in acked.items():
        assert got[k] == expected_tuple(rec), f"row {k} differs"
    # DuckDB, by metadata file and by table directory (version-hint.text).
    location = table.metadata_location.removeprefix("file://")
    assert duckdb_count(location) == len(acked)
    table_dir = os.path.dirname(os.path.dirname(location))
    con = duck_connection()
    assert con.execute(f"SELECT count(*) FROM iceberg_scan('{table_dir}')").fetchone()[0] \
        == len(acked)
    # Time travel to a retained snapshot older than the last rewrite.
    older = [s for s in table.metadata.snapshots
             if s.summary.operation.value == "append"
             and s.sequence_number < table.current_snapshot().sequence_number]
    assert older, "an older snapshot is retained"
    old = older[0]
    arrow = table.scan(snapshot_id=old.snapshot_id).to_arrow()
    assert arrow.num_rows == int(old.summary["total-records"])
    keys = set(zip(arrow.column("partition").to_pylist(), arrow.column("offset").to_pylist()))
    assert len(keys) == arrow.num_rows and keys <= set(acked)

    # Kafka consumers from offset 0 read the rewritten files: every record, byte-exact.
    reads = metric(broker, "icestream_table_reads_total")
    consumed = consume(broker.bootstrap, "events", 3, len(acked))
    assert_same(acked, consumed)
    assert_dense(consumed)
    assert metric(broker, "icestream_table_reads_total") > reads, "read from Parquet"

    # The table section of /metrics.
    assert metric(broker, "icestream_table_data_files") > 0
    assert metric(broker, "icestream_table_manifests") > 0
    assert metric(broker, "icestream_table_last_rewrite_seconds") > 0


@pytest.mark.parametrize("point", [
    "compactor.rewrite.after_write",
    "compactor.rewrite.after_commit",
    "compactor.rewrite.after_swap",
])
def test_crash_at_every_rewrite_step_neither_loses_nor_duplicates(tmp_path, point):
    # First many small files, with rewrites off; then a broker that aborts at the point.
    settings = {**REWRITING, "table_rewrite_interval_ms": 3_600_000}
    broker = Broker(tmp_path / "broker", settings)
    broker.start()
    create_topic(broker.bootstrap, "exact", 2)
    records = make_records(2_000, 2, seed=92)
    acked = produce_in_rounds(broker, "exact", records, bursts=8)
    assert len(acked) == len(records)
    wait_for_rows(sql_catalog(broker), "exact", len(acked))
    broker.stop()
    # The first rewrite pass comes once the broker is up (and aborts it).
    broker.settings["table_rewrite_interval_ms"] = 2000
    os.environ["ICESTREAM_TEST_FAILPOINT"] = point
    try:
        broker.start()
    finally:
        del os.environ["ICESTREAM_TEST_FAILPOINT"]
    broker.proc.wait(timeout=60)
    assert "failpoint " + point in broker.log()
    broker.settings["table_rewrite_interval_ms"] = 300
    broker.start()
    try:
        catalog = sql_catalog(broker)
        deadline = time.time() + 60
        while time.time() < deadline:
            table = catalog.load_table(("kafka", "exact"))
            ops = [s.summary.operation.value for s in table.metadata.snapshots]
            if "replace" in ops and len(rows(catalog, "exact")) >= len(acked):
                break
            time.sleep(0.5)
        assert "replace" in ops, "a rewrite committed after the restart"
        got = rows(catalog, "exact")
        assert sorted(got) == sorted(acked), "table rows differ from acknowledged records"
        for k, rec in acked.items():
            assert got[k] == expected_tuple(rec)
        assert_same(acked, consume(broker.bootstrap, "exact", 2, len(acked)))
    finally:
        broker.stop()


def test_kill9_while_producing_compacting_and_rewriting(tmp_path):
    broker = Broker(tmp_path / "broker", {**REWRITING, "table_rewrite_interval_ms": 200})
    broker.start()
    try:
        run_crash_test(broker, tmp_path, count=40_000, partitions=4)
        table = wait_for_rows(sql_catalog(broker), "crash", 40_000)
        keys = [v[0] for v in table.values()]
        assert len(keys) == len(set(keys)) == 40_000
    finally:
        broker.stop()


def test_large_offset_maps_live_in_a_file(make_broker):
    """With many partitions the next-offsets map leaves the snapshot summary for a file in
    metadata/, and rounds keep reading it: no record is lost or folded twice."""
    broker = make_broker({"compaction_interval_ms": 200})
    create_topic(broker.bootstrap, "wide", 200)
    records = make_records(1_200, 200, seed=93)
    first, _ = produce(broker.bootstrap, "wide", records[:600])
    catalog = sql_catalog(broker)
    wait_for_rows(catalog, "wide", len(first))
    second, _ = produce(broker.bootstrap, "wide", records[600:])
    acked = {**first, **second}
    got = wait_for_rows(catalog, "wide", len(acked))
    time.sleep(1)  # a further round must not add anything
    got = rows(catalog, "wide")
    assert sorted(got) == sorted(acked)
    summary = catalog.load_table(("kafka", "wide")).current_snapshot().summary
    assert "icestream.next-offsets" not in summary.additional_properties
    path = summary["icestream.next-offsets-file"].removeprefix("file://")
    import json
    offsets = json.load(open(path))
    assert sum(offsets.values()) == len(acked)
