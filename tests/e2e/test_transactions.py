"""Transactions and exactly-once with librdkafka (confluent-kafka): commit and abort,
read_committed against read_uncommitted, consume-transform-produce with offsets in the
transaction, fencing of a second instance, server-side timeouts, and the table holding
exactly the committed records, also when consumers read them back from Parquet."""

import time
from pathlib import Path

import pytest
from confluent_kafka import (Consumer, KafkaError, KafkaException, Producer,
                             TopicPartition)

from tables import rows, sql_catalog, wait_for_rows
from workload import create_topic

FAST = {"compaction_interval_ms": 300}


def txn_producer(bootstrap, tid, **conf):
    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": tid,
                  "linger.ms": 5, **conf})
    p.init_transactions(30)
    return p


def read_all(bootstrap, topic, partitions, isolation, timeout=60):
    """Every message of the topic up to the end, with the final positions:
    ({partition: [values in order]}, {partition: position})."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"r-{time.time_ns()}",
                  "isolation.level": isolation, "enable.partition.eof": True,
                  "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out = {p: [] for p in range(partitions)}
    eof = set()
    deadline = time.time() + timeout
    while len(eof) < partitions and time.time() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            if m.error().code() == KafkaError._PARTITION_EOF:
                eof.add(m.partition())
                continue
            raise KafkaException(m.error())
        out[m.partition()].append(m.value().decode())
        eof.discard(m.partition())
    assert len(eof) == partitions, f"reached the end of {sorted(eof)} only"
    positions = {tp.partition: tp.offset
                 for tp in c.position([TopicPartition(topic, p) for p in range(partitions)])}
    c.close()
    return out, positions


def end_offsets(bootstrap, topic, partitions, isolation):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"w-{time.time_ns()}",
                  "isolation.level": isolation})
    try:
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1]
                for p in range(partitions)}
    finally:
        c.close()


def produce_txn(p, topic, prefix, n, partitions, commit):
    p.begin_transaction()
    for i in range(n):
        p.produce(topic, key=f"{prefix}-{i}".encode(), value=f"{prefix}-{i}".encode(),
                  partition=i % partitions)
    if commit:
        p.commit_transaction(30)
    else:
        p.flush(30)
        p.abort_transaction(30)


def expected(prefixes, n, partitions):
    out = {p: [] for p in range(partitions)}
    for prefix in prefixes:
        for i in range(n):
            out[i % partitions].append(f"{prefix}-{i}")
    return out


def test_commit_abort_commit(make_broker):
    """read_committed sees exactly the committed records in order and reaches the end;
    read_uncommitted sees all, also once the log is folded into the table; the table holds
    exactly the committed records, and consumers reading them back from Parquet get the
    same answers."""
    from helpers import free_port
    from test_observability import get

    admin = free_port()
    broker = make_broker({**FAST, "admin_listen": f"127.0.0.1:{admin}"})
    create_topic(broker.bootstrap, "tx", 3)
    p = txn_producer(broker.bootstrap, "tx-commit-abort")
    produce_txn(p, "tx", "c1", 300, 3, commit=True)
    produce_txn(p, "tx", "a1", 300, 3, commit=False)
    produce_txn(p, "tx", "c2", 300, 3, commit=True)
    produce_txn(p, "tx", "a2", 30, 3, commit=False)
    # Non-transactional records after the transactions.
    plain = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(3):
        plain.produce("tx", value=f"plain-{i}".encode(), partition=i)
    plain.flush(30)

    want = expected(["c1", "c2"], 300, 3)
    everything = expected(["c1", "a1", "c2"], 300, 3)
    for part in range(3):
        everything[part] += expected(["a2"], 30, 3)[part]
        want[part].append(f"plain-{part}")
        everything[part].append(f"plain-{part}")

    def check():
        committed, positions = read_all(broker.bootstrap, "tx", 3, "read_committed")
        assert committed == want
        # 100 + 100 + 100 + 10 records and 4 markers per partition, then the plain record.
        assert positions == {part: 315 for part in range(3)}
        assert end_offsets(broker.bootstrap, "tx", 3, "read_committed") == positions
        uncommitted, positions = read_all(broker.bootstrap, "tx", 3, "read_uncommitted")
        assert uncommitted == everything
        assert positions == {part: 315 for part in range(3)}

    check()
    # The table: committed records only, at their offsets.
    wait_for_rows(sql_catalog(broker), "tx", 603)
    time.sleep(2)
    table = rows(sql_catalog(broker), "tx")
    assert len(table) == 603
    values = sorted(v[1].decode() for v in table.values())
    assert values == sorted(sum(want.values(), []))

    # Folded: the committed records now come from the table, the markers and aborted
    # records from where they are in the WAL; consumers see no difference.
    def table_reads():
        lines = get(f"http://127.0.0.1:{admin}/metrics")[1].splitlines()
        return sum(float(line.split()[-1]) for line in lines
                   if line.startswith(("icestream_table_reads_total ",
                                       "icestream_table_read_cache_hits_total ")))

    before = table_reads()
    check()
    assert table_reads() > before, "the committed records were read from Parquet"


def test_read_uncommitted_sees_aborted_records_in_the_wal(make_broker):
    broker = make_broker({"compaction": "false"})
    create_topic(broker.bootstrap, "unc", 2)
    p = txn_producer(broker.bootstrap, "tx-unc")
    produce_txn(p, "unc", "c", 10, 2, commit=True)
    produce_txn(p, "unc", "a", 10, 2, commit=False)
    produce_txn(p, "unc", "d", 10, 2, commit=True)
    seen, positions = read_all(broker.bootstrap, "unc", 2, "read_uncommitted")
    assert seen == expected(["c", "a", "d"], 10, 2)
    assert positions == {0: 18, 1: 18}
    seen, positions = read_all(broker.bootstrap, "unc", 2, "read_committed")
    assert seen == expected(["c", "d"], 10, 2)
    assert positions == {0: 18, 1: 18}


def test_open_transaction_holds_back_read_committed_and_the_table(make_broker):
    broker = make_broker(FAST)
    create_topic(broker.bootstrap, "held", 1)
    plain = Producer({"bootstrap.servers": broker.bootstrap})
    plain.produce("held", value=b"before")
    plain.flush(30)
    p = txn_producer(broker.bootstrap, "tx-held")
    p.begin_transaction()
    p.produce("held", value=b"inside")
    p.flush(30)
    plain.produce("held", value=b"after")
    plain.flush(30)
    # The last stable offset stops at the open transaction's first record.
    assert end_offsets(broker.bootstrap, "held", 1, "read_committed") == {0: 1}
    assert end_offsets(broker.bootstrap, "held", 1, "read_uncommitted") == {0: 3}
    seen, _ = read_all(broker.bootstrap, "held", 1, "read_committed")
    assert seen == {0: ["before"]}
    time.sleep(2)
    table = rows(sql_catalog(broker), "held")
    assert sorted(v[1] for v in table.values()) == [b"before"]
    p.commit_transaction(30)
    seen, positions = read_all(broker.bootstrap, "held", 1, "read_committed")
    assert seen == {0: ["before", "inside", "after"]}
    assert positions == {0: 4}
    table = wait_for_rows(sql_catalog(broker), "held", 3)
    assert sorted(v[1] for v in table.values()) == [b"after", b"before", b"inside"]


def test_consume_transform_produce_exactly_once(make_broker):
    """A consume-transform-produce loop with the consumer's offsets in the transaction:
    an aborted round leaves neither output nor offsets; the output holds every input
    exactly once and the group's offsets are at the end."""
    broker = make_broker(FAST)
    create_topic(broker.bootstrap, "in", 2)
    create_topic(broker.bootstrap, "out", 2)
    plain = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(1000):
        plain.produce("in", value=f"v{i}".encode(), partition=i % 2)
    plain.flush(30)
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "eos",
                         "isolation.level": "read_committed", "enable.auto.commit": False,
                         "auto.offset.reset": "earliest"})
    consumer.subscribe(["in"])
    p = txn_producer(broker.bootstrap, "tx-eos")
    done = 0
    rounds = 0
    deadline = time.time() + 120
    while done < 1000 and time.time() < deadline:
        msgs = [m for m in consumer.consume(100, 1.0) if not m.error()]
        if not msgs:
            continue
        rounds += 1
        p.begin_transaction()
        for m in msgs:
            p.produce("out", value=m.value().upper(), partition=m.partition())
        p.send_offsets_to_transaction(
            consumer.position(consumer.assignment()), consumer.consumer_group_metadata(), 30)
        if rounds == 2:
            # Abort this round and rewind: its records are processed again.
            p.abort_transaction(30)
            committed = consumer.committed(consumer.assignment(), 10)
            for tp in committed:
                consumer.seek(TopicPartition(tp.topic, tp.partition,
                                             tp.offset if tp.offset >= 0 else 0))
            continue
        p.commit_transaction(30)
        done += len(msgs)
    assert done == 1000
    committed = consumer.committed([TopicPartition("in", 0), TopicPartition("in", 1)], 10)
    assert {tp.partition: tp.offset for tp in committed} == {0: 500, 1: 500}
    consumer.close()
    out, _ = read_all(broker.bootstrap, "out", 2, "read_committed")
    values = sorted(sum(out.values(), []))
    assert values == sorted(f"V{i}" for i in range(1000))


