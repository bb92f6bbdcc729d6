"""The same end-to-end runs with WAL segments on SeaweedFS (S3) instead of a directory."""

import uuid

import pytest

from helpers import Broker
from test_durability import run_crash_test
from workload import assert_dense, assert_same, consume, create_topic, make_records, produce


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_roundtrip_on_seaweedfs(seaweedfs, make_broker, codec):
    prefix = f"rt-{uuid.uuid4().hex[:8]}"
    broker = make_broker({"object_store": seaweedfs.s3_url(prefix=prefix)})
    topic = f"s3-{codec}"
    create_topic(broker.bootstrap, topic, 8)
    records = make_records(100_000, 8, seed=5)
    acked, errors = produce(broker.bootstrap, topic, records, **{"compression.type": codec})
    assert not errors
    consumed = consume(broker.bootstrap, topic, 8, len(records))
    assert_same(acked, consumed)
    assert_dense(consumed)


def test_kill9_on_seaweedfs(seaweedfs, tmp_path):
    prefix = f"crash-{uuid.uuid4().hex[:8]}"
    broker = Broker(tmp_path / "broker", {"object_store": seaweedfs.s3_url(prefix=prefix)}).start()
    try:
        run_crash_test(broker, tmp_path, count=100_000)
    finally:
        broker.stop()
