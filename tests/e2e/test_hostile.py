"""Input built to hurt: requests whose lengths lie, record batches whose CRC-valid headers
lie about their records, compression bombs, a header timestamp of -1 (as sarama sends),
and a reader holding the SQLite catalog. Each gets a clear error or is handled; the broker
stays up, clients that nobody here wrote keep working, nothing acknowledged is lost."""

import gzip
import sqlite3
import struct
import threading
import time

from confluent_kafka import Consumer, TopicPartition
from kafka.record.default_records import DefaultRecordBatchBuilder
from kafka.record.util import calc_crc32c

from helpers import admin_settings, metric
from rawkafka import Conn, Reader, batch, fetch_v4, produce_v3, string
from tables import rows, sql_catalog, wait_for_rows
from test_bad_input import CORRUPT_MESSAGE, healthy
from workload import create_topic, produce

LAST_OFFSET_DELTA = 23
MAX_TIMESTAMP = 35
RECORD_COUNT = 57


def lie(b, patches):
    """Rewrites header fields of a v2 batch and fixes its CRC, as a hostile client would."""
    b = bytearray(b)
    for at, data in patches:
        b[at:at + len(data)] = data
    b[17:21] = struct.pack(">I", calc_crc32c(memoryview(b)[21:]))
    return bytes(b)


def fresh_batch(values, timestamp_ms, compression=0):
    b = DefaultRecordBatchBuilder(magic=2, compression_type=compression, is_transactional=False,
                                  producer_id=-1, producer_epoch=-1, base_sequence=-1,
                                  batch_size=1 << 30)
    for i, v in enumerate(values):
        b.append(i, timestamp_ms + i, None, v, [])
    return bytes(b.build())


def test_lying_request_lengths_close_the_connection_and_clients_go_on(make_broker):
    broker = make_broker(admin_settings())
    create_topic(broker.bootstrap, "canary", 1)
    hostile = [
        # The 22-byte ListOffsets v1 that aborted every broker: topics = 0x7fffffff.
        bytes.fromhex("00000012" "00020001" "00000001" "ffff" "ffffffff" "7fffffff"),
    ]
    # Produce v3, Metadata v1, OffsetCommit v2, FindCoordinator v1 (no array: a string
    # length), JoinGroup v1: the first length of each replaced by a lie.
    for api, version, prefix in [
        (0, 3, string(None) + struct.pack(">hi", -1, 1000)),   # topic_data array
        (3, 1, b""),                                            # topics array
        (8, 2, string("g") + struct.pack(">i", -1) + string("m") + struct.pack(">q", -1)),
        (10, 1, b""),                                           # key string
        (11, 1, string("g") + struct.pack(">ii", 10_000, 10_000) + string("")
         + string("consumer")),                                 # protocols array
    ]:
        for claim in (0x7FFFFFFF, -2, 5):
            length = struct.pack(">h", claim if claim != 0x7FFFFFFF else 0x7FFF) \
                if api == 10 else struct.pack(">i", claim)
            header = struct.pack(">hhi", api, version, 7) + string("hostile")
            payload = header + prefix + length
            hostile.append(struct.pack(">i", len(payload)) + payload)
    for frame in hostile:
        c = Conn(broker.bootstrap)
        c.send_raw(frame)
        assert c.closed_by_peer(), frame.hex()
        c.close()
    assert broker.alive()
    assert metric(broker, "icestream_malformed_requests_total") >= len(hostile)
    # librdkafka still produces and consumes.
    acked, errors = produce(broker.bootstrap, "canary",
                            [{"key": b"k", "value": b"after", "partition": 0, "headers": [],
                              "timestamp": 0}])
    assert not errors and len(acked) == 1
    healthy(broker)


def test_batches_lying_about_their_records_are_refused_and_nothing_is_lost(make_broker):
    broker = make_broker(admin_settings())
    create_topic(broker.bootstrap, "liars", 1)
    create_topic(broker.bootstrap, "canary", 1)
    catalog = sql_catalog(broker)
    c = Conn(broker.bootstrap)
    assert produce_v3(c, "liars", 0, batch([b"good-0"]))[0] == 0
    one = batch([b"x"])
    lies = {
        # Regression: acknowledged, then aborted the compactor on every start.
        "count 2^31-1": lie(one, [(LAST_OFFSET_DELTA, struct.pack(">i", 2**31 - 2)),
                                  (RECORD_COUNT, struct.pack(">i", 2**31 - 1))]),
        # Regression: acknowledged, then stalled the topic's compaction forever.
        "count 5 of 1": lie(one, [(LAST_OFFSET_DELTA, struct.pack(">i", 4)),
                                  (RECORD_COUNT, struct.pack(">i", 5))]),
        "count 0 of 1": lie(one, [(RECORD_COUNT, struct.pack(">i", 0))]),
        "delta past count": lie(batch([b"a", b"b"]), [(LAST_OFFSET_DELTA, struct.pack(">i", 3))]),
        # The batch is one byte shorter (its length field agrees) than its record says.
        "record cut short": lie(one[:-1], [(8, struct.pack(">i", len(one) - 1 - 12))]),
    }
    # A gzip bomb well within message_max_bytes: 100 MB of zeros in ~100 KB.
    b = DefaultRecordBatchBuilder(magic=2, compression_type=1, is_transactional=False,
                                  producer_id=-1, producer_epoch=-1, base_sequence=-1,
                                  batch_size=1 << 30)
    b.append(0, int(time.time() * 1000), None, b"\x00" * (100 << 20), [])
    bomb = bytes(b.build())
    assert len(bomb) < 1_000_000
    lies["gzip bomb"] = bomb
    for name, data in lies.items():
        err, base = produce_v3(c, "liars", 0, data)
        assert err == CORRUPT_MESSAGE, f"{name}: error {err}"
        assert base == -1, name
    assert produce_v3(c, "liars", 0, batch([b"good-1"])) == (0, 1)
    # The log and the table hold exactly the good records.
    err, hw, records = fetch_v4(c, "liars", 0, 0)
    assert err == 0 and hw == 2
    table = wait_for_rows(catalog, "liars", 2)
    assert sorted(v[1] for v in table.values()) == [b"good-0", b"good-1"]
    # And after a restart.
    broker.stop()
    broker.start()
    healthy(broker)
    c = Conn(broker.bootstrap)
    assert produce_v3(c, "liars", 0, batch([b"good-2"])) == (0, 2)
    assert len(wait_for_rows(catalog, "liars", 3)) == 3


