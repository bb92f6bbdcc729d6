"""Transactions v2 (KIP-890), as Kafka 4 clients use them when the broker finalizes
`transaction.version` 2: Produce v12 enrolls partitions (no AddPartitionsToTxn),
TxnOffsetCommit v5 enrolls the group (no AddOffsetsToTxn), and every EndTxn v5 bumps the
producer's epoch. The producer is driven through kafka-python's protocol messages
(txnv2.py); what it wrote is read back with librdkafka (confluent-kafka) and PyIceberg."""

import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition

from tables import rows, sql_catalog, wait_for_rows
from test_transactions import end_offsets, expected, read_all
from txnv2 import (INVALID_TXN_STATE, NONE, PRODUCER_FENCED, ProduceError, TxnV2Producer,
                   finalized_features)
from workload import create_topic

FAST = {"compaction_interval_ms": 300}
FENCED = (PRODUCER_FENCED, 47)  # PRODUCER_FENCED or INVALID_PRODUCER_EPOCH


def send_round(p, topic, prefix, n, partitions):
    for part in range(partitions):
        values = [f"{prefix}-{i}".encode() for i in range(n) if i % partitions == part]
        p.send(topic, part, values)


def test_v2_producer_commits_and_aborts_without_add_partitions(make_broker):
    """Three transactions (commit, abort, commit) with no AddPartitionsToTxn: each EndTxn
    answers the next epoch; read_committed consumers and the table see exactly the
    committed records, read_uncommitted sees all of them."""
    broker = make_broker(FAST)
    assert finalized_features(broker.bootstrap)["transaction.version"] == (2, 2)
    create_topic(broker.bootstrap, "v2", 3)
    p = TxnV2Producer(broker.bootstrap, "v2-commit-abort")
    try:
        pid, epoch = p.producer_id, p.epoch
        send_round(p, "v2", "c1", 90, 3)
        assert p.end(commit=True) == (NONE, pid, epoch + 1)
        send_round(p, "v2", "a1", 90, 3)
        assert p.end(commit=False) == (NONE, pid, epoch + 2)
        send_round(p, "v2", "c2", 90, 3)
        assert p.end(commit=True) == (NONE, pid, epoch + 3)
    finally:
        p.close()

    committed, positions = read_all(broker.bootstrap, "v2", 3, "read_committed")
    assert committed == expected(["c1", "c2"], 90, 3)
    # 30 + 30 + 30 records and three markers per partition.
    assert positions == {part: 93 for part in range(3)}
    assert end_offsets(broker.bootstrap, "v2", 3, "read_committed") == positions
    everything, _ = read_all(broker.bootstrap, "v2", 3, "read_uncommitted")
    assert everything == expected(["c1", "a1", "c2"], 90, 3)

    wait_for_rows(sql_catalog(broker), "v2", 180)
    time.sleep(2)
    table = rows(sql_catalog(broker), "v2")
    assert sorted(v[1].decode() for v in table.values()) == sorted(
        sum(expected(["c1", "c2"], 90, 3).values(), []))


def test_v2_epoch_bump_fences_and_retries(make_broker):
    """The bump fences what the producer still had in flight; a retried EndTxn (the
    answer lost) gets the same answer; older epochs are fenced; an empty commit is
    INVALID_TXN_STATE and an empty abort bumps the epoch; a new instance fences the old."""
    broker = make_broker(FAST)
    create_topic(broker.bootstrap, "v2f", 1)
    p = TxnV2Producer(broker.bootstrap, "v2-fence")
    try:
        pid, e = p.producer_id, p.epoch
        p.send("v2f", 0, [b"one"])
        assert p.end(commit=True) == (NONE, pid, e + 1)
        # The answer was lost: the producer retries with the epoch it had.
        assert p.end(commit=True, epoch=e) == (NONE, pid, e + 1)
        # A batch of the old epoch (a zombie's, or a late retry) is fenced.
        try:
            p.send("v2f", 0, [b"late"], epoch=e)
            raise AssertionError("a batch of the bumped epoch was accepted")
        except ProduceError as err:
            assert err.code in FENCED
        # Nothing ongoing: a commit is refused, an abort bumps the epoch.
        assert p.end(commit=True)[0] == INVALID_TXN_STATE
        assert p.end(commit=False) == (NONE, pid, e + 2)
        # An epoch older than the one before the last bump is a zombie's.
        assert p.end(commit=False, epoch=e)[0] == PRODUCER_FENCED
        p.send("v2f", 0, [b"two"])
        assert p.end(commit=True) == (NONE, pid, e + 3)

        # A second instance of the id fences the first, mid-transaction.
        p.send("v2f", 0, [b"three"])
        q = TxnV2Producer(broker.bootstrap, "v2-fence")
        try:
            assert q.producer_id == pid and q.epoch > e + 3
            assert p.end(commit=True)[0] == PRODUCER_FENCED
            try:
                p.send("v2f", 0, [b"four"])
                raise AssertionError("the fenced instance's batch was accepted")
            except ProduceError as err:
                assert err.code in FENCED
            q.send("v2f", 0, [b"five"])
            assert q.end(commit=True)[0] == NONE
        finally:
            q.close()
    finally:
        p.close()
    seen, _ = read_all(broker.bootstrap, "v2f", 1, "read_committed")
    assert seen == {0: ["one", "two", "five"]}


