"""Consumer groups with real clients: librdkafka (eager and cooperative-sticky),
kafka-python and aiokafka; committed offsets; replay with `icestream groups reset`."""

import asyncio
import subprocess
import threading
import time
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from helpers import Broker, icestream_bin
from tables import sql_catalog, wait_for_rows
from workload import create_topic, make_records, produce


class Member(threading.Thread):
    """A confluent-kafka group member that commits after every batch it processes."""

    def __init__(self, bootstrap, group, topic, name, **conf):
        super().__init__(daemon=True)
        self.name = name
        self.seen = []
        self.assignment = set()
        self.assignments = 0
        self.stop_flag = threading.Event()
        self.closed = threading.Event()
        self.errors = []
        # Records whose commit raised: the broker may or may not have stored the offsets
        # (at-least-once), so these may be skipped by the next owner or read again.
        self.uncertain = []
        config = {"bootstrap.servers": bootstrap, "group.id": group,
                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                  "session.timeout.ms": 6000, "heartbeat.interval.ms": 500,
                  "fetch.wait.max.ms": 100, "client.id": name}
        config.update(conf)
        self.cooperative = config.get("partition.assignment.strategy") == "cooperative-sticky"
        self.consumer = Consumer(config)
        self.topic = topic

    def on_assign(self, consumer, partitions):
        self.assignments += 1
        if self.cooperative:
            self.assignment |= {p.partition for p in partitions}
        else:
            self.assignment = {p.partition for p in partitions}

    def on_revoke(self, consumer, partitions):
        if self.cooperative:
            self.assignment -= {p.partition for p in partitions}
        else:
            self.assignment = set()

    def run(self):
        self.consumer.subscribe([self.topic], on_assign=self.on_assign, on_revoke=self.on_revoke)
        try:
            while not self.stop_flag.is_set():
                msgs = self.consumer.consume(500, timeout=0.2)
                batch = []
                for m in msgs:
                    if m.error():
                        self.errors.append(str(m.error()))
                        continue
                    batch.append((m.partition(), m.offset()))
                if batch:
                    try:
                        self.consumer.commit(asynchronous=False)
                        self.seen.extend(batch)
                    except Exception as e:
                        # Not processed: read the batch again (if the partitions are still
                        # ours; otherwise their next owner starts at the committed offset).
                        self.errors.append(f"commit: {e}")
                        self.uncertain.extend(batch)
                        first = {}
                        for p, o in batch:
                            first[p] = min(o, first.get(p, o))
                        for p, o in first.items():
                            try:
                                self.consumer.seek(TopicPartition(self.topic, p, o))
                            except Exception:
                                pass
        finally:
            try:
                self.consumer.close()
            except Exception as e:  # a fenced member's close reports its fatal error
                self.errors.append(f"close: {e}")
            self.closed.set()

    def stop(self):
        self.stop_flag.set()
        self.closed.wait(30)