def test_a_minus_one_max_timestamp_is_recomputed_and_survives_retention(make_broker):
    # Regression: sarama's max_timestamp = -1 was indexed as is; retention then moved the
    # log start past records produced seconds earlier, and offsets_for_times missed them.
    broker = make_broker(admin_settings())
    create_topic(broker.bootstrap, "sarama", 1, {"retention.ms": "60000"})
    now = int(time.time() * 1000)
    sarama = lie(fresh_batch([b"go-1", b"go-2", b"go-3"], now), [(MAX_TIMESTAMP, struct.pack(">q", -1))])
    c = Conn(broker.bootstrap)
    assert produce_v3(c, "sarama", 0, sarama) == (0, 0)
    err, hw, stored = fetch_v4(c, "sarama", 0, 0)
    assert err == 0 and hw == 3
    (max_ts,) = struct.unpack(">q", stored[MAX_TIMESTAMP:MAX_TIMESTAMP + 8])
    assert max_ts == now + 2, "the stored header carries the records' max timestamp"
    assert calc_crc32c(memoryview(stored)[21:struct.unpack(">i", stored[8:12])[0] + 12]) == \
        struct.unpack(">I", stored[17:21])[0], "and a valid CRC"
    # Several retention passes (every 30 rounds of 100 ms) after the rows reach the table.
    wait_for_rows(sql_catalog(broker), "sarama", 3)
    time.sleep(8)
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "sarama-check",
                         "enable.auto.commit": False})
    low, high = consumer.get_watermark_offsets(TopicPartition("sarama", 0), timeout=10)
    assert (low, high) == (0, 3), "retention kept the fresh records"
    found = consumer.offsets_for_times([TopicPartition("sarama", 0, now + 1)], timeout=10)
    assert found[0].offset == 1
    consumer.assign([TopicPartition("sarama", 0, 0)])
    values = []
    deadline = time.time() + 30
    while len(values) < 3 and time.time() < deadline:
        m = consumer.poll(1)
        if m is not None and not m.error():
            values.append(m.value())
    consumer.close()
    assert values == [b"go-1", b"go-2", b"go-3"]


def test_log_append_time_topics_are_stamped_by_the_broker(make_broker):
    broker = make_broker(admin_settings())
    create_topic(broker.bootstrap, "stamped", 1, {"message.timestamp.type": "LogAppendTime"})
    c = Conn(broker.bootstrap)
    before = int(time.time() * 1000)
    assert produce_v3(c, "stamped", 0, batch([b"a", b"b"])) == (0, 0)
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "stamp-check"})
    consumer.assign([TopicPartition("stamped", 0, 0)])
    got = []
    deadline = time.time() + 30
    while len(got) < 2 and time.time() < deadline:
        m = consumer.poll(1)
        if m is not None and not m.error():
            got.append(m.timestamp())
    consumer.close()
    assert len(got) == 2
    for ts_type, ts in got:
        assert ts_type == 2, "TIMESTAMP_LOG_APPEND_TIME"
        assert before <= ts <= int(time.time() * 1000)


def test_a_reader_holding_the_sqlite_catalog_loses_no_rows(make_broker):
    # Regression: a 12 s read transaction on catalog.db during produce lost 8,000 rows.
    broker = make_broker(admin_settings())
    create_topic(broker.bootstrap, "held", 2)
    catalog = sql_catalog(broker)
    records = [{"key": f"k{i}".encode(), "value": f"v{i}".encode(), "partition": i % 2,
                "headers": [], "timestamp": 0} for i in range(4000)]
    acked, errors = produce(broker.bootstrap, "held", records[:1000])
    wait_for_rows(catalog, "held", 1000)
    db = sqlite3.connect(str(broker.data_dir / "catalog.db"), isolation_level=None)
    db.execute("BEGIN")
    assert db.execute("SELECT count(*) FROM iceberg_tables").fetchone()[0] >= 1
    more, more_errors = produce(broker.bootstrap, "held", records[1000:])
    time.sleep(10)
    db.execute("COMMIT")
    db.close()
    acked.update(more)
    assert not errors and not more_errors and len(acked) == 4000
    table = wait_for_rows(catalog, "held", 4000)
    assert len(table) == 4000
    assert set(table) == set(acked), "every acknowledged record exactly once"
