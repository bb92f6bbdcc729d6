"""Clients older than Kafka 0.11: message format v0/v1 (Produce v0-v2, Fetch v0-v3,
ListOffsets v0, OffsetCommit v0-v1), spoken by kafka-python pinned to old broker versions
and by librdkafka with `api.version.request=false`. Produced message sets become v2
batches (keys, values and v1 timestamps kept); fetched batches go back as message sets of
the version the client asked for. Modern clients and the table see the same records."""

import json
import os
import struct
import subprocess
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from rawkafka import Conn, nbytes, string
from tables import sql_catalog, wait_for_rows
from workload import consume, create_topic

# (kafka-python api_version, codec): magic 0 up to 0.9, magic 1 from 0.10.
KAFKA_PYTHON = [
    ((0, 8, 1), None),  # OffsetCommit v0, OffsetFetch v0
    ((0, 8, 2), None),
    ((0, 9), "gzip"),
    ((0, 9), "lz4"),  # magic 0 LZ4 frames carry a wrong header checksum (KIP-57)
    ((0, 10, 0), "snappy"),
    ((0, 10, 1), "gzip"),
    ((0, 10, 1), None),
]


def old_records(n):
    """(partition, key, value, timestamp ms); every 37th value is a tombstone."""
    now = int(time.time() * 1000)
    return [(i % 2, f"key-{i}".encode(),
             None if i % 37 == 5 else (f"value-{i}-".encode() * (i % 9 + 1)), now - 1000 + i)
            for i in range(400)]


@pytest.mark.parametrize("api_version,codec", KAFKA_PYTHON,
                         ids=[f"{'.'.join(map(str, v))}-{c}" for v, c in KAFKA_PYTHON])
def test_kafka_python_old_protocols_round_trip(broker, api_version, codec):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition as KTP

    magic = 1 if api_version >= (0, 10) else 0
    topic = f"old-{'-'.join(map(str, api_version))}-{codec}"
    create_topic(broker.bootstrap, topic, 2)
    records = old_records(400)

    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, api_version=api_version,
                             compression_type=codec, acks="all", linger_ms=5)
    sent = {}
    futures = [(p, k, v, ts, producer.send(topic, key=k, value=v, partition=p, timestamp_ms=ts))
               for p, k, v, ts in records]
    producer.flush()
    for p, k, v, ts, f in futures:
        md = f.get(timeout=30)
        assert md.partition == p
        sent[(p, md.offset)] = (k, v, ts if magic == 1 else -1)
    producer.close()
    for p in range(2):
        offsets = sorted(o for (q, o) in sent if q == p)
        assert offsets == list(range(len(offsets))), "offsets are dense from 0"

    # A modern client reads the converted batches: same keys, values and (v1) timestamps.
    modern = consume(broker.bootstrap, topic, 2, len(sent))
    assert {k: (m[0], m[1], m[3]) for k, m in modern.items()} == sent

    # Records written by a modern client (with headers) reach the old client too.
    p = Producer({"bootstrap.servers": broker.bootstrap})
    newer = {}
    for i in range(50):
        p.produce(topic, key=f"new-{i}".encode(), value=f"new-value-{i}".encode(),
                  partition=i % 2, headers=[("h", b"dropped for old clients")],
                  on_delivery=lambda err, msg: newer.__setitem__(
                      (msg.partition(), msg.offset()), (msg.key(), msg.value())))
    assert p.flush(30) == 0 and len(newer) == 50

    group = f"old-group-{topic}"
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, api_version=api_version,
                             group_id=group, enable_auto_commit=False,
                             auto_offset_reset="earliest", consumer_timeout_ms=10000,
                             fetch_max_wait_ms=100)
    consumer.assign([KTP(topic, 0), KTP(topic, 1)])
    got = {}
    want = {**{k: (v[0], v[1]) for k, v in sent.items()}, **newer}
    for msg in consumer:
        key = (msg.partition, msg.offset)
        assert key not in got, f"{key} delivered twice"
        got[key] = (msg.key, msg.value)
        if magic == 1 and key in sent:
            assert msg.timestamp == sent[key][2]
        if len(got) == len(want):
            break
    assert got == want
    # Commit (OffsetCommit v1 for 0.8.2, v2 after), then a modern client sees the positions.
    consumer.commit()
    consumer.close()
    ends = {q: max(o for (pp, o) in want if pp == q) + 1 for q in range(2)}
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group})
    committed = c.committed([TopicPartition(topic, q) for q in range(2)], timeout=10)
    c.close()
    assert {tp.partition: tp.offset for tp in committed} == ends

    # And the table holds every record.
    table = wait_for_rows(sql_catalog(broker), topic, len(want))
    assert {k: (r[0], r[1]) for k, r in table.items()} == want


