"""Incremental fetch sessions (KIP-227) with the clients that use them: kafka-python and the
Java client (kafka-clients 3.9.1). librdkafka sends sessionless fetches, which the other
tests cover.

The broker's metrics say whether the session was used: icestream_fetch_incremental_requests_total
counts requests served from a session, icestream_fetch_sessions and
icestream_fetch_session_partitions what the cache holds."""

import time

import pytest

import javakit
from helpers import admin_settings, metric
from workload import BASE_TS, create_topic, produce


def records_for(partitions, start, count, pad=0):
    """`count` records on each of `partitions`, valued "P-I" for I from `start` (followed by
    ":" and `pad` bytes when `pad`)."""
    tail = ":" + "x" * pad if pad else ""
    return [{"key": str(p).encode(), "value": f"{p}-{i}{tail}".encode(), "partition": p,
             "headers": None, "timestamp": BASE_TS + i}
            for p in partitions for i in range(start, start + count)]


def wait_for(condition, timeout=20, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("slots", [1000, 0])
def test_kafka_python_reads_through_an_incremental_session(make_broker, slots):
    """kafka-python (incremental fetch sessions on by default) reads 60 partitions: first
    everything there, then records produced while it polls, then — assigned only ten of the
    partitions — only those ten's new records, the session forgetting the other 50. With
    `fetch_session_cache_slots=0` the broker keeps no session and the client reads the same
    records with full requests."""
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KTP

    broker = make_broker(admin_settings({"fetch_session_cache_slots": slots}))
    topic, partitions = "sessions-kp", 60
    create_topic(broker.bootstrap, topic, partitions)
    # 100-byte values: a partition's records never fit in one 256-byte partition answer,
    # so reading them takes many fetches (each returning one oversized batch, KIP-74).
    acked, errors = produce(broker.bootstrap, topic,
                            records_for(range(partitions), 0, 10, pad=100))
    assert not errors and len(acked) == partitions * 10

    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False,
                             auto_offset_reset="earliest", fetch_max_wait_ms=200,
                             max_partition_fetch_bytes=256)
    got = {p: [] for p in range(partitions)}

    def read(count, timeout=60):
        n = 0
        deadline = time.time() + timeout
        while n < count and time.time() < deadline:
            for tp, msgs in consumer.poll(timeout_ms=200).items():
                for m in msgs:
                    assert m.offset == len(got[tp.partition]), (tp, m.offset)
                    got[tp.partition].append(m.value.decode().split(":")[0])
                    n += 1
        assert n == count, f"read {n} of {count} records"

    try:
        consumer.assign([KTP(topic, p) for p in range(partitions)])
        consumer.seek_to_beginning()
        read(partitions * 10)
        assert got == {p: [f"{p}-{i}" for i in range(10)] for p in range(partitions)}
        if slots:
            # The later requests were incremental ones of one session, which holds all 60
            # partitions once the client has no undelivered records (kafka-python leaves
            # partitions with buffered records out of its requests, and so out of the
            # session, until they are delivered).
            assert metric(broker, "icestream_fetch_incremental_requests_total") > 0
            wait_for(lambda: metric(broker, "icestream_fetch_session_partitions") == partitions,
                     what="the session to hold every partition")
            assert metric(broker, "icestream_fetch_sessions") == 1
        else:
            assert metric(broker, "icestream_fetch_incremental_requests_total") == 0
            assert metric(broker, "icestream_fetch_sessions") == 0
        incremental = metric(broker, "icestream_fetch_incremental_requests_total")

        # New records on three partitions reach the polling consumer.
        acked, errors = produce(broker.bootstrap, topic, records_for([0, 7, 59], 10, 5))
        assert not errors and len(acked) == 15
        read(15)
        for p in [0, 7, 59]:
            assert got[p] == [f"{p}-{i}" for i in range(15)]
        if slots:
            wait_for(lambda: metric(broker, "icestream_fetch_incremental_requests_total")
                     > incremental, what="more incremental fetches")

        # Ten partitions only, at their positions: the session forgets the other 50.
        consumer.assign([KTP(topic, p) for p in range(10)])
        for p in range(10):
            consumer.seek(KTP(topic, p), len(got[p]))
        acked, errors = produce(broker.bootstrap, topic,
                                [{"key": None, "value": f"{p}-{len(got[p])}".encode(),
                                  "partition": p, "headers": None, "timestamp": BASE_TS}
                                 for p in range(partitions)])
        assert not errors and len(acked) == partitions
        read(10)
        for tp, msgs in consumer.poll(timeout_ms=1500).items():
            raise AssertionError(f"unexpected records from {tp}: {msgs}")
        for p in range(partitions):
            want = 16 if p in (0, 7) else 11 if p < 10 else 15 if p == 59 else 10
            assert len(got[p]) == want, (p, got[p])
        if slots:
            wait_for(lambda: metric(broker, "icestream_fetch_session_partitions") == 10,
                     what="the session to hold the ten partitions")
            assert metric(broker, "icestream_fetch_sessions") == 1
    finally:
        consumer.close()


@pytest.mark.skipif(not javakit.have_jdk(), reason="no JDK (javac): apt-get install openjdk-17-jdk-headless")
def test_java_consumer_reads_through_an_incremental_session(make_broker, tmp_path):
    """The Java client (kafka-clients 3.9.1) reads 100 partitions through one session, with
    records produced while it polls and then a narrower assignment, and closes its session
    when it closes."""
    broker = make_broker(admin_settings())
    topic, partitions, per = "sessions-java", 100, 20
    create_topic(broker.bootstrap, topic, partitions)
    acked, errors = produce(broker.bootstrap, topic, records_for(range(partitions), 0, per))
    assert not errors and len(acked) == partitions * per
    proc = javakit.run_kafka_program(
        "ManyPartitions", [broker.bootstrap, topic, partitions, per, 10], tmp_path, "sessions")
    events = proc.events()
    failed = [e for e in events if not e.get("ok", False)]
    assert not failed, f"{failed[0]}\n{proc.describe()}"
    steps = {e["step"]: e for e in events}
    assert {"read_all", "read_new", "narrowed", "done"} <= steps.keys(), proc.describe()
    assert proc.proc.returncode == 0, proc.describe()
    assert steps["read_all"]["records"] == partitions * per
    assert steps["narrowed"]["partitions"] == list(range(10))
    # The program reads with small responses, so most of its fetches were incremental;
    # closing the consumer closed the session.
    assert metric(broker, "icestream_fetch_incremental_requests_total") >= 20
    wait_for(lambda: metric(broker, "icestream_fetch_sessions") == 0,
             what="the Java consumer to close its session")