def test_second_instance_fences_the_first(make_broker):
    broker = make_broker(FAST)
    create_topic(broker.bootstrap, "fence", 1)
    first = txn_producer(broker.bootstrap, "tx-fence")
    first.begin_transaction()
    first.produce("fence", value=b"zombie")
    first.flush(30)
    second = txn_producer(broker.bootstrap, "tx-fence")
    # The first instance's open transaction was aborted, and it is fenced.
    with pytest.raises(KafkaException) as err:
        first.produce("fence", value=b"zombie-2")
        first.commit_transaction(30)
    assert err.value.args[0].fatal() or err.value.args[0].code() in (
        KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH)
    produce_txn(second, "fence", "ok", 5, 1, commit=True)
    seen, _ = read_all(broker.bootstrap, "fence", 1, "read_committed")
    assert seen == {0: [f"ok-{i}" for i in range(5)]}
    time.sleep(2)
    table = wait_for_rows(sql_catalog(broker), "fence", 5)
    assert sorted(v[1] for v in table.values()) == [f"ok-{i}".encode() for i in range(5)]


def test_coordinator_aborts_a_transaction_past_its_timeout(make_broker):
    broker = make_broker({**FAST, "transaction_check_interval_ms": 200})
    create_topic(broker.bootstrap, "abandoned", 1)
    p = txn_producer(broker.bootstrap, "tx-timeout", **{"transaction.timeout.ms": 2000})
    p.begin_transaction()
    p.produce("abandoned", value=b"never")
    p.flush(30)
    plain = Producer({"bootstrap.servers": broker.bootstrap})
    plain.produce("abandoned", value=b"later")
    plain.flush(30)
    # Without the producer doing anything, the transaction is aborted and the last
    # stable offset moves past it.
    deadline = time.time() + 30
    while time.time() < deadline:
        if end_offsets(broker.bootstrap, "abandoned", 1, "read_committed") == {0: 3}:
            break
        time.sleep(0.3)
    assert end_offsets(broker.bootstrap, "abandoned", 1, "read_committed") == {0: 3}
    seen, _ = read_all(broker.bootstrap, "abandoned", 1, "read_committed")
    assert seen == {0: ["later"]}
    # The producer learns it cannot commit; it aborts and carries on.
    with pytest.raises(KafkaException) as err:
        p.commit_transaction(30)
    assert err.value.args[0].txn_requires_abort() or err.value.args[0].fatal()
    if err.value.args[0].txn_requires_abort():
        p.abort_transaction(30)
        produce_txn(p, "abandoned", "again", 2, 1, commit=True)
        seen, _ = read_all(broker.bootstrap, "abandoned", 1, "read_committed")
        assert seen == {0: ["later", "again-0", "again-1"]}
    time.sleep(2)
    table = rows(sql_catalog(broker), "abandoned")
    assert b"never" not in [v[1] for v in table.values()]