def test_v2_offsets_commit_with_the_transaction(make_broker):
    """TxnOffsetCommit v5 without AddOffsetsToTxn: the group's offsets stay invisible
    while the transaction is open, are dropped when it aborts, and move when it commits."""
    broker = make_broker(FAST)
    create_topic(broker.bootstrap, "v2in", 2)
    create_topic(broker.bootstrap, "v2out", 2)
    group = "v2-group"

    def committed(isolation="read_uncommitted", timeout=10):
        # read_committed consumers ask for stable offsets: while a transaction holds
        # offsets for the group they get UNSTABLE_OFFSET_COMMIT and retry.
        c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group,
                      "enable.auto.commit": False, "isolation.level": isolation})
        try:
            tps = c.committed([TopicPartition("v2in", 0), TopicPartition("v2in", 1)],
                              timeout)
            return {tp.partition: tp.offset for tp in tps}
        finally:
            c.close()

    p = TxnV2Producer(broker.bootstrap, "v2-offsets")
    try:
        p.send("v2out", 0, [b"x0"])
        assert p.send_offsets(group, {("v2in", 0): 10, ("v2in", 1): 20}) == {
            ("v2in", 0): NONE, ("v2in", 1): NONE}
        assert committed() == {0: -1001, 1: -1001}
        assert p.end(commit=False)[0] == NONE
        assert committed() == {0: -1001, 1: -1001}

        p.send("v2out", 1, [b"x1"])
        assert p.send_offsets(group, {("v2in", 0): 11, ("v2in", 1): 21})[("v2in", 0)] == NONE
        assert p.end(commit=True)[0] == NONE
        assert committed() == {0: 11, 1: 21}
        assert committed("read_committed") == {0: 11, 1: 21}

        # Offsets alone make a transaction too.
        assert p.send_offsets(group, {("v2in", 0): 12})[("v2in", 0)] == NONE
        assert p.end(commit=True)[0] == NONE
        assert committed() == {0: 12, 1: 21}
    finally:
        p.close()
    seen, _ = read_all(broker.bootstrap, "v2out", 2, "read_committed")
    assert seen == {0: [], 1: ["x1"]}


def test_v2_timed_out_transaction_then_the_producer_goes_on(make_broker):
    """The coordinator aborts a transaction past its timeout with an epoch bump; the
    producer's late batch is fenced, its abort is answered with the new epoch, and its
    next transaction commits."""
    broker = make_broker({**FAST, "transaction_check_interval_ms": 200})
    create_topic(broker.bootstrap, "v2t", 1)
    p = TxnV2Producer(broker.bootstrap, "v2-timeout", timeout_ms=2000)
    try:
        pid, e = p.producer_id, p.epoch
        p.send("v2t", 0, [b"never"])
        deadline = time.time() + 30
        while time.time() < deadline and end_offsets(
                broker.bootstrap, "v2t", 1, "read_committed") != {0: 2}:
            time.sleep(0.3)
        assert end_offsets(broker.bootstrap, "v2t", 1, "read_committed") == {0: 2}
        try:
            p.send("v2t", 0, [b"late"])
            raise AssertionError("a batch of the timed-out transaction was accepted")
        except ProduceError as err:
            assert err.code in FENCED
        assert p.end(commit=False) == (NONE, pid, e + 1)
        p.send("v2t", 0, [b"again"])
        assert p.end(commit=True) == (NONE, pid, e + 2)
    finally:
        p.close()
    seen, _ = read_all(broker.bootstrap, "v2t", 1, "read_committed")
    assert seen == {0: ["again"]}


def test_transaction_version_setting_keeps_clients_on_v1(make_broker):
    broker = make_broker({**FAST, "transaction_version": 1})
    assert finalized_features(broker.bootstrap)["transaction.version"] == (1, 1)


def test_v2_produce_on_a_broker_that_does_not_coordinate(postgres_url, seaweedfs, tmp_path):
    """Two brokers sharing PostgreSQL and S3: the producer's batches go to the broker
    that does not coordinate its transactional id, which enrolls the partitions in the
    transaction's record; commits and aborts come out exactly as on one broker."""
    from helpers import Broker, free_port
    from test_cluster import cluster_settings

    prefix = f"txn2-{uuid.uuid4().hex[:8]}"
    settings = cluster_settings(postgres_url, seaweedfs, prefix)
    brokers = [Broker(tmp_path / f"b{i}", settings, free_port()).start() for i in range(2)]
    bootstrap = ",".join(b.bootstrap for b in brokers)
    try:
        topic = f"v2x-{uuid.uuid4().hex[:6]}"
        create_topic(bootstrap, topic, 2)
        tid = "v2-cross"
        from txnv2 import find_coordinator
        deadline = time.time() + 20
        while True:
            coordinator = find_coordinator(brokers[0].bootstrap, tid, 1)
            if coordinator == find_coordinator(brokers[1].bootstrap, tid, 1) or \
                    time.time() > deadline:
                break
            time.sleep(0.3)
        other = next(b.bootstrap for b in brokers if b.bootstrap != coordinator)
        p = TxnV2Producer(bootstrap.split(",")[0], tid, produce_to=other)
        try:
            send_round(p, topic, "a", 20, 2)
            assert p.end(commit=True)[0] == NONE
            send_round(p, topic, "b", 20, 2)
            assert p.end(commit=False)[0] == NONE
            send_round(p, topic, "c", 20, 2)
            assert p.end(commit=True)[0] == NONE
        finally:
            p.close()
        seen, _ = read_all(bootstrap, topic, 2, "read_committed", timeout=60)
        assert seen == expected(["a", "c"], 20, 2)
    finally:
        for b in brokers:
            if b.alive():
                b.stop()
