"""Transactions and exactly-once with the real Java client and Flink (tests/e2e/java, run by
javakit.py): kafka-clients 3.9.1's transactional KafkaProducer and read_committed
KafkaConsumer, and Flink 2.0 SQL jobs (flink-connector-kafka 4.0.1-2.0) that are SIGKILLed
mid-way and restored from their last checkpoint."""

import time
from collections import Counter

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

import javakit
from workload import create_topic

pytestmark = pytest.mark.skipif(not javakit.have_jdk(), reason="no JDK (javac): apt-get install openjdk-17-jdk-headless")


@pytest.fixture(scope="module")
def java_ready():
    """Installs the jars and compiles the programs once (minutes on a new machine)."""
    javakit.classes_dir()


def steps_ok(proc, expected_steps):
    """The program's JSON steps: every one ok, and all of `expected_steps` reached."""
    events = proc.events()
    failed = [e for e in events if not e.get("ok", False)]
    assert not failed, (f"step {failed[0].get('step')} failed with {failed[0].get('error')}: "
                        f"{failed[0].get('message')}\n{proc.describe()}")
    by_step = {e["step"]: e for e in events if "step" in e}
    missing = [s for s in expected_steps if s not in by_step]
    assert not missing, f"steps never reached: {missing}\n{proc.describe()}"
    assert proc.proc.returncode == 0, proc.describe()
    return by_step


def by_partition(records):
    """[[partition, offset, key, value], ...] -> {partition: [value, ...]} in offset order,
    checking offsets increase within each partition."""
    out, last = {}, {}
    for p, off, _key, value in records:
        assert off > last.get(p, -1), f"partition {p}: offset {off} after {last.get(p)}"
        last[p] = off
        out.setdefault(p, []).append(value)
    return out


def expected_values(partitions, batches):
    """Values per partition for TxnRoundTrip's batches [(prefix, count), ...]: record i of a
    batch is PREFIX-i on partition i % partitions."""
    out = {p: [] for p in range(partitions)}
    for prefix, count in batches:
        for i in range(count):
            out[i % partitions].append(f"{prefix}-{i}")
    return {p: v for p, v in out.items() if v}


def read_topic(bootstrap, topic, partitions, isolation, timeout=120):
    """Every record of `topic` read with confluent-kafka (librdkafka) at this isolation level,
    up to each partition's end (the last stable offset for read_committed), as
    [(partition, offset, key, value)]."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"verify-{time.time_ns()}",
                  "enable.auto.commit": False, "enable.partition.eof": True,
                  "isolation.level": isolation, "fetch.wait.max.ms": 100})
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    out, at_end = [], set()
    deadline = time.time() + timeout
    try:
        while len(at_end) < partitions:
            if time.time() > deadline:
                marks = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                         for p in range(partitions)}
                positions = {tp.partition: tp.offset for tp in c.position(
                    [TopicPartition(topic, p) for p in range(partitions)])}
                raise AssertionError(
                    f"{isolation} read of {topic} did not reach the end in {timeout}s "
                    f"(an open transaction holding back the last stable offset?): "
                    f"at end {sorted(at_end)}, positions {positions}, watermarks {marks}")
            for msg in c.consume(num_messages=5000, timeout=0.5):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        at_end.add(msg.partition())
                        continue
                    raise AssertionError(f"consume error: {err}")
                at_end.discard(msg.partition())
                out.append((msg.partition(), msg.offset(), msg.key(), msg.value()))
    finally:
        c.close()
    return out


def produce_strings(bootstrap, topic, items):
    """Produces [(key, value, partition or None)] with confluent-kafka (idempotent)."""
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "enable.idempotence": True})
    for key, value, partition in items:
        kwargs = {} if partition is None else {"partition": partition}
        while True:
            try:
                p.produce(topic, key=key, value=value, **kwargs)
                break
            except BufferError:
                p.poll(0.05)
    remaining = p.flush(120)
    del p
    assert remaining == 0, f"{remaining} records not delivered to {topic}"


def high_watermarks(bootstrap, topic, partitions):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"hw-{time.time_ns()}"})
    try:
        return sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                   for p in range(partitions))
    finally:
        c.close()


# --- the plain Java client ----------------------------------------------------------------

def test_java_transactional_roundtrip(make_broker, tmp_path, java_ready):
    """Commit N, abort M, commit K records in three transactions of one producer: a
    read_committed consumer sees exactly the committed records, in order, and a
    read_uncommitted one sees all of them; librdkafka agrees."""
    broker = make_broker({"compaction_interval_ms": 300})
    topic, partitions, n, m, k = "java-txn", 3, 300, 200, 150
    create_topic(broker.bootstrap, topic, partitions)
    proc = javakit.run_kafka_program(
        "TxnRoundTrip", ["roundtrip", broker.bootstrap, topic, partitions, n, m, k, "java-txn-1"],
        tmp_path, "roundtrip")
    steps = steps_ok(proc, ["initTransactions", "c1.commitTransaction", "ab.abortTransaction",
                            "c2.commitTransaction", "read_committed", "read_uncommitted", "done"])

    committed = expected_values(partitions, [("c1", n), ("c2", k)])
    everything = expected_values(partitions, [("c1", n), ("ab", m), ("c2", k)])
    assert by_partition(steps["read_committed"]["records"]) == committed
    assert by_partition(steps["read_uncommitted"]["records"]) == everything
    # Each partition's end covers its records plus the transaction markers (one offset each
    # in Kafka); read_committed ends at the same place once no transaction is open.
    for p, values in everything.items():
        end = steps["read_uncommitted"]["end"][str(p)]
        assert end >= len(values), (p, end, len(values))
        assert steps["read_committed"]["end"][str(p)] == end

    # The same topic through librdkafka.
    rc = read_topic(broker.bootstrap, topic, partitions, "read_committed")
    assert by_partition([(p, o, key, v.decode()) for p, o, key, v in rc]) == committed
    ru = read_topic(broker.bootstrap, topic, partitions, "read_uncommitted")
    assert by_partition([(p, o, key, v.decode()) for p, o, key, v in ru]) == everything


def test_java_transactional_fencing(broker, tmp_path, java_ready):
    """A second producer with the same transactional.id fences the first: the first's open
    transaction is aborted and its commit fails; only the second's records are committed."""
    topic, partitions = "java-txn-fencing", 2
    create_topic(broker.bootstrap, topic, partitions)
    proc = javakit.run_kafka_program(
        "TxnRoundTrip", ["fencing", broker.bootstrap, topic, partitions, "java-txn-fence"],
        tmp_path, "fencing")
    steps = steps_ok(proc, ["first.initTransactions", "first.send", "second.initTransactions",
                            "first.commitTransaction", "second.commitTransaction",
                            "read_committed", "done"])
    fenced = steps["first.commitTransaction"]["fenced_with"]
    assert fenced is not None, "the fenced producer's commit succeeded"
    assert "Fenced" in fenced or "InvalidProducerEpoch" in fenced, fenced
    assert by_partition(steps["read_committed"]["records"]) == expected_values(
        partitions, [("second", 5)])
    assert by_partition(steps["read_uncommitted"]["records"]) == expected_values(
        partitions, [("zombie", 10), ("second", 5)])