def test_transactions_survive_a_restart(make_broker, tmp_path):
    """The coordinator's state is in the metadata store: a decided transaction stays
    decided, and an open one can still be committed after the broker restarts."""
    broker = make_broker(FAST)
    create_topic(broker.bootstrap, "restart", 2)
    p = txn_producer(broker.bootstrap, "tx-restart")
    produce_txn(p, "restart", "c", 10, 2, commit=True)
    p.begin_transaction()
    for i in range(10):
        p.produce("restart", value=f"open-{i}".encode(), partition=i % 2)
    p.flush(30)
    broker.stop()
    broker.start()
    p.commit_transaction(60)
    seen, positions = read_all(broker.bootstrap, "restart", 2, "read_committed")
    assert seen == expected(["c", "open"], 10, 2)
    assert positions == {0: 12, 1: 12}


def test_coordinator_killed_mid_transaction(postgres_url, seaweedfs, tmp_path):
    """Three brokers: kill -9 the coordinator of an open transaction. The producer finds
    the new coordinator and commits; nothing committed is lost or duplicated, nothing
    aborted becomes visible, in the log and in the table."""
    import uuid
    from confluent_kafka.admin import AdminClient
    from helpers import Broker, free_port
    from tables import open_sql_catalog
    from test_cluster import cluster_settings

    prefix = f"txn-{uuid.uuid4().hex[:8]}"
    settings = {**cluster_settings(postgres_url, seaweedfs, prefix),
                "transaction_check_interval_ms": 500}
    brokers = [Broker(tmp_path / f"b{i}", settings, free_port()).start() for i in range(3)]
    bootstrap = ",".join(b.bootstrap for b in brokers)
    try:
        admin = AdminClient({"bootstrap.servers": bootstrap})
        deadline = time.time() + 20
        while time.time() < deadline and len(admin.list_topics(timeout=10).brokers) < 3:
            time.sleep(0.3)
        md = admin.list_topics(timeout=10)
        assert len(md.brokers) == 3
        topic = f"ha-{uuid.uuid4().hex[:6]}"
        create_topic(bootstrap, topic, 3)
        tid = "tx-ha"
        p = txn_producer(bootstrap, tid, **{"transaction.timeout.ms": 60000})
        produce_txn(p, topic, "a", 60, 3, commit=True)
        p.begin_transaction()
        for i in range(60):
            p.produce(topic, value=f"b-{i}".encode(), partition=i % 3)
        p.flush(30)

        # Coordinators are chosen by key, the same way for groups and transactional ids.
        coordinator = admin.describe_consumer_groups([tid])[tid].result(timeout=10).coordinator
        victim = next(b for b in brokers if b.port == coordinator.port)
        victim.kill9()
        p.commit_transaction(120)
        produce_txn(p, topic, "c", 60, 3, commit=False)
        produce_txn(p, topic, "d", 60, 3, commit=True)

        alive = ",".join(b.bootstrap for b in brokers if b is not victim)
        seen, _ = read_all(alive, topic, 3, "read_committed", timeout=120)
        assert seen == expected(["a", "b", "d"], 60, 3)

        uri = postgres_url.replace("postgres://", "postgresql+psycopg2://", 1)
        catalog = open_sql_catalog(uri, f"s3://icestream/{prefix}/warehouse",
                                   **{"s3.endpoint": seaweedfs.s3_endpoint,
                                      "s3.access-key-id": seaweedfs.ACCESS_KEY,
                                      "s3.secret-access-key": seaweedfs.SECRET_KEY,
                                      "s3.region": "us-east-1", "s3.path-style-access": "true"})
        table = wait_for_rows(catalog, topic, 180, timeout=120)
        time.sleep(2)
        table = rows(catalog, topic)
        assert sorted(v[1].decode() for v in table.values()) == sorted(
            sum(expected(["a", "b", "d"], 60, 3).values(), []))
    finally:
        for b in brokers:
            if b.alive():
                b.stop()


