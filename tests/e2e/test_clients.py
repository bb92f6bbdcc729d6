"""Real clients against a real `icestream serve`: confluent-kafka (librdkafka 2.16),
Debian's kcat (librdkafka 2.0.2), kafka-python and aiokafka."""

import asyncio
import shutil
import subprocess
import time

import pytest
from confluent_kafka import Consumer, TopicPartition

from workload import (BASE_TS, assert_dense, assert_same, consume, create_topic, make_records,
                      produce)

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]


@pytest.mark.parametrize("codec", CODECS)
def test_confluent_roundtrip_every_field(broker, codec):
    topic = f"roundtrip-{codec}"
    create_topic(broker.bootstrap, topic, 8)
    records = make_records(100_000, 8, seed=hash(codec) & 0xffff)
    acked, errors = produce(broker.bootstrap, topic, records, **{"compression.type": codec})
    assert not errors
    assert len(acked) == len(records)
    consumed = consume(broker.bootstrap, topic, 8, len(records))
    assert_same(acked, consumed)
    assert_dense(consumed)


@pytest.mark.parametrize("acks", ["0", "1", "all"])
def test_acks_levels(broker, acks):
    topic = f"acks-{acks}"
    create_topic(broker.bootstrap, topic, 2)
    records = make_records(2000, 2, seed=7)
    conf = {"acks": acks}
    if acks != "all":
        conf["enable.idempotence"] = False
    acked, errors = produce(broker.bootstrap, topic, records, **conf)
    assert not errors
    consumed = consume(broker.bootstrap, topic, 2, len(records))
    assert len(consumed) == len(records)
    if acks != "0":
        assert_same(acked, consumed)
    else:
        # acks=0 reports no offsets: compare contents instead.
        got = sorted(v[1] or b"" for v in consumed.values())
        want = sorted(r["value"] or b"" for r in records)
        assert got == want


def test_eager_writes_answer_each_produce_without_waiting_for_the_interval(make_broker):
    """With `flush_eager_bytes`, a produce that finds no segment write in flight is written
    at once: ten sequential acks=all produces take one PUT and one commit each, not the
    two-second interval (no early-write credits here), and land in ten segments."""
    from confluent_kafka import Producer

    from helpers import admin_settings, metric

    broker = make_broker(admin_settings({"flush_interval_ms": 2000, "flush_burst": 0,
                                         "flush_eager_bytes": 65536}))
    create_topic(broker.bootstrap, "eager", 1)
    puts_before = metric(broker, "icestream_segment_puts_total")
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 0})
    offsets = []
    started = time.monotonic()
    for i in range(10):
        p.produce("eager", f"eager-{i}".encode(),
                  on_delivery=lambda err, msg: offsets.append((err, msg.offset())))
        assert p.flush(30) == 0
    elapsed = time.monotonic() - started
    assert [o for _, o in offsets] == list(range(10)), offsets
    assert all(err is None for err, _ in offsets)
    assert elapsed < 8, f"ten produces took {elapsed:.1f} s: they waited for the interval"
    assert metric(broker, "icestream_segment_puts_total") - puts_before == 10
    consumed = consume(broker.bootstrap, "eager", 1, 10)
    want = sorted(f"eager-{i}".encode() for i in range(10))
    assert sorted(v[1] for v in consumed.values()) == want


def test_an_idempotent_producer_with_five_requests_in_flight_is_answered_without_the_interval(
        make_broker):
    """An idempotent producer keeps at most five requests in flight, and librdkafka sends one
    partition per request: once the fifth is in, nothing more of it can join the segment, so
    the broker writes at once instead of waiting for the (two-second, no early credits)
    flush interval. Each round of five partitions is one segment, answered in well under
    the interval."""
    from confluent_kafka import Producer

    from helpers import admin_settings, metric

    broker = make_broker(admin_settings({"flush_interval_ms": 2000, "flush_burst": 0}))
    create_topic(broker.bootstrap, "waits", 5)
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 0,
                  "enable.idempotence": True})
    delivered = []

    def round_of_five(r):
        for part in range(5):
            p.produce("waits", f"r{r}-p{part}".encode(), partition=part,
                      on_delivery=lambda err, msg: delivered.append((err, msg.partition(),
                                                                     msg.offset())))
        assert p.flush(30) == 0

    round_of_five(0)  # the producer id, and a first write of whatever came first
    puts_before = metric(broker, "icestream_segment_puts_total")
    started = time.monotonic()
    for r in range(1, 6):
        round_of_five(r)
    elapsed = time.monotonic() - started
    assert all(err is None for err, _, _ in delivered), delivered
    assert elapsed < 5, f"five rounds took {elapsed:.1f} s: they waited for the interval"
    assert metric(broker, "icestream_segment_puts_total") - puts_before == 5
    assert sorted((part, off) for _, part, off in delivered) == \
        sorted((part, off) for part in range(5) for off in range(6))
    consumed = consume(broker.bootstrap, "waits", 5, 30)
    want = sorted(f"r{r}-p{part}".encode() for r in range(6) for part in range(5))
    assert sorted(v[1] for v in consumed.values()) == want