def test_java_consume_transform_produce(make_broker, tmp_path, java_ready):
    """The exactly-once loop of Kafka Streams-like applications: output records and the
    consumer group's offsets committed in one transaction (sendOffsetsToTransaction); an
    aborted batch is reprocessed. Output = every input exactly once; the group's committed
    offsets = the input's end."""
    broker = make_broker({"compaction_interval_ms": 300})
    src, dst, partitions, count = "ctp-in", "ctp-out", 2, 1000
    create_topic(broker.bootstrap, src, partitions)
    create_topic(broker.bootstrap, dst, partitions)
    produce_strings(broker.bootstrap, src,
                    [(f"k-{i}", f"in-{i}", i % partitions) for i in range(count)])
    proc = javakit.run_kafka_program(
        "TxnRoundTrip", ["ctp", broker.bootstrap, src, dst, partitions, "ctp-group", "java-ctp-1"],
        tmp_path, "ctp")
    steps = steps_ok(proc, ["initTransactions", "ctp.batch3.abort", "ctp.loop", "group_offsets",
                            "read_committed", "done"])
    # The group's committed offsets: the end of each input partition (dense offsets 0..n-1).
    offsets = steps["group_offsets"]["offsets"]
    assert offsets == {str(p): count // partitions for p in range(partitions)}, steps["group_offsets"]
    got = Counter(v for _, _, _, v in steps["read_committed"]["records"])
    want = Counter(f"t(in-{i})" for i in range(count))
    assert got == want, (f"missing {sum((want - got).values())}, "
                         f"duplicated/extra {sum((got - want).values())}")
    # The aborted batch is visible to read_uncommitted readers only.
    aborted = steps["ctp.batch3.abort"]["records"]
    assert len(steps["read_uncommitted"]["records"]) == count + aborted


# --- Flink --------------------------------------------------------------------------------

FLINK_RECORDS = 20_000
FLINK_PARTITIONS = 4


def run_flink_killed_and_restored(broker, tmp_path, guarantee):
    """Produces FLINK_RECORDS keyed records to topic A, runs the Flink job A -> B, SIGKILLs it
    once it has completed a few checkpoints and written part of B, and restarts it from its
    last retained checkpoint; returns (records of A, records of B read_committed, info)."""
    tag = guarantee.replace("-", "")
    src, dst = f"flink-{tag}-a", f"flink-{tag}-b"
    create_topic(broker.bootstrap, src, FLINK_PARTITIONS)
    create_topic(broker.bootstrap, dst, FLINK_PARTITIONS)
    want = [(f"k-{i}".encode(), f"v-{i:06d}".encode()) for i in range(FLINK_RECORDS)]
    produce_strings(broker.bootstrap, src, [(key, value, None) for key, value in want])

    checkpoints = tmp_path / "checkpoints"
    args = [f"bootstrap={broker.bootstrap}", f"source={src}", f"sink={dst}",
            f"guarantee={guarantee}", f"checkpoints={checkpoints}",
            f"txnPrefix=icestream-{tag}", "parallelism=2", "sleepMicros=2000",
            f"group=flink-{tag}"]
    info = {}
    t0 = time.time()
    first = javakit.start_flink_program("FlinkExactlyOnce", args, tmp_path, "run1")
    deadline = time.time() + 150
    try:
        while True:
            if not first.alive():
                failed = [e for e in first.events() if e.get("event") == "failed"]
                assert not failed, (f"the job failed with {failed[0]['error']}: "
                                    f"{failed[0]['message']}\n{first.describe()}")
                raise AssertionError(f"the first run ended before it was killed\n{first.describe()}")
            assert time.time() < deadline, f"no progress to kill the job at\n{first.describe()}"
            chk = javakit.latest_checkpoint(checkpoints)
            if chk is not None and int(chk.name.split("-")[1]) >= 3:
                written = high_watermarks(broker.bootstrap, dst, FLINK_PARTITIONS)
                if written > 0:
                    break
            time.sleep(0.5)
    finally:
        first.kill9()
    info["first_run_s"] = round(time.time() - t0, 1)
    assert not any(e.get("event") == "finished" for e in first.events()), \
        "the job had already finished: nothing was left for the restored run"
    info["written_at_kill"] = high_watermarks(broker.bootstrap, dst, FLINK_PARTITIONS)
    restore = javakit.latest_checkpoint(checkpoints)
    assert restore is not None
    info["restored_from"] = f"{restore.parent.name[:8]}/{restore.name}"

    t1 = time.time()
    second = javakit.start_flink_program("FlinkExactlyOnce", args + [f"restore={restore}"],
                                         tmp_path, "run2")
    second.wait(timeout=200)
    info["second_run_s"] = round(time.time() - t1, 1)
    events = second.events()
    failed = [e for e in events if e.get("event") == "failed"]
    assert not failed, (f"the restored job failed with {failed[0]['error']}: "
                        f"{failed[0]['message']}\n{second.describe()}")
    assert any(e.get("event") == "finished" for e in events), second.describe()
    submitted = [e for e in events if e.get("event") == "submitted"]
    assert submitted and submitted[0]["restored_from"] == str(restore)
    assert 0 < info["written_at_kill"], info

    got = read_topic(broker.bootstrap, dst, FLINK_PARTITIONS, "read_committed")
    info["read_uncommitted"] = len(read_topic(broker.bootstrap, dst, FLINK_PARTITIONS,
                                              "read_uncommitted"))
    print(f"{guarantee}: {info}")
    return want, [(key, value) for _, _, key, value in got], info


def test_flink_exactly_once_survives_kill(broker, tmp_path, java_ready):
    """Flink's exactly-once Kafka sink (a transaction per checkpoint), killed with SIGKILL
    mid-way and restored from its checkpoint: B holds every record of A exactly once for a
    read_committed reader."""
    want, got, info = run_flink_killed_and_restored(broker, tmp_path, "exactly-once")
    want_c, got_c = Counter(want), Counter(got)
    missing, extra = want_c - got_c, got_c - want_c
    assert not missing and not extra, (
        f"{len(got)} records read_committed for {len(want)} produced: "
        f"{sum(missing.values())} missing (e.g. {list(missing)[:3]}), "
        f"{sum(extra.values())} duplicated or foreign (e.g. {list(extra)[:3]}); {info}")


def test_flink_at_least_once_survives_kill(broker, tmp_path, java_ready):
    """The baseline: Flink's at-least-once sink, killed and restored, delivers every record of
    A to B, duplicates allowed (records written after the restored checkpoint are written
    again)."""
    want, got, info = run_flink_killed_and_restored(broker, tmp_path, "at-least-once")
    want_c, got_c = Counter(want), Counter(got)
    missing = want_c - Counter(set(got))  # every record at least once
    assert not missing, f"{sum(missing.values())} records of A missing from B; {info}"
    foreign = set(got_c) - set(want_c)
    assert not foreign, f"records nobody produced: {list(foreign)[:3]}"
    print(f"at-least-once duplicates: {len(got) - len(want)}")