def wait_until(predicate, timeout=60, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return time.time()
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def stable(members, partitions):
    sets = [m.assignment for m in members]
    union = set().union(*sets)
    return union == set(range(partitions)) and sum(len(s) for s in sets) == partitions


def test_three_librdkafka_members_share_and_rebalance(make_broker):
    broker = make_broker({"group_initial_rebalance_delay_ms": 1000})
    create_topic(broker.bootstrap, "shared", 6)
    start = time.time()
    members = [Member(broker.bootstrap, "g3", "shared", f"m{i}") for i in range(3)]
    for m in members:
        m.start()
    assigned_at = wait_until(lambda: stable(members, 6) and all(m.assignment for m in members),
                             what="every partition assigned to exactly one of three members")
    print(f"3 members: first full assignment {assigned_at - start:.2f}s after subscribe")
    time.sleep(1)
    assert stable(members, 6)
    acked, _ = produce(broker.bootstrap, "shared", make_records(6000, 6, seed=41))
    wait_until(lambda: sum(len(m.seen) for m in members) >= 6000, what="all records consumed")
    seen = [x for m in members for x in m.seen]
    assert sorted(seen) == sorted(acked), "every record exactly once across the group"
    for m in members:
        assert {p for p, _ in m.seen} <= m.assignment, "members read only their partitions"

    # One member leaves: its partitions move to the others.
    leaver = members.pop()
    moved = leaver.assignment
    left = time.time()
    leaver.stop()
    done = wait_until(lambda: stable(members, 6), what="the leaver's partitions to move")
    print(f"member left: partitions {sorted(moved)} moved in {done - left:.2f}s")
    time.sleep(1)
    before = {id(m): len(m.seen) for m in members}
    more, _ = produce(broker.bootstrap, "shared", make_records(3000, 6, seed=42))
    wait_until(lambda: sum(len(m.seen) - before[id(m)] for m in members) >= 3000,
               what="records after the rebalance")
    after = [x for m in members for x in m.seen[before[id(m)]:]]
    assert sorted(after) == sorted(more)
    for m in members:
        m.stop()

    # Restarted, the group resumes exactly after its committed offsets.
    resumed = Member(broker.bootstrap, "g3", "shared", "again")
    resumed.start()
    wait_until(lambda: len(resumed.assignment) == 6, what="the restarted member's assignment")
    last, _ = produce(broker.bootstrap, "shared", make_records(600, 6, seed=43))
    wait_until(lambda: len(resumed.seen) >= 600, what="the restarted member to consume")
    time.sleep(1)
    resumed.stop()
    assert sorted(resumed.seen) == sorted(last), "nothing re-read, nothing skipped"


def test_cooperative_sticky_incremental_rebalance(make_broker):
    broker = make_broker({"group_initial_rebalance_delay_ms": 500})
    create_topic(broker.bootstrap, "coop", 6)
    conf = {"partition.assignment.strategy": "cooperative-sticky"}
    a = Member(broker.bootstrap, "gc", "coop", "a", **conf)
    b = Member(broker.bootstrap, "gc", "coop", "b", **conf)
    a.start()
    b.start()
    wait_until(lambda: stable([a, b], 6) and a.assignment and b.assignment,
               what="two cooperative members sharing six partitions")
    time.sleep(1)
    before_a = set(a.assignment)
    c = Member(broker.bootstrap, "gc", "coop", "c", **conf)
    c.start()
    wait_until(lambda: stable([a, b, c], 6) and c.assignment, what="the third member's share")
    # Sticky: a kept the partitions it still has; only moved ones were revoked.
    assert a.assignment <= before_a
    acked, _ = produce(broker.bootstrap, "coop", make_records(3000, 6, seed=44))
    wait_until(lambda: sum(len(m.seen) for m in (a, b, c)) >= 3000, what="consumption")
    seen = [x for m in (a, b, c) for x in m.seen]
    assert sorted(seen) == sorted(acked)
    for m in (a, b, c):
        m.stop()


def test_static_member_restart_keeps_its_partitions_and_a_duplicate_is_fenced(make_broker):
    """KIP-345 as librdkafka's 0102 expects: a static member that restarts within its
    session takes back its partitions without a rebalance of the others, and a second
    instance with the same group.instance.id fences the first (FENCED_INSTANCE_ID, fatal)."""
    broker = make_broker({"group_initial_rebalance_delay_ms": 500})
    create_topic(broker.bootstrap, "static", 4)
    conf = {"session.timeout.ms": 10000}
    a = Member(broker.bootstrap, "gs", "static", "a", **{"group.instance.id": "ia"}, **conf)
    b = Member(broker.bootstrap, "gs", "static", "b", **{"group.instance.id": "ib"}, **conf)
    a.start()
    b.start()
    wait_until(lambda: stable([a, b], 4) and a.assignment and b.assignment,
               what="two static members sharing four partitions")
    time.sleep(1)
    a_rounds, a_parts, b_parts = a.assignments, set(a.assignment), set(b.assignment)

    # b restarts: a static member does not leave on close, and comes back with a new
    # member id under the same instance id.
    b.stop()
    restarted = time.time()
    b2 = Member(broker.bootstrap, "gs", "static", "b2", **{"group.instance.id": "ib"}, **conf)
    b2.start()
    back = wait_until(lambda: b2.assignment, what="the restarted member's partitions")
    assert back - restarted < 6, "back well within session.timeout.ms"
    assert b2.assignment == b_parts, "the restarted member gets its partitions back"
    time.sleep(2)
    assert a.assignments == a_rounds and a.assignment == a_parts, \
        "the other static member saw no rebalance"
    acked, _ = produce(broker.bootstrap, "static", make_records(400, 4, seed=45))
    wait_until(lambda: len(a.seen) + len(b2.seen) >= 400, what="both members to consume")
    assert sorted(a.seen + b2.seen) == sorted(acked)

    # A duplicate of b2's instance id takes its place; b2 is fenced, fatally.
    b3 = Member(broker.bootstrap, "gs", "static", "b3", **{"group.instance.id": "ib"}, **conf)
    b3.start()
    wait_until(lambda: any("FENCED_INSTANCE_ID" in e or "fenced" in e.lower()
                           for e in b2.errors),
               timeout=30, what="the older instance to be fenced")
    wait_until(lambda: stable([a, b3], 4) and b3.assignment, what="the new instance's share")
    for m in (a, b2, b3):
        m.stop()


def test_kafka_python_group(make_broker):
    from kafka import KafkaConsumer

    broker = make_broker({"group_initial_rebalance_delay_ms": 500})
    create_topic(broker.bootstrap, "kp-group", 4)
    acked, _ = produce(broker.bootstrap, "kp-group", make_records(2000, 4, seed=45))
    got = []
    lock = threading.Lock()

    def run(name):
        c = KafkaConsumer("kp-group", bootstrap_servers=broker.bootstrap, group_id="kpg",
                          auto_offset_reset="earliest", enable_auto_commit=False,
                          client_id=name, consumer_timeout_ms=8000)
        for msg in c:
            with lock:
                got.append((msg.partition, msg.offset))
            c.commit()
        c.close()

    threads = [threading.Thread(target=run, args=(f"kp{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert set(got) == set(acked)
    # Committed offsets are the end of every partition.
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "kpg"})
    committed = c.committed([TopicPartition("kp-group", p) for p in range(4)], timeout=10)
    c.close()
    assert [tp.offset for tp in committed] == [500, 500, 500, 500]


def test_aiokafka_group(make_broker):
    from aiokafka import AIOKafkaConsumer

    broker = make_broker({"group_initial_rebalance_delay_ms": 500})
    create_topic(broker.bootstrap, "aio-group", 3)
    acked, _ = produce(broker.bootstrap, "aio-group", make_records(1500, 3, seed=46))

    async def run():
        consumer = AIOKafkaConsumer("aio-group", bootstrap_servers=broker.bootstrap,
                                    group_id="aiog", auto_offset_reset="earliest",
                                    enable_auto_commit=False)
        await consumer.start()
        got = []
        try:
            while len(got) < len(acked):
                batch = await asyncio.wait_for(consumer.getmany(timeout_ms=1000), 30)
                for msgs in batch.values():
                    got.extend((m.partition, m.offset) for m in msgs)
                await consumer.commit()
        finally:
            await consumer.stop()
        return got

    got = asyncio.run(run())
    assert sorted(got) == sorted(acked)
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "aiog"})
    committed = c.committed([TopicPartition("aio-group", p) for p in range(3)], timeout=10)
    c.close()
    assert [tp.offset for tp in committed] == [500, 500, 500]