@pytest.mark.parametrize("fallback", ["0.9.0", "0.10.0"])
def test_librdkafka_without_api_versions(broker, fallback):
    """librdkafka told the broker is 0.9/0.10 (no ApiVersions request): Produce v1/v2 with
    message sets, Fetch v1/v2, a group with OffsetCommit v2."""
    topic = f"rdk-{fallback.replace('.', '-')}"
    create_topic(broker.bootstrap, topic, 3)
    old = {"bootstrap.servers": broker.bootstrap, "api.version.request": False,
           "broker.version.fallback": fallback}
    p = Producer({**old, "compression.type": "gzip", "linger.ms": 5})
    acked = {}
    for i in range(3000):
        p.produce(topic, key=str(i).encode(), value=(b"x" * (i % 100)) + str(i).encode(),
                  partition=i % 3,
                  on_delivery=lambda err, msg: acked.__setitem__(
                      (msg.partition(), msg.offset()), (msg.key(), msg.value(), err)))
    assert p.flush(60) == 0
    assert all(e is None for (_, _, e) in acked.values()) and len(acked) == 3000
    c = Consumer({**old, "group.id": f"g-{topic}", "auto.offset.reset": "earliest",
                  "enable.auto.commit": False})
    c.subscribe([topic])
    got = {}
    deadline = time.time() + 60
    while len(got) < 3000 and time.time() < deadline:
        for msg in c.consume(500, timeout=0.5):
            assert not msg.error(), msg.error()
            got[(msg.partition(), msg.offset())] = (msg.key(), msg.value())
    c.commit(asynchronous=False)
    committed = c.committed([TopicPartition(topic, q) for q in range(3)], timeout=10)
    c.close()
    assert got == {k: (v[0], v[1]) for k, v in acked.items()}
    assert sum(tp.offset for tp in committed) == 3000


def legacy_message(magic, key, value, timestamp=0, attributes=0):
    """One message of format v0/v1 with offset 0, as kafka-python's legacy builder makes."""
    from kafka.record.legacy_records import LegacyRecordBatchBuilder
    b = LegacyRecordBatchBuilder(magic=magic, compression_type=attributes, batch_size=1 << 30)
    b.append(0, timestamp if magic else None, key, value)
    return bytes(b.build())


def produce_legacy(conn, version, topic, records):
    body = struct.pack(">hi", -1, 10_000) + struct.pack(">i", 1) + string(topic)
    body += struct.pack(">i", 1) + struct.pack(">i", 0) + nbytes(records)
    resp = conn.request(0, version, body)
    (n,) = struct.unpack(">i", resp[:4])
    assert n == 1
    name_len = struct.unpack(">h", resp[4:6])[0]
    at = 6 + name_len + 4
    index, error, base = struct.unpack(">ihq", resp[at:at + 14])
    return error, base


def test_damaged_message_sets_are_refused_and_nothing_is_lost(broker):
    topic = "old-bad"
    create_topic(broker.bootstrap, topic, 1)
    conn = Conn(broker.bootstrap)
    good = legacy_message(1, b"k", b"good", int(time.time() * 1000))
    assert produce_legacy(conn, 2, topic, good) == (0, 0)
    # A flipped value byte: CORRUPT_MESSAGE (2), the connection lives on.
    bad = bytearray(good)
    bad[-1] ^= 1
    assert produce_legacy(conn, 2, topic, bytes(bad)) == (2, -1)
    # A message size beyond the set: CORRUPT_MESSAGE.
    long = bytearray(good)
    long[8:12] = struct.pack(">i", 1 << 20)
    assert produce_legacy(conn, 1, topic, bytes(long)) == (2, -1)
    # Magic 0 and 1 mixed in one set: INVALID_RECORD (87).
    mixed = good + legacy_message(0, b"k", b"v0")
    assert produce_legacy(conn, 2, topic, mixed)[0] == 87
    # Message sets need Produce v0-v2: v3 refuses them (INVALID_RECORD, 87).
    body = struct.pack(">h", -1) + struct.pack(">hi", -1, 10_000) + struct.pack(">i", 1)
    body += string(topic) + struct.pack(">i", 1) + struct.pack(">i", 0) + nbytes(good)
    resp = conn.request(0, 3, body)
    assert struct.unpack(">h", resp[4 + 2 + len(topic) + 4 + 4:][:2])[0] == 87
    # A v0 message after the refusals still lands at offset 1.
    assert produce_legacy(conn, 0, topic, legacy_message(0, b"k2", b"after")) == (0, 1)
    conn.close()
    got = consume(broker.bootstrap, topic, 1, 2)
    assert [(m[0], m[1]) for _, m in sorted(got.items())] == [(b"k", b"good"), (b"k2", b"after")]