def test_consume_from_offset_timestamp_and_latest(broker):
    topic = "positions"
    create_topic(broker.bootstrap, topic, 1)
    records = make_records(1000, 1, seed=3)
    acked, _ = produce(broker.bootstrap, topic, records)
    # From an offset in the middle.
    got = consume(broker.bootstrap, topic, 1, 500, start={0: 500})
    assert sorted(o for _, o in got) == list(range(500, 1000))
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "times"})
    try:
        # By timestamp: exactly the first offset with timestamp >= T.
        for target in [BASE_TS, BASE_TS + 1, BASE_TS + 617, BASE_TS + 999]:
            tp = c.offsets_for_times([TopicPartition(topic, 0, target)], timeout=10)[0]
            assert tp.offset == target - BASE_TS
        beyond = c.offsets_for_times([TopicPartition(topic, 0, BASE_TS + 10_000)], timeout=10)[0]
        assert beyond.offset == -1
        low, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        assert (low, high) == (0, 1000)
    finally:
        c.close()


def test_long_poll_wakes_on_produce(broker):
    """A consumer waiting at the end of the log gets new records promptly."""
    import threading
    import time

    topic = "longpoll"
    create_topic(broker.bootstrap, topic, 1)
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "lp",
                  "fetch.wait.max.ms": 5000, "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, 0)])
    c.consume(timeout=1)  # connect and start fetching at offset 0
    threading.Timer(0.5, lambda: produce(broker.bootstrap, topic, make_records(1, 1))).start()
    start = time.time()
    msgs = []
    while not msgs and time.time() - start < 10:
        msgs = c.consume(timeout=0.2)
    c.close()
    assert msgs and msgs[0].offset() == 0
    assert time.time() - start < 4, "long poll did not wake up on the new record"


def kcat(*args, input=None, timeout=60):
    return subprocess.run(["kcat", *args], input=input, capture_output=True, timeout=timeout)


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat not installed")
@pytest.mark.parametrize("codec", CODECS)
def test_kcat_debian(broker, codec):
    topic = f"kcat-{codec}"
    lines = [f"k{i}:value-{i}-{'x' * (i % 50)}" for i in range(20_000)]
    r = kcat("-b", broker.bootstrap, "-P", "-t", topic, "-K", ":", "-z", codec,
             input="\n".join(lines).encode())
    assert r.returncode == 0, r.stderr.decode()
    r = kcat("-b", broker.bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-q",
             "-f", "%o %k:%s\n")
    assert r.returncode == 0, r.stderr.decode()
    out = r.stdout.decode().splitlines()
    assert out == [f"{i} {line}" for i, line in enumerate(lines)]
    meta = kcat("-b", broker.bootstrap, "-L", "-t", topic).stdout.decode()
    assert f'topic "{topic}" with 1 partitions' in meta