def groups_cli(broker, *args):
    r = subprocess.run([icestream_bin(), "groups", "--bootstrap", broker.bootstrap, *args],
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout.decode()


def test_replay_by_time_and_to_earliest_reaches_parquet(make_broker):
    broker = make_broker({"group_initial_rebalance_delay_ms": 300, "compaction_interval_ms": 300,
                          "segment_grace_ms": 10_000, "gc_interval_ms": 500})
    create_topic(broker.bootstrap, "replay", 2)
    records = make_records(3000, 2, seed=47)
    acked, _ = produce(broker.bootstrap, "replay", records)
    member = Member(broker.bootstrap, "rg", "replay", "r1")
    member.start()
    wait_until(lambda: len(member.seen) >= 3000, what="first pass")
    member.stop()
    # The data is folded into the table and the WAL collected: replay reads Parquet.
    wait_for_rows(sql_catalog(broker), "replay", 3000)
    wal = Path(broker.data_dir) / "objects" / "wal"
    wait_until(lambda: not wal.exists() or not any(p.suffix == ".seg" for p in wal.iterdir()),
               what="WAL segments to be collected")

    target = records[1000]["timestamp"]  # record 1000 is offset 500 of partition 0
    out = groups_cli(broker, "reset", "--group", "rg", "--topic", "replay",
                     "--to-datetime", str(target), "--execute")
    assert "500" in out
    again = Member(broker.bootstrap, "rg", "replay", "r2")
    again.start()
    wait_until(lambda: len(again.seen) >= 2000, what="replay from the time")
    again.stop()
    assert sorted(again.seen) == sorted((p, o) for p in range(2) for o in range(500, 1500))

    groups_cli(broker, "reset", "--group", "rg", "--topic", "replay", "--to-earliest", "--execute")
    third = Member(broker.bootstrap, "rg", "replay", "r3")
    third.start()
    wait_until(lambda: len(third.seen) >= 3000, what="replay from the start")
    third.stop()
    assert sorted(third.seen) == sorted(acked)
    assert "rg" in groups_cli(broker, "list")
    described = groups_cli(broker, "describe", "--group", "rg", "--topic", "replay")
    assert "1500" in described


def test_group_survives_broker_restart(tmp_path):
    broker = Broker(tmp_path / "broker", {"group_initial_rebalance_delay_ms": 300}).start()
    try:
        create_topic(broker.bootstrap, "durable-group", 4)
        a = Member(broker.bootstrap, "dg", "durable-group", "a")
        b = Member(broker.bootstrap, "dg", "durable-group", "b")
        a.start()
        b.start()
        wait_until(lambda: stable([a, b], 4) and a.assignment and b.assignment, what="assignment")
        first, _ = produce(broker.bootstrap, "durable-group", make_records(2000, 4, seed=48))
        wait_until(lambda: len(a.seen) + len(b.seen) >= 2000, what="first records")
        broker.kill9()
        time.sleep(1)
        broker.start()
        second, _ = produce(broker.bootstrap, "durable-group", make_records(2000, 4, seed=49))
        wait_until(lambda: len(set(a.seen) | set(b.seen)) >= 4000, timeout=90,
                   what="records after the restart")
        a.stop()
        b.stop()
        assert set(a.seen) | set(b.seen) == set(first) | set(second)
        c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "dg"})
        committed = c.committed([TopicPartition("durable-group", p) for p in range(4)], timeout=10)
        c.close()
        assert [tp.offset for tp in committed] == [1000] * 4
    finally:
        broker.stop()


