"""The log is an Iceberg table: what producers wrote is readable from PyIceberg and
DuckDB seconds later, every field equal, and consumers read compacted offsets back from
the same Parquet files."""

import subprocess
import time
from pathlib import Path

import pytest

from helpers import Broker, free_port, icestream_bin
from tables import duckdb_count, rows, sql_catalog, wait_for_rows
from test_observability import get, metric
from workload import (assert_same, consume, create_topic, expected_tuple, make_records,
                      produce)

FAST = {"compaction_interval_ms": 300}


def test_table_has_every_record_exactly(make_broker):
    broker = make_broker(FAST)
    create_topic(broker.bootstrap, "orders", 4)
    records = make_records(20_000, 4, seed=21)
    acked, errors = produce(broker.bootstrap, "orders", records, **{"compression.type": "lz4"})
    assert not errors
    table = wait_for_rows(sql_catalog(broker), "orders", len(acked))
    assert len(table) == len(acked)
    for k, rec in acked.items():
        assert table[k] == expected_tuple(rec), f"row {k} differs"
    pattern = f"{broker.data_dir}/objects/warehouse/kafka/orders/metadata/*.metadata.json"
    assert duckdb_count(pattern) == len(acked)
    # One partition's rows are in their own files.
    t = sql_catalog(broker).load_table(("kafka", "orders"))
    for task in t.scan(row_filter="partition == 2").plan_files():
        assert "partition=2" in task.file.file_path


def test_consumer_reads_compacted_offsets_after_wal_is_gone(make_broker):
    admin = free_port()
    broker = make_broker({**FAST, "segment_grace_ms": 10_000, "gc_interval_ms": 500,
                          "admin_listen": f"127.0.0.1:{admin}"})
    create_topic(broker.bootstrap, "history", 3)
    records = make_records(9_000, 3, seed=22)
    acked, _ = produce(broker.bootstrap, "history", records, **{"compression.type": "zstd"})
    wait_for_rows(sql_catalog(broker), "history", len(acked))
    wal = Path(broker.data_dir) / "objects" / "wal"

    def segments():
        return [p for p in wal.iterdir() if p.suffix == ".seg"] if wal.exists() else []

    assert segments(), "the records were written to WAL segments"
    deadline = time.time() + 60
    while time.time() < deadline and segments():
        time.sleep(0.5)
    assert not segments(), "WAL segments were not collected"
    def counter(name):
        return metric(get(f"http://127.0.0.1:{admin}/metrics")[1], name)

    consumed = consume(broker.bootstrap, "history", 3, len(acked))
    assert_same(acked, consumed)
    reads = counter("icestream_table_reads_total")
    assert reads > 0, "the records came from Parquet"
    # A second reader of the same offsets is served from the cache of rebuilt batches.
    assert_same(acked, consume(broker.bootstrap, "history", 3, len(acked)))
    assert counter("icestream_table_read_cache_hits_total") > 0
    assert counter("icestream_table_reads_total") - reads < reads / 2
    # And by timestamp, into the compacted data.
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "ts"})
    tp = c.offsets_for_times([TopicPartition("history", 1, records[3001]["timestamp"])], timeout=10)[0]
    c.close()
    assert tp.offset == 1000  # record 3001 is the 1001st of partition 1


@pytest.mark.parametrize("point", [
    "compactor.before_write",
    "compactor.after_write",
    "compactor.after_commit",
    "compactor.after_swap",
])
def test_crash_at_every_compaction_step_neither_loses_nor_duplicates(tmp_path, point):
    broker = Broker(tmp_path / "broker", FAST)
    broker.start()
    create_topic(broker.bootstrap, "exact", 2)
    records = make_records(5_000, 2, seed=23)
    # The broker aborts at the failpoint of its first compaction round.
    broker.stop()
    import os
    os.environ["ICESTREAM_TEST_FAILPOINT"] = point
    try:
        broker.start()
    finally:
        del os.environ["ICESTREAM_TEST_FAILPOINT"]
    acked, errors = produce(broker.bootstrap, "exact", records)
    assert not errors and len(acked) == len(records)
    broker.proc.wait(timeout=60)
    assert "failpoint " + point in broker.log()
    broker.start()
    try:
        table = wait_for_rows(sql_catalog(broker), "exact", len(acked))
        time.sleep(1)  # a further round must not add anything
        table = rows(sql_catalog(broker), "exact")
        assert sorted(table) == sorted(acked), "table rows differ from acknowledged records"
        for k, rec in acked.items():
            assert table[k] == expected_tuple(rec)
        assert_same(acked, consume(broker.bootstrap, "exact", 2, len(acked)))
    finally:
        broker.stop()


def test_kill9_while_producing_and_compacting(tmp_path):
    from test_durability import run_crash_test
    broker = Broker(tmp_path / "broker", {"compaction_interval_ms": 200})
    broker.start()
    try:
        run_crash_test(broker, tmp_path, count=60_000, partitions=4)
        table = wait_for_rows(sql_catalog(broker), "crash", 60_000)
        keys = [v[0] for v in table.values()]
        assert len(keys) == len(set(keys)) == 60_000
    finally:
        broker.stop()