def test_kafka_python_roundtrip_and_admin(broker):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition as KTP
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewPartitions, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    admin.create_topics([NewTopic("kp", num_partitions=3, replication_factor=1,
                                  topic_configs={"retention.ms": "3600000"})])
    configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, "kp")])
    text = repr(configs)
    assert "retention.ms" in text and "3600000" in text
    admin.create_partitions({"kp": NewPartitions(total_count=4)})
    assert len(admin.describe_topics(["kp"])[0]["partitions"]) == 4

    sent = {}
    for codec in ["gzip", "snappy", "lz4", "zstd", None]:
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, compression_type=codec,
                                 acks="all")
        futures = []
        for i in range(500):
            key = f"{codec}-{i}".encode()
            value = f"value-{codec}-{i}".encode() * (i % 7 + 1)
            futures.append((key, value, producer.send("kp", key=key, value=value,
                                                      partition=i % 4,
                                                      headers=[("codec", str(codec).encode())])))
        producer.flush()
        for key, value, f in futures:
            md = f.get(timeout=30)
            sent[(md.partition, md.offset)] = (key, value)
        producer.close()

    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False,
                             auto_offset_reset="earliest", consumer_timeout_ms=5000)
    consumer.assign([KTP("kp", p) for p in range(4)])
    consumer.seek_to_beginning()
    got = {}
    for msg in consumer:
        got[(msg.partition, msg.offset)] = (msg.key, msg.value)
        if len(got) == len(sent):
            break
    consumer.close()
    assert got == sent

    admin.delete_topics(["kp"])
    assert "kp" not in admin.list_topics()
    admin.close()


def test_aiokafka_roundtrip(broker):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.structs import TopicPartition as ATP

    async def run():
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, enable_idempotence=True)
        await producer.start()
        sent = {}
        try:
            for i in range(1000):
                md = await producer.send_and_wait("aio", key=f"k{i}".encode(), value=f"v{i}".encode())
                sent[(md.partition, md.offset)] = (f"k{i}".encode(), f"v{i}".encode())
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False,
                                    auto_offset_reset="earliest")
        await consumer.start()
        got = {}
        try:
            consumer.assign([ATP("aio", 0)])
            await consumer.seek_to_beginning(ATP("aio", 0))
            while len(got) < len(sent):
                batch = await asyncio.wait_for(consumer.getmany(timeout_ms=1000), 30)
                for msgs in batch.values():
                    for m in msgs:
                        got[(m.partition, m.offset)] = (m.key, m.value)
        finally:
            await consumer.stop()
        return sent, got

    sent, got = asyncio.run(run())
    assert got == sent