@pytest.fixture(scope="module")
def go_oldclients(tmp_path_factory):
    """tests/e2e/go/oldclients.go built with Debian's golang, sarama and kafka-go."""
    out = tmp_path_factory.mktemp("go") / "oldclients"
    env = {**os.environ, "GO111MODULE": "off",
           "GOPATH": f"/usr/share/gocode:{out.parent}", "GOCACHE": str(out.parent / "cache")}
    subprocess.run(["go", "build", "-o", str(out), "oldclients.go"], check=True, env=env,
                   cwd=os.path.join(os.path.dirname(__file__), "go"), capture_output=True)
    return str(out)


GO_CLIENTS = [("sarama", "0.8.2.0"), ("sarama", "0.10.0.0"), ("kafka-go", "")]


@pytest.mark.parametrize("client,version", GO_CLIENTS,
                         ids=[f"{c}-{v}" if v else c for c, v in GO_CLIENTS])
def test_debian_go_clients(broker, go_oldclients, client, version):
    topic = f"go-{client}-{version.replace('.', '-')}".rstrip("-")
    group = f"group-{topic}"
    create_topic(broker.bootstrap, topic, 2)
    n = 500
    run = subprocess.run([go_oldclients, "-client", client, "-brokers", broker.bootstrap,
                          "-topic", topic, "-group", group, "-n", str(n),
                          "-version", version or "0.8.2.0"],
                         capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["produced"] == n
    # The Go client read back what it wrote...
    values = sorted(summary["consumed"].values())
    assert values == sorted(f"{client}-{i}=value-{i}" for i in range(n))
    # ...and so does a modern client, at the same offsets.
    modern = consume(broker.bootstrap, topic, 2, n)
    assert {f"{p}:{o}": f"{m[0].decode()}={m[1].decode()}" for (p, o), m in modern.items()} \
        == summary["consumed"]
    # Its commits are the group's positions for a modern client.
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group})
    committed = c.committed([TopicPartition(topic, q) for q in range(2)], timeout=10)
    c.close()
    assert {str(tp.partition): tp.offset for tp in committed} == \
        {str(p): o for p, o in summary["committed"].items()}
    assert sum(tp.offset for tp in committed) == n


@pytest.mark.parametrize("api_version", [(0, 10, 1), (0, 10, 2), (0, 11)],
                         ids=["0.10.1", "0.10.2", "0.11"])
def test_kafka_python_old_admin_protocols(broker, api_version):
    """CreateTopics v0 (0.10.1), v1 (0.10.2) and v2 (0.11), DeleteTopics v0-v1,
    DescribeConfigs v0 (0.11), with their errors."""
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    tag = "-".join(map(str, api_version))
    topic = f"admin-old-{tag}"
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, api_version=api_version)
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1,
                                  topic_configs={"retention.ms": "7200000"})])
    with pytest.raises(TopicAlreadyExistsError):
        admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    # A modern client sees what the old one created.
    md = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(topic, timeout=10)
    assert len(md.topics[topic].partitions) == 3
    if api_version >= (0, 11):
        result = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        text = repr(result)
        assert "retention.ms" in text and "7200000" in text, text
    admin.delete_topics([topic])
    deadline = time.time() + 10
    while time.time() < deadline and topic in admin.list_topics():
        time.sleep(0.2)
    assert topic not in admin.list_topics()
    admin.close()