def test_admin_describes_and_lists_transactions_and_producers(make_broker):
    """kafka-python's admin client: DescribeTransactions, ListTransactions (with filters)
    and DescribeProducers show an open transaction, then its commit."""
    from kafka import KafkaAdminClient
    from kafka import TopicPartition as KTopicPartition
    from kafka.errors import TransactionalIdNotFoundError

    broker = make_broker(FAST)
    create_topic(broker.bootstrap, "adm", 2)
    plain = Producer({"bootstrap.servers": broker.bootstrap})
    plain.produce("adm", value=b"first", partition=1)
    plain.flush(30)
    p = txn_producer(broker.bootstrap, "tx-adm", **{"transaction.timeout.ms": 45000})
    p.begin_transaction()
    p.produce("adm", value=b"x", partition=1)
    p.flush(30)
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        d = admin.describe_transactions(["tx-adm"])["tx-adm"]
        assert str(d.state.value) == "Ongoing"
        assert d.transaction_timeout_ms == 45000
        assert d.transaction_start_time_ms > 0
        assert {(tp.topic, tp.partition) for tp in d.topic_partitions} == {("adm", 1)}
        listed = [t for ts in admin.list_transactions().values() for t in ts]
        assert [(t.transactional_id, t.producer_id) for t in listed] == [("tx-adm", d.producer_id)]
        assert not [t for ts in admin.list_transactions(state_filters=["CompleteCommit"]).values()
                    for t in ts]
        assert [t.transactional_id
                for ts in admin.list_transactions(transactional_id_pattern="tx-a.*").values()
                for t in ts] == ["tx-adm"]
        producers = admin.describe_producers([KTopicPartition("adm", 1)])[KTopicPartition("adm", 1)]
        active = {s.producer_id: s for s in producers.active_producers}
        assert active[d.producer_id].current_transaction_start_offset == 1
        assert active[d.producer_id].producer_epoch == d.producer_epoch

        p.commit_transaction(30)
        d = admin.describe_transactions(["tx-adm"])["tx-adm"]
        assert str(d.state.value) == "CompleteCommit" and not d.topic_partitions
        producers = admin.describe_producers([KTopicPartition("adm", 1)])[KTopicPartition("adm", 1)]
        active = {s.producer_id: s for s in producers.active_producers}
        assert active[d.producer_id].current_transaction_start_offset == -1
        with pytest.raises(TransactionalIdNotFoundError):
            admin.describe_transactions(["no-such-id"])
    finally:
        admin.close()