def test_retention_moves_log_start_but_keeps_table_rows(make_broker):
    broker = make_broker({"compaction_interval_ms": 100})
    create_topic(broker.bootstrap, "short", 1, {"retention.ms": "1000"})
    records = make_records(1000, 1, seed=24)
    for r in records:
        r["timestamp"] = int(time.time() * 1000) - 60_000  # a minute old: expired at once
    produce(broker.bootstrap, "short", records)
    wait_for_rows(sql_catalog(broker), "short", 1000)
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "ret"})
    deadline = time.time() + 30
    low = 0
    while time.time() < deadline:
        low, high = c.get_watermark_offsets(TopicPartition("short", 0), timeout=10)
        if low == 1000:
            break
        time.sleep(0.5)
    c.close()
    assert low == 1000 and high == 1000
    assert len(rows(sql_catalog(broker), "short")) == 1000


def test_unreferenced_table_metadata_is_swept(make_broker):
    """Expired snapshots' manifest lists, metadata files out of the metadata log and a
    failed commit's leftovers are deleted once older than the grace period; the table
    stays readable from PyIceberg and DuckDB."""
    import os
    broker = make_broker({"compaction_interval_ms": 200, "snapshot_retention_ms": 0,
                          "keep_snapshots": 3, "table_metadata_grace_ms": 2000})
    topic = "swept"
    create_topic(broker.bootstrap, topic, 2)
    catalog = sql_catalog(broker)
    acked = {}
    for i in range(8):  # at least one snapshot each
        more, errors = produce(broker.bootstrap, topic, make_records(300, 2, seed=40 + i))
        assert not errors
        acked.update(more)
        wait_for_rows(catalog, topic, len(acked))
    table = catalog.load_table(("kafka", topic))
    meta_dir = Path(table.location().removeprefix("file://")) / "metadata"
    hour_ago = time.time() - 3600
    leftovers = [meta_dir / "00000-left-by-a-failed-commit.metadata.json",
                 meta_dir / "left-by-a-failed-commit-m0.avro",
                 meta_dir / "snap-1-1-left-by-a-failed-commit.avro"]
    for f in leftovers:
        f.write_bytes(b"{}")
        os.utime(f, (hour_ago, hour_ago))
    young = meta_dir / "being-written-m0.avro"
    young.write_bytes(b"{}")
    in_an_hour = time.time() + 3600
    os.utime(young, (in_an_hour, in_an_hour))

    deadline = time.time() + 60
    while any(f.exists() for f in leftovers) and time.time() < deadline:
        time.sleep(0.5)
    assert not any(f.exists() for f in leftovers), "failed commits' files swept"
    assert young.exists(), "files younger than the grace period stay"

    def manifest_lists():
        return sorted(p.name for p in meta_dir.glob("snap-*.avro"))

    # Only the live snapshots' manifest lists remain (a round may add one meanwhile).
    deadline = time.time() + 30
    while time.time() < deadline:
        table = catalog.load_table(("kafka", topic))
        live = sorted(Path(s.manifest_list).name for s in table.snapshots())
        if set(live) == set(manifest_lists()) or len(manifest_lists()) <= len(live):
            break
        time.sleep(0.5)
    table = catalog.load_table(("kafka", topic))
    live = {Path(s.manifest_list).name for s in table.snapshots()}
    assert len(live) <= 5, live
    assert set(manifest_lists()) - live == set(), "expired snapshots' manifest lists deleted"
    assert len(list(meta_dir.glob("*.metadata.json"))) <= 1 + len(table.metadata.metadata_log)

    got = wait_for_rows(catalog, topic, len(acked))
    assert sorted(got) == sorted(acked)
    assert duckdb_count(table.metadata_location.removeprefix("file://")) == len(acked)


def test_a_standalone_compactor_folds_and_collects_the_wal(make_broker, postgres_url, tmp_path):
    """Brokers with `compaction=false` and one `icestream compactor` process (sharing the
    PostgreSQL metadata store and the object store): the compactor folds the topic into its
    table and deletes the WAL segments its rounds released. The broker's own collector is
    held off (one pass an hour), so what goes is the compactor's doing."""
    import os
    import signal
    broker = make_broker({"metadata": postgres_url, "compaction": "false",
                          "gc_interval_ms": 3_600_000, "segment_grace_ms": 10_000})
    create_topic(broker.bootstrap, "alone", 2)
    records = make_records(2000, 2, seed=93)
    acked, errors = produce(broker.bootstrap, "alone", records)
    assert not errors
    wal = Path(broker.data_dir) / "objects" / "wal"

    def segments():
        return [p for p in wal.iterdir() if p.suffix == ".seg"] if wal.exists() else []

    assert segments(), "the records were written to WAL segments"
    args = [icestream_bin(), "compactor", "--data-dir", str(broker.data_dir)]
    for k, v in {"metadata": postgres_url, "compaction_interval_ms": 300,
                 "gc_interval_ms": 300, "segment_grace_ms": 10_000}.items():
        args += ["--set", f"{k}={v}"]
    log = open(tmp_path / "compactor.log", "ab")
    env = {**os.environ, "RUST_LOG": "info"}
    compactor = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        table = wait_for_rows(sql_catalog(broker), "alone", len(acked))
        for k, rec in acked.items():
            assert table[k] == expected_tuple(rec), f"row {k} differs"
        deadline = time.time() + 60
        while time.time() < deadline and segments():
            assert compactor.poll() is None, (tmp_path / "compactor.log").read_text()
            time.sleep(0.3)
        assert not segments(), "the compactor did not collect the WAL it released"
        assert "wal_gc.pass" in (tmp_path / "compactor.log").read_text()
        # Consumers read it all back from the table's files.
        assert_same(acked, consume(broker.bootstrap, "alone", 2, len(acked)))
    finally:
        compactor.send_signal(signal.SIGTERM)
        assert compactor.wait(timeout=30) == 0