def test_alter_configs_and_compacted_topics_need_keys(broker):
    """IncrementalAlterConfigs makes a topic compacted; records without a key are then
    refused with INVALID_RECORD naming them, as Kafka does."""
    from confluent_kafka import KafkaError, Producer
    from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry,
                                       ConfigResource)

    create_topic(broker.bootstrap, "compacted", 1)
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    resource = ConfigResource("topic", "compacted", incremental_configs=[
        ConfigEntry("cleanup.policy", "compact",
                    incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("retention.ms", "86400000", incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([resource])[resource].result(timeout=10)
    described = admin.describe_configs([ConfigResource("topic", "compacted")])
    configs = list(described.values())[0].result(timeout=10)
    assert configs["cleanup.policy"].value == "compact"
    assert configs["retention.ms"].value == "86400000"

    results = []
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
    for key in [b"k", None, b"k2"]:
        p.produce("compacted", key=key, value=b"v", on_delivery=lambda e, m: results.append(e))
        p.flush(10)
    assert results[0] is None and results[2] is None
    assert results[1] is not None and results[1].code() == KafkaError.INVALID_RECORD

    bad = ConfigResource("topic", "compacted", incremental_configs=[
        ConfigEntry("no.such.config", "1", incremental_operation=AlterConfigOpType.SET)])
    try:
        admin.incremental_alter_configs([bad])[bad].result(timeout=10)
        raise AssertionError("an unknown config was accepted")
    except Exception as e:  # KafkaException(INVALID_CONFIG)
        assert "INVALID_CONFIG" in str(e) or "unknown topic config" in str(e)


def test_fetch_max_bytes_bounds_the_response(broker):
    """librdkafka's 0082: 900 KB records in three partitions, read with fetch.max.bytes
    1 MB and receive.message.max.bytes 1 MB + 512. Only the first batch of the first
    non-empty partition may go past the limit (KIP-74), so every response fits what the
    consumer can receive and every record arrives."""
    topic = "fetch-max-bytes"
    create_topic(broker.bootstrap, topic, 3)
    size = 900 * 1024
    records = [{"key": None, "value": bytes([p * 16 + i]) * size, "partition": p,
                "headers": None, "timestamp": 0}
               for p in range(3) for i in range(4)]
    acked, errors = produce(broker.bootstrap, topic, records)
    assert not errors and len(acked) == len(records)
    transport_errors = []
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "fetch-max-bytes",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                  "max.partition.fetch.bytes": 20_000_000, "fetch.max.bytes": 1_000_000,
                  "receive.message.max.bytes": 1_000_512,
                  "error_cb": lambda err: transport_errors.append(str(err))})
    got = {}
    try:
        c.subscribe([topic])
        deadline = time.time() + 60
        while len(got) < len(records) and time.time() < deadline:
            for msg in c.consume(num_messages=10, timeout=0.5):
                assert not msg.error(), msg.error()
                got[(msg.partition(), msg.offset())] = msg.value()
    finally:
        c.close()
    assert not transport_errors, transport_errors
    assert len(got) == len(records)
    for (p, _), value in got.items():
        assert len(value) == size and value[0] // 16 == p


def test_message_format_version_is_accepted_as_kafka_3_does(broker):
    """librdkafka's 0092 sets message.format.version on its topic; Kafka 3 accepts it
    (and stores every record as v2), so icestream does too, and refuses nonsense."""
    from confluent_kafka.admin import AdminClient, ConfigResource

    create_topic(broker.bootstrap, "old-format", 1, {"message.format.version": "0.10.0"})
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    resource = ConfigResource("topic", "old-format",
                              set_config={"message.format.version": "0.11.0-IV2"})
    admin.alter_configs([resource])[resource].result(timeout=10)
    described = admin.describe_configs([ConfigResource("topic", "old-format")])
    configs = list(described.values())[0].result(timeout=10)
    assert configs["message.format.version"].value == "0.11.0-IV2"
    # librdkafka's 0092 sets four segments, which Kafka reads as 0.10.0.
    legacy = ConfigResource("topic", "old-format",
                            set_config={"message.format.version": "0.10.0.0"})
    admin.alter_configs([legacy])[legacy].result(timeout=10)
    bad = ConfigResource("topic", "old-format", set_config={"message.format.version": "soon"})
    with pytest.raises(Exception, match="message.format.version"):
        admin.alter_configs([bad])[bad].result(timeout=10)
    acked, errors = produce(broker.bootstrap, "old-format", make_records(10, 1))
    assert not errors and len(acked) == 10


def test_delete_records_moves_the_log_start_and_the_table_keeps_its_rows(make_broker):
    """DeleteRecords through confluent-kafka's AdminClient (as Kafka Streams purges its
    repartition topics): the low watermark moves, consumers and ListOffsets start there,
    an offset past the high watermark is refused, -1 means the high watermark, and the
    table still holds every row (as under retention)."""
    from confluent_kafka import KafkaException, OFFSET_END
    from confluent_kafka.admin import AdminClient, OffsetSpec

    from tables import sql_catalog, wait_for_rows

    broker = make_broker({"compaction_interval_ms": 300})
    topic = "purge"
    create_topic(broker.bootstrap, topic, 2)
    records = make_records(400, 2, seed=48)
    acked, errors = produce(broker.bootstrap, topic, records)
    assert not errors and len(acked) == 400
    ends = {p: 1 + max(o for (q, o) in acked if q == p) for p in range(2)}
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})

    deleted = admin.delete_records([TopicPartition(topic, 0, 150)])
    [(tp, fut)] = deleted.items()
    assert fut.result(timeout=10).low_watermark == 150
    earliest = admin.list_offsets({TopicPartition(topic, 0): OffsetSpec.earliest()})
    assert list(earliest.values())[0].result(timeout=10).offset == 150

    consumed = consume(broker.bootstrap, topic, 2, 400 - 150)
    assert min(o for (p, o) in consumed if p == 0) == 150
    assert {k for k in consumed if k[0] == 0} == {(0, o) for o in range(150, ends[0])}
    assert {k for k in consumed if k[0] == 1} == {(1, o) for o in range(ends[1])}

    # Reading below the log start is out of range: the consumer resets to it.
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "purge-reader",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, 10)])
    first = None
    deadline = time.time() + 30
    while first is None and time.time() < deadline:
        for m in c.consume(10, timeout=0.5):
            assert not m.error(), m.error()
            first = m.offset() if first is None else first
    c.close()
    assert first == 150

    # Never backwards; past the high watermark is OFFSET_OUT_OF_RANGE; -1 is the end.
    back = admin.delete_records([TopicPartition(topic, 0, 20)])
    assert list(back.values())[0].result(timeout=10).low_watermark == 150
    past = admin.delete_records([TopicPartition(topic, 1, ends[1] + 5)])
    with pytest.raises(KafkaException, match="OFFSET_OUT_OF_RANGE|out of range"):
        list(past.values())[0].result(timeout=10)
    everything = admin.delete_records([TopicPartition(topic, 1, OFFSET_END)])
    assert list(everything.values())[0].result(timeout=10).low_watermark == ends[1]
    unknown = admin.delete_records([TopicPartition("no-such-topic", 0, 1)])
    with pytest.raises(KafkaException):
        list(unknown.values())[0].result(timeout=10)

    # The table keeps every row, and new records still arrive after the purge.
    more, errors = produce(broker.bootstrap, topic, make_records(20, 2, seed=49))
    assert not errors
    table = wait_for_rows(sql_catalog(broker), topic, 420)
    assert set(acked) | set(more) == set(table)


