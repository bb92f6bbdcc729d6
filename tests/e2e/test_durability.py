"""Every acknowledged record survives a kill -9 of the broker, once and at its offset."""

import subprocess
import sys
import time
from pathlib import Path

from helpers import Broker
from workload import consume, create_topic


def run_crash_test(broker: Broker, tmp_path: Path, count=200_000, partitions=8):
    topic = "crash"
    create_topic(broker.bootstrap, topic, partitions)
    acks_file = tmp_path / "acks.txt"
    producer = subprocess.Popen(
        [sys.executable, str(Path(__file__).parent / "producer_loop.py"), broker.bootstrap,
         topic, str(count), str(acks_file)],
        stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline:
        if acks_file.exists() and sum(1 for _ in open(acks_file)) >= count // 4:
            break
        time.sleep(0.05)
    else:
        producer.kill()
        raise AssertionError("producer made no progress")
    broker.kill9()
    acked_before = sum(1 for _ in open(acks_file))
    time.sleep(1)
    broker.start()
    _, err = producer.communicate(timeout=300)
    assert producer.returncode == 0, err.decode()

    acked = {}
    for line in open(acks_file):
        key, p, o = line.split()
        acked[key] = (int(p), int(o))
    assert len(acked) == count
    assert acked_before < count, "the crash happened after everything was acknowledged"

    consumed = consume(broker.bootstrap, topic, partitions, count, timeout=180)
    by_key = {}
    for (p, o), (key, value, _, _) in consumed.items():
        k = key.decode()
        assert k not in by_key, f"{k} stored twice: at {by_key[k]} and {(p, o)}"
        by_key[k] = (p, o)
        assert value == f"value-{k[3:]}".encode() * 8
    missing = [k for k in acked if k not in by_key]
    assert not missing, f"{len(missing)} acknowledged records lost, e.g. {missing[:5]}"
    moved = [k for k, pos in acked.items() if by_key[k] != pos]
    assert not moved, f"records not at their acknowledged offsets, e.g. {moved[:5]}"
    for p in range(partitions):
        offs = sorted(o for (pp, o) in consumed if pp == p)
        assert offs == list(range(len(offs))), f"partition {p} has gaps"


def test_kill9_mid_stream_loses_nothing(tmp_path):
    broker = Broker(tmp_path / "broker").start()
    try:
        run_crash_test(broker, tmp_path)
    finally:
        broker.stop()


def test_graceful_restart_keeps_everything(tmp_path):
    from workload import assert_same, make_records, produce

    broker = Broker(tmp_path / "broker").start()
    try:
        create_topic(broker.bootstrap, "restart", 4)
        records = make_records(20_000, 4, seed=11)
        acked, errors = produce(broker.bootstrap, "restart", records)
        assert not errors
        assert broker.stop() == 0
        broker.start()
        consumed = consume(broker.bootstrap, "restart", 4, len(records))
        assert_same(acked, consumed)
        # New records continue the same offsets.
        more, _ = produce(broker.bootstrap, "restart", make_records(100, 4, seed=12))
        assert min(o for _, o in more) == 5000
    finally:
        broker.stop()