def test_producers_cannot_write_control_batches_or_stray_transactional_batches(make_broker):
    """A control batch from a client is refused (INVALID_RECORD), and a transactional batch
    for a partition that was never added to a transaction is refused (INVALID_TXN_STATE):
    nothing is stored."""
    import struct
    from kafka.record.default_records import DefaultRecordBatchBuilder
    from kafka.record.util import calc_crc32c
    from rawkafka import Conn, produce_v3

    def raw_batch(transactional, control):
        b = DefaultRecordBatchBuilder(magic=2, compression_type=0,
                                      is_transactional=transactional, producer_id=4242,
                                      producer_epoch=0, base_sequence=0, batch_size=1 << 20)
        b.append(0, 1_700_000_000_000, b"\x00\x00\x00\x01", b"\x00\x00\x00\x00\x00\x00", [])
        data = bytearray(b.build())
        if control:
            (attributes,) = struct.unpack(">h", data[21:23])
            data[21:23] = struct.pack(">h", attributes | 0x20)
            data[17:21] = struct.pack(">I", calc_crc32c(bytes(data[21:])))
        return bytes(data)

    broker = make_broker(FAST)
    create_topic(broker.bootstrap, "raw-txn", 1)
    conn = Conn(broker.bootstrap)
    try:
        assert produce_v3(conn, "raw-txn", 0, raw_batch(True, True))[0] == 87  # INVALID_RECORD
        assert produce_v3(conn, "raw-txn", 0, raw_batch(True, False))[0] == 48  # INVALID_TXN_STATE
        assert produce_v3(conn, "raw-txn", 0, raw_batch(False, False))[0] == 0
    finally:
        conn.close()
    assert end_offsets(broker.bootstrap, "raw-txn", 1, "read_uncommitted") == {0: 1}