def test_authorized_operations_without_an_authorizer(broker):
    """KIP-430 with no authorizer: every operation Kafka defines for the resource type is
    allowed, and is reported as such (librdkafka's 0081 checks these sets)."""
    from confluent_kafka import TopicCollection
    from confluent_kafka.admin import AclOperation, AdminClient

    create_topic(broker.bootstrap, "ops", 1)
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    topic = admin.describe_topics(TopicCollection(["ops"]), include_authorized_operations=True)
    assert set(topic["ops"].result(timeout=10).authorized_operations) == {
        AclOperation.READ, AclOperation.WRITE, AclOperation.CREATE, AclOperation.DESCRIBE,
        AclOperation.DELETE, AclOperation.ALTER, AclOperation.DESCRIBE_CONFIGS,
        AclOperation.ALTER_CONFIGS}
    cluster = admin.describe_cluster(include_authorized_operations=True).result(timeout=10)
    assert set(cluster.authorized_operations) == {
        AclOperation.CREATE, AclOperation.CLUSTER_ACTION, AclOperation.DESCRIBE_CONFIGS,
        AclOperation.ALTER_CONFIGS, AclOperation.IDEMPOTENT_WRITE, AclOperation.ALTER,
        AclOperation.DESCRIBE}
    # Not asked for: not computed.
    plain = admin.describe_cluster().result(timeout=10)
    assert plain.authorized_operations is None or not plain.authorized_operations


def test_timestamp_bounds_and_log_append_time(make_broker):
    """`message.timestamp.before.max.ms` / `after.max.ms` (and the deprecated
    `difference.max.ms`) refuse create times outside the window with INVALID_TIMESTAMP and
    store nothing of the refused batch; a LogAppendTime topic carries the broker's time to
    consumers and into the table's `timestamp` column."""
    from confluent_kafka import KafkaError

    from tables import sql_catalog, wait_for_rows

    broker = make_broker({"compaction_interval_ms": 300})
    create_topic(broker.bootstrap, "bounded", 1, {"message.timestamp.before.max.ms": "3600000",
                                                 "message.timestamp.after.max.ms": "60000"})
    create_topic(broker.bootstrap, "bounded-old-style", 1,
                 {"message.timestamp.difference.max.ms": "60000"})
    now = int(time.time() * 1000)

    def one(topic, ts):
        rec = {"key": b"k", "value": str(ts).encode(), "partition": 0, "headers": None,
               "timestamp": ts}
        acked, errors = produce(broker.bootstrap, topic, [rec], **{"enable.idempotence": False})
        return [e.code() for e in errors] or list(acked)

    assert one("bounded", now) == [(0, 0)]
    assert one("bounded", now - 1_800_000) == [(0, 1)], "half an hour ago is inside"
    assert one("bounded", now - 7_200_000) == [KafkaError.INVALID_TIMESTAMP]
    assert one("bounded", now + 600_000) == [KafkaError.INVALID_TIMESTAMP]
    assert one("bounded", now + 1_000) == [(0, 2)]
    assert one("bounded-old-style", now - 120_000) == [KafkaError.INVALID_TIMESTAMP]
    assert one("bounded-old-style", now - 30_000) == [(0, 0)]
    got = consume(broker.bootstrap, "bounded", 1, 3)
    assert sorted(got) == [(0, 0), (0, 1), (0, 2)], "nothing of a refused batch is stored"

    create_topic(broker.bootstrap, "appended", 1, {"message.timestamp.type": "LogAppendTime"})
    before = int(time.time() * 1000)
    assert one("appended", 1_000_000_000_000) == [(0, 0)], "any create time is accepted"
    after = int(time.time() * 1000)
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "appended"})
    c.assign([TopicPartition("appended", 0, 0)])
    stamped = None
    deadline = time.time() + 30
    while stamped is None and time.time() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            stamped = m.timestamp()
    c.close()
    assert stamped is not None and stamped[0] == 2, "TIMESTAMP_LOG_APPEND_TIME"
    assert before <= stamped[1] <= after
    rows = wait_for_rows(sql_catalog(broker), "appended", 1)
    assert rows[(0, 0)][3] == stamped[1], "the table holds the broker's time"


