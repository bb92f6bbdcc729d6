"""Records to produce, and producing/consuming them with confluent-kafka (librdkafka)."""

import random
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

# Recent enough that the default retention (7 days) keeps the records.
BASE_TS = (int(time.time()) - 3600) * 1000


def make_records(n, partitions, seed=1, max_value=512):
    """Deterministic records covering null keys/values, empty values, binary data and
    headers (duplicate keys, null values)."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        key = None if i % 10 == 3 else f"key-{i}".encode() + rnd.randbytes(rnd.randint(0, 8))
        if i % 17 == 5:
            value = None
        elif i % 23 == 7:
            value = b""
        else:
            value = rnd.randbytes(rnd.randint(1, max_value))
        headers = []
        for h in range(i % 4):
            headers.append((f"h{h % 2}", None if (i + h) % 9 == 0 else rnd.randbytes(rnd.randint(0, 16))))
        out.append({
            "partition": i % partitions,
            "key": key,
            "value": value,
            "headers": headers,
            "timestamp": BASE_TS + i,
        })
    return out


def create_topic(bootstrap, topic, partitions, config=None):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    fs = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1,
                                       config=config or {})])
    fs[topic].result(timeout=30)


def produce(bootstrap, topic, records, **conf):
    """Produces `records`; returns {(partition, offset): record} of the acknowledged ones
    and the list of delivery errors."""
    acked = {}
    errors = []

    def on_delivery(err, msg, rec):
        if err is not None:
            errors.append(err)
        else:
            acked[(msg.partition(), msg.offset())] = rec

    config = {"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True}
    config.update(conf)
    p = Producer(config)
    for rec in records:
        while True:
            try:
                p.produce(topic, key=rec["key"], value=rec["value"], partition=rec["partition"],
                          headers=rec["headers"] or None, timestamp=rec["timestamp"],
                          on_delivery=lambda err, msg, rec=rec: on_delivery(err, msg, rec))
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    remaining = p.flush(120)
    assert remaining == 0, f"{remaining} records not delivered"
    return acked, errors


def consume(bootstrap, topic, partitions, expected, timeout=120, start=None, **conf):
    """Reads partitions from the beginning (or `start` offsets) until `expected` records
    arrived; returns {(partition, offset): message tuple}."""
    config = {"bootstrap.servers": bootstrap, "group.id": f"verify-{time.time_ns()}",
              "enable.auto.commit": False, "auto.offset.reset": "earliest",
              "fetch.wait.max.ms": 100}
    config.update(conf)
    c = Consumer(config)
    offsets = start or {}
    c.assign([TopicPartition(topic, p, offsets.get(p, -2)) for p in range(partitions)])
    got = {}
    deadline = time.time() + timeout
    try:
        while len(got) < expected and time.time() < deadline:
            for msg in c.consume(num_messages=5000, timeout=0.5):
                if msg.error():
                    raise AssertionError(f"consume error: {msg.error()}")
                key = (msg.partition(), msg.offset())
                assert key not in got, f"offset {key} delivered twice"
                got[key] = (msg.key(), msg.value(), list(msg.headers() or []), msg.timestamp()[1])
    finally:
        c.close()
    return got


def expected_tuple(rec):
    return (rec["key"], rec["value"], list(rec["headers"]), rec["timestamp"])


def assert_same(acked, consumed):
    """Every acknowledged record was consumed at its offset with every field equal."""
    missing = [k for k in acked if k not in consumed]
    assert not missing, f"{len(missing)} acknowledged records missing, e.g. {missing[:5]}"
    for k, rec in acked.items():
        assert consumed[k] == expected_tuple(rec), f"record at {k} differs"
    extra = [k for k in consumed if k not in acked]
    assert not extra, f"{len(extra)} records nobody produced, e.g. {extra[:5]}"


def assert_dense(consumed):
    """Offsets are 0..n-1 in every partition."""
    by_partition = {}
    for p, o in consumed:
        by_partition.setdefault(p, []).append(o)
    for p, offs in by_partition.items():
        offs.sort()
        assert offs == list(range(len(offs))), f"partition {p} offsets are not dense"