@pytest.mark.parametrize("point", ["txn.after_prepare", "txn.after_markers"])
@pytest.mark.parametrize("commit", [True, False])
def test_coordinator_crash_at_every_step_of_ending(tmp_path, point, commit):
    """The broker dies after the decision is recorded (before any marker), or after the
    markers (before the transaction is complete): once it is back, the decided outcome is
    finished — committed records appear once, aborted ones never — and so are the
    offsets sent with the transaction."""
    import os
    from helpers import Broker

    broker = Broker(tmp_path / "broker", FAST).start()
    create_topic(broker.bootstrap, "crash", 2)
    create_topic(broker.bootstrap, "crash-in", 1)
    p = txn_producer(broker.bootstrap, "tx-crash")
    produce_txn(p, "crash", "a", 20, 2, commit=True)
    broker.stop()
    os.environ["ICESTREAM_TEST_FAILPOINT"] = point
    try:
        broker.start()
    finally:
        del os.environ["ICESTREAM_TEST_FAILPOINT"]
    try:
        p.begin_transaction()
        for i in range(20):
            p.produce("crash", value=f"b-{i}".encode(), partition=i % 2)
        consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "crash-group"})
        p.send_offsets_to_transaction([TopicPartition("crash-in", 0, 42)],
                                      consumer.consumer_group_metadata(), 30)
        consumer.close()
        with pytest.raises(KafkaException):
            if commit:
                p.commit_transaction(10)
            else:
                p.abort_transaction(10)
        broker.proc.wait(timeout=60)
        assert "failpoint " + point in broker.log()
    finally:
        del p
    broker.start()
    try:
        want = expected(["a", "b"] if commit else ["a"], 20, 2)

        def finished():
            # An abort shows the same records before and after it is finished: the last
            # stable offset reaching the end is what says it is.
            return end_offsets(broker.bootstrap, "crash", 2, "read_committed") == \
                end_offsets(broker.bootstrap, "crash", 2, "read_uncommitted")

        deadline = time.time() + 30
        while time.time() < deadline:
            seen, _ = read_all(broker.bootstrap, "crash", 2, "read_committed")
            if seen == want and finished():
                break
            time.sleep(0.5)
        assert seen == want
        assert finished()
        c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "crash-group"})
        committed = c.committed([TopicPartition("crash-in", 0)], 10)[0].offset
        c.close()
        assert committed == (42 if commit else -1001)
        table = wait_for_rows(sql_catalog(broker), "crash", 40 if commit else 20)
        time.sleep(2)
        table = rows(sql_catalog(broker), "crash")
        assert sorted(v[1].decode() for v in table.values()) == sorted(sum(want.values(), []))
    finally:
        broker.stop()


def test_markers_sharing_a_segment_with_records(make_broker):
    """Markers and other records flushed into the same WAL segment: once folded, the
    markers stay in the WAL and the records are in the table, and every consumer still
    reads each record exactly once."""
    import threading

    broker = make_broker({**FAST, "flush_interval_ms": 200})
    create_topic(broker.bootstrap, "mixed", 1)
    p = txn_producer(broker.bootstrap, "tx-mixed")
    plain = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
    plain_values = []
    for r in range(8):
        p.begin_transaction()
        p.produce("mixed", value=f"aborted-{r}".encode())
        p.flush(30)

        def send(r=r):
            time.sleep(0.02)
            for i in range(3):
                plain.produce("mixed", value=f"plain-{r}-{i}".encode())
            plain.flush(30)

        t = threading.Thread(target=send)
        t.start()
        p.abort_transaction(30)
        t.join()
        plain_values += [f"plain-{r}-{i}" for i in range(3)]
    wait_for_rows(sql_catalog(broker), "mixed", len(plain_values))
    time.sleep(1)
    for _ in range(2):  # the second time from the broker's caches
        seen, _ = read_all(broker.bootstrap, "mixed", 1, "read_committed")
        assert seen == {0: plain_values}
        seen, _ = read_all(broker.bootstrap, "mixed", 1, "read_uncommitted")
        assert sorted(seen[0]) == sorted(plain_values + [f"aborted-{r}" for r in range(8)])