def test_dynamic_broker_configs_apply_cluster_wide(make_broker):
    """AlterConfigs / IncrementalAlterConfigs on the broker resource: message.max.bytes
    and log.retention.ms take effect at once, DescribeConfigs shows them as dynamic
    cluster defaults, a config icestream cannot change is refused with INVALID_CONFIG
    (and nothing of that resource is applied); kafka-python's legacy AlterConfigs too."""
    from confluent_kafka import KafkaError, KafkaException, Producer
    from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry,
                                       ConfigResource, ListOffsetsResultInfo, OffsetSpec)
    from kafka import KafkaAdminClient
    from kafka.admin import ConfigResource as KpResource, ConfigResourceType

    from tables import sql_catalog, wait_for_rows

    broker = make_broker({"compaction_interval_ms": 200})
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    create_topic(broker.bootstrap, "big", 1)

    def send_big():
        p = Producer({"bootstrap.servers": broker.bootstrap, "message.max.bytes": 3_000_000,
                      "enable.idempotence": False, "compression.type": "none"})
        errors = []
        p.produce("big", value=bytes(1_500_000), partition=0,
                  on_delivery=lambda err, msg: errors.append(err))
        p.flush(30)
        return errors[0].code() if errors[0] else None

    assert send_big() == KafkaError.MSG_SIZE_TOO_LARGE

    def incremental(*entries, name="0"):
        resource = ConfigResource("broker", name, incremental_configs=[
            ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in entries])
        return admin.incremental_alter_configs([resource])[resource].result(timeout=10)

    # One config icestream cannot change refuses the whole resource, naming it.
    with pytest.raises(KafkaException, match="num.io.threads") as refused:
        incremental(("message.max.bytes", "2000000"), ("num.io.threads", "16"))
    assert refused.value.args[0].code() == KafkaError.INVALID_CONFIG
    assert send_big() == KafkaError.MSG_SIZE_TOO_LARGE, "nothing was applied"
    with pytest.raises(KafkaException):
        incremental(("log.retention.ms", "-5"))

    incremental(("message.max.bytes", "2000000"), name="0")
    assert send_big() is None, "the new limit holds at once"
    described = admin.describe_configs([ConfigResource("broker", "0")])
    entry = list(described.values())[0].result(timeout=10)["message.max.bytes"]
    assert entry.value == "2000000"
    assert entry.source == 5, "DYNAMIC_DEFAULT_BROKER_CONFIG"

    # kafka-python's legacy AlterConfigs replaces the set: message.max.bytes goes back.
    kp = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    kp.alter_configs([KpResource(ConfigResourceType.BROKER, "0",
                                 configs={"sasl.kerberos.min.time.before.relogin": "58000"})],
                     raise_on_unknown=False, incremental=False)
    kp.close()
    assert send_big() == KafkaError.MSG_SIZE_TOO_LARGE

    # log.retention.ms moves the log start once the table holds the rows.
    acked, _ = produce(broker.bootstrap, "big", make_records(20, 1, seed=50))
    wait_for_rows(sql_catalog(broker), "big", 20)
    incremental(("log.retention.ms", "1"))
    deadline = time.time() + 60
    earliest = 0
    while time.time() < deadline and earliest == 0:
        spec = {TopicPartition("big", 0): OffsetSpec.earliest()}
        earliest = list(admin.list_offsets(spec).values())[0].result(timeout=10).offset
        time.sleep(0.5)
    assert earliest >= 20, "retention applied the dynamic log.retention.ms"
