"""Bad input gets the proper Kafka error, or a closed connection with a log line; the
broker keeps serving everyone else and nothing stored is affected."""

import struct

from confluent_kafka import Producer

import rawkafka
from rawkafka import Conn, batch, fetch_v4, produce_v3
from workload import create_topic

CORRUPT_MESSAGE = 2
UNKNOWN_TOPIC_OR_PARTITION = 3
OFFSET_OUT_OF_RANGE = 1
MESSAGE_TOO_LARGE = 10
UNSUPPORTED_VERSION = 35
INVALID_RECORD = 87


def healthy(broker, topic="canary"):
    """A normal client still produces and reads back."""
    c = Conn(broker.bootstrap)
    err, base = produce_v3(c, topic, 0, batch([b"still-alive"]))
    assert err == 0, err
    err, hw, records = fetch_v4(c, topic, 0, base)
    assert err == 0 and hw == base + 1 and b"still-alive" in records
    c.close()


def test_malformed_and_unknown_requests_close_only_that_connection(make_broker):
    broker = make_broker({"socket_request_max_bytes": 1_048_576})
    create_topic(broker.bootstrap, "canary", 1)
    bystander = Conn(broker.bootstrap)
    err, _ = produce_v3(bystander, "canary", 0, batch([b"before"]))
    assert err == 0

    garbage = Conn(broker.bootstrap)
    garbage.send_raw(struct.pack(">i", 5) + b"hello")
    assert garbage.closed_by_peer()

    oversize = Conn(broker.bootstrap)
    oversize.send_raw(struct.pack(">i", 2_000_000) + b"\x00" * 100)
    assert oversize.closed_by_peer()

    negative = Conn(broker.bootstrap)
    negative.send_raw(struct.pack(">i", -1))
    assert negative.closed_by_peer()

    unknown_api = Conn(broker.bootstrap)
    assert unknown_api.request(999, 0, b"") is None

    unknown_version = Conn(broker.bootstrap)
    assert unknown_version.request(3, 99, b"") is None  # Metadata v99

    truncated = Conn(broker.bootstrap)
    # A Produce v3 header followed by a body cut short.
    assert truncated.request(0, 3, b"\xff\xff\x00") is None

    log = broker.log()
    assert "closing connection" in log
    assert "exceeds socket_request_max_bytes" in log
    assert "unknown api key 999" in log

    # The bystander's connection and data are untouched.
    err, hw, records = fetch_v4(bystander, "canary", 0, 0)
    assert err == 0 and hw == 1 and b"before" in records
    healthy(broker)


def test_api_versions_newer_than_supported_gets_kip511_answer(broker):
    create_topic(broker.bootstrap, "canary", 1)
    c = Conn(broker.bootstrap)
    error, keys = rawkafka.api_versions(c, 99)
    assert error == UNSUPPORTED_VERSION
    api_versions = [k for k in keys if k[0] == 18]
    assert api_versions and api_versions[0][2] >= 3
    error, keys = rawkafka.api_versions(c, 0)
    assert error == 0 and any(k[0] == 0 for k in keys)


def test_bad_batches_get_error_codes(make_broker):
    broker = make_broker({"auto_create_topics": "false"})
    create_topic(broker.bootstrap, "strict", 2, {"max.message.bytes": "2000"})
    create_topic(broker.bootstrap, "canary", 1)
    c = Conn(broker.bootstrap)
    err, base = produce_v3(c, "strict", 0, batch([b"good-1"]))
    assert (err, base) == (0, 0)

    good = batch([b"payload"])
    corrupt = bytearray(good)
    corrupt[-1] ^= 0xFF
    assert produce_v3(c, "strict", 0, bytes(corrupt))[0] == CORRUPT_MESSAGE

    wrong_magic = bytearray(good)
    wrong_magic[16] = 1
    assert produce_v3(c, "strict", 0, bytes(wrong_magic))[0] != 0

    truncated = good[:-5]
    assert produce_v3(c, "strict", 0, truncated)[0] == CORRUPT_MESSAGE

    big = batch([b"x" * 5000])
    assert produce_v3(c, "strict", 0, big)[0] == MESSAGE_TOO_LARGE

    assert produce_v3(c, "no-such-topic", 0, good)[0] == UNKNOWN_TOPIC_OR_PARTITION
    assert produce_v3(c, "strict", 7, good)[0] == UNKNOWN_TOPIC_OR_PARTITION
    assert produce_v3(c, "strict", -1, good)[0] == UNKNOWN_TOPIC_OR_PARTITION
    assert produce_v3(c, "strict", 0, b"")[0] == INVALID_RECORD

    err, hw, _ = fetch_v4(c, "strict", 0, -5)
    assert err == OFFSET_OUT_OF_RANGE and hw == 1
    err, hw, _ = fetch_v4(c, "strict", 0, 10**12)
    assert err == OFFSET_OUT_OF_RANGE and hw == 1
    assert fetch_v4(c, "no-such-topic", 0, 0)[0] == UNKNOWN_TOPIC_OR_PARTITION

    # Nothing bad was stored: the log holds exactly the good records, densely.
    err, base = produce_v3(c, "strict", 0, batch([b"good-2"]))
    assert (err, base) == (0, 1)
    err, hw, records = fetch_v4(c, "strict", 0, 0)
    assert err == 0 and hw == 2
    assert b"good-1" in records and b"good-2" in records and b"payload" not in records
    healthy(broker)


def test_unknown_topic_with_auto_create_off_via_librdkafka(make_broker):
    broker = make_broker({"auto_create_topics": "false"})
    errors = []
    p = Producer({"bootstrap.servers": broker.bootstrap, "message.timeout.ms": 3000})
    p.produce("missing", b"v", on_delivery=lambda err, msg: errors.append(err))
    p.flush(10)
    # librdkafka waits for the topic to appear, then times the message out (as with Kafka).
    assert errors and errors[0] is not None
    assert errors[0].code() in (UNKNOWN_TOPIC_OR_PARTITION, -188, -192)
    from confluent_kafka.admin import AdminClient
    topics = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=10).topics
    assert "missing" not in topics