def test_kip848_consumer_protocol(make_broker):
    """librdkafka's `group.protocol=consumer`: server-side assignment, incremental moves."""
    broker = make_broker({"group_consumer_heartbeat_interval_ms": 500})
    create_topic(broker.bootstrap, "next-gen", 6)
    def member(name):
        m = Member(broker.bootstrap, "g848", "next-gen", name)
        # The consumer protocol takes no client-side session or assignment settings.
        m.consumer.close()
        config = {"bootstrap.servers": broker.bootstrap, "group.id": "g848",
                  "group.protocol": "consumer", "auto.offset.reset": "earliest",
                  "enable.auto.commit": False, "fetch.wait.max.ms": 100, "client.id": name}
        m.consumer = Consumer(config)
        m.cooperative = True
        return m

    a = member("a")
    a.start()
    wait_until(lambda: len(a.assignment) == 6, what="the first member to own every partition")
    first, _ = produce(broker.bootstrap, "next-gen", make_records(1200, 6, seed=50))
    wait_until(lambda: len(a.seen) >= 1200, what="the first member to consume")
    b = member("b")
    b.start()
    wait_until(lambda: stable([a, b], 6) and len(b.assignment) == 3,
               what="the second member to get half the partitions")
    time.sleep(1)
    before = {id(m): len(m.seen) for m in (a, b)}
    second, _ = produce(broker.bootstrap, "next-gen", make_records(1200, 6, seed=51))
    wait_until(lambda: sum(len(m.seen) - before[id(m)] for m in (a, b)) >= 1200,
               what="records split between both members")
    after = [x for m in (a, b) for x in m.seen[before[id(m)]:]]
    assert sorted(after) == sorted(second)
    assert sorted(a.seen[:before[id(a)]]) == sorted(first)
    a.stop()
    b.stop()
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "g848"})
    committed = c.committed([TopicPartition("next-gen", p) for p in range(6)], timeout=10)
    c.close()
    assert [tp.offset for tp in committed] == [400] * 6
