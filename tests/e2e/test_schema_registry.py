"""The built-in schema registry with Confluent's own client (confluent-kafka's
SchemaRegistryClient, AvroSerializer and AvroDeserializer): registration, ids, lookups,
compatibility levels and refusals, deletes, modes; topics whose records must carry a
registered schema id; and every broker serving the same registry."""

import json
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from helpers import free_port
from workload import create_topic

USER_V1 = json.dumps({
    "type": "record", "name": "User", "namespace": "shop",
    "fields": [{"name": "name", "type": "string"},
               {"name": "age", "type": "int"}]})
# Adds an optional field: BACKWARD compatible.
USER_V2 = json.dumps({
    "type": "record", "name": "User", "namespace": "shop",
    "fields": [{"name": "name", "type": "string"},
               {"name": "age", "type": "int"},
               {"name": "email", "type": ["null", "string"], "default": None}]})
# Adds a required field: new readers cannot read old data.
USER_BAD = json.dumps({
    "type": "record", "name": "User", "namespace": "shop",
    "fields": [{"name": "name", "type": "string"},
               {"name": "age", "type": "int"},
               {"name": "country", "type": "string"}]})


@pytest.fixture
def registry_broker(make_broker):
    port = free_port()
    broker = make_broker({"schema_registry_listen": f"127.0.0.1:{port}",
                          "compaction_interval_ms": 300})
    broker.registry_url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 10
    client = SchemaRegistryClient({"url": broker.registry_url})
    while time.time() < deadline:
        try:
            client.get_subjects()
            break
        except Exception:  # noqa: BLE001 - not listening yet
            time.sleep(0.1)
    return broker


def read_values(bootstrap, topic, partitions=1, timeout=30):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"r-{uuid.uuid4()}",
                  "enable.partition.eof": True, "auto.offset.reset": "earliest"})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out, eof = [], set()
    deadline = time.time() + timeout
    while len(eof) < partitions and time.time() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            if m.error().code() == KafkaError._PARTITION_EOF:
                eof.add(m.partition())
            continue
        out.append(m.value())
    c.close()
    assert len(eof) == partitions
    return out


def test_avro_records_round_trip_through_the_registry(registry_broker):
    broker = registry_broker
    client = SchemaRegistryClient({"url": broker.registry_url})
    create_topic(broker.bootstrap, "users", 1)
    serializer = AvroSerializer(client, USER_V1)
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    users = [{"name": f"user-{i}", "age": 20 + i % 50} for i in range(200)]
    for u in users:
        producer.produce("users", value=serializer(
            u, SerializationContext("users", MessageField.VALUE)))
    producer.flush(30)

    assert client.get_subjects() == ["users-value"]
    latest = client.get_latest_version("users-value")
    assert latest.version == 1
    assert json.loads(latest.schema.schema_str) == json.loads(USER_V1)
    # Registering the same schema again, under this subject or another, gives its id.
    same = Schema(USER_V1, "AVRO")
    assert client.register_schema("users-value", same) == latest.schema_id
    assert client.register_schema("people-value", same) == latest.schema_id
    assert client.lookup_schema("people-value", same).version == 1
    assert json.loads(client.get_schema(latest.schema_id).schema_str) == json.loads(USER_V1)

    deserializer = AvroDeserializer(client)
    raw = read_values(broker.bootstrap, "users")
    assert raw[0][0] == 0 and int.from_bytes(raw[0][1:5], "big") == latest.schema_id
    got = [deserializer(v, SerializationContext("users", MessageField.VALUE)) for v in raw]
    assert got == users


def test_compatibility_levels_are_enforced(registry_broker):
    client = SchemaRegistryClient({"url": registry_broker.registry_url})
    subject = "orders-value"
    v1 = client.register_schema(subject, Schema(USER_V1, "AVRO"))
    # BACKWARD by default: an added optional field is fine, an added required one is not.
    assert client.test_compatibility(subject, Schema(USER_V2, "AVRO"))
    assert not client.test_compatibility(subject, Schema(USER_BAD, "AVRO"))
    v2 = client.register_schema(subject, Schema(USER_V2, "AVRO"))
    assert v2 != v1
    assert client.get_versions(subject) == [1, 2]
    with pytest.raises(SchemaRegistryError) as err:
        client.register_schema(subject, Schema(USER_BAD, "AVRO"))
    assert err.value.http_status_code == 409 and err.value.error_code == 409

    # A subject's own level wins over the global one.
    assert client.get_compatibility() == "BACKWARD"
    client.set_compatibility(subject, "NONE")
    assert client.get_compatibility(subject) == "NONE"
    v3 = client.register_schema(subject, Schema(USER_BAD, "AVRO"))
    assert client.get_versions(subject) == [1, 2, 3]
    # FULL_TRANSITIVE checks both directions against every version.
    client.set_compatibility(subject, "FULL_TRANSITIVE")
    widened = json.dumps({
        "type": "record", "name": "User", "namespace": "shop",
        "fields": [{"name": "name", "type": "string"}]})
    assert not client.test_compatibility(subject, Schema(widened, "AVRO"))

    # Bad input gets Confluent's error codes.
    with pytest.raises(SchemaRegistryError) as err:
        client.register_schema(subject, Schema('{"type": "record", "name": "X"}', "AVRO"))
    assert err.value.error_code == 42201
    with pytest.raises(SchemaRegistryError) as err:
        client.get_latest_version("no-such-subject")
    assert err.value.error_code == 40401
    with pytest.raises(SchemaRegistryError) as err:
        client.get_schema(987654)
    assert err.value.error_code == 40403
    with pytest.raises(SchemaRegistryError) as err:
        client.set_compatibility(subject, "SIDEWAYS")
    assert err.value.error_code == 42203

    # Deletes: soft first (ids stay resolvable), then permanent.
    assert client.delete_version(subject, 3) == 3
    assert client.get_versions(subject) == [1, 2]
    assert client.get_schema(v3) is not None
    with pytest.raises(SchemaRegistryError) as err:
        client.delete_subject(subject, permanent=True)
    assert err.value.error_code == 40405
    assert client.delete_subject(subject) == [1, 2]
    assert subject not in client.get_subjects()
    assert client.delete_subject(subject, permanent=True) == [1, 2, 3]
    with pytest.raises(SchemaRegistryError) as err:
        client.get_versions(subject)
    assert err.value.error_code == 40401

    # A read-only subject refuses registrations.
    client.update_mode("frozen-value", "READONLY")
    with pytest.raises(SchemaRegistryError) as err:
        client.register_schema("frozen-value", Schema(USER_V1, "AVRO"))
    assert err.value.error_code == 42205


def test_topics_with_schema_validation_refuse_records_without_a_registered_id(
        registry_broker):
    broker = registry_broker
    client = SchemaRegistryClient({"url": broker.registry_url})
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    futures = admin.create_topics([
        NewTopic("checked", 1, config={"confluent.value.schema.validation": "true"}),
        NewTopic("unchecked", 1)])
    for f in futures.values():
        f.result(30)
    other_id = client.register_schema("elsewhere-value", Schema(USER_V2, "AVRO"))
    serializer = AvroSerializer(client, USER_V1)
    good = serializer({"name": "ok", "age": 1},
                      SerializationContext("checked", MessageField.VALUE))

    results = []
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})

    def produce(topic, value):
        producer.produce(topic, value=value,
                         on_delivery=lambda err, msg: results.append((value, err)))
        producer.flush(30)

    produce("checked", good)
    produce("checked", b"plain bytes")
    produce("checked", b"\x00" + (999_999).to_bytes(4, "big") + b"payload")
    produce("checked", b"\x00" + other_id.to_bytes(4, "big") + good[5:])
    produce("unchecked", b"plain bytes")
    errors = [None if e is None else e.code() for _, e in results]
    assert errors == [None, KafkaError.INVALID_RECORD, KafkaError.INVALID_RECORD,
                      KafkaError.INVALID_RECORD, None]
    assert read_values(broker.bootstrap, "checked") == [good]
    assert read_values(broker.bootstrap, "unchecked") == [b"plain bytes"]


def test_every_broker_serves_the_same_registry(postgres_url, seaweedfs, tmp_path):
    """Two brokers sharing PostgreSQL: a schema registered through one is served, and
    enforced on produce, by the other."""
    from helpers import Broker
    from test_cluster import cluster_settings

    prefix = f"sr-{uuid.uuid4().hex[:8]}"
    ports = [free_port(), free_port()]
    brokers = [Broker(tmp_path / f"b{i}",
                      {**cluster_settings(postgres_url, seaweedfs, prefix),
                       "schema_registry_listen": f"127.0.0.1:{ports[i]}"},
                      free_port()).start() for i in range(2)]
    try:
        urls = [f"http://127.0.0.1:{p}" for p in ports]
        for url in urls:
            deadline = time.time() + 10
            while time.time() < deadline:
                try:
                    SchemaRegistryClient({"url": url}).get_subjects()
                    break
                except Exception:  # noqa: BLE001 - not listening yet
                    time.sleep(0.1)
        a = SchemaRegistryClient({"url": urls[0]})
        b = SchemaRegistryClient({"url": urls[1]})
        subject = f"{prefix}-value"
        sid = a.register_schema(subject, Schema(USER_V1, "AVRO"))
        assert b.get_latest_version(subject).schema_id == sid
        assert json.loads(b.get_schema(sid).schema_str) == json.loads(USER_V1)
        assert b.register_schema(subject, Schema(USER_V1, "AVRO")) == sid
        with pytest.raises(SchemaRegistryError) as err:
            b.register_schema(subject, Schema(USER_BAD, "AVRO"))
        assert err.value.error_code == 409

        admin = AdminClient({"bootstrap.servers": brokers[0].bootstrap})
        admin.create_topics(
            [NewTopic(prefix, 1, config={"confluent.value.schema.validation": "true"})]
        )[prefix].result(30)
        framed = AvroSerializer(b, USER_V1)({"name": "x", "age": 2},
                                            SerializationContext(prefix, MessageField.VALUE))
        results = []
        p = Producer({"bootstrap.servers": brokers[1].bootstrap})
        for v in (framed, b"\x00\x00\x0f\x42\x40" + framed[5:]):
            # One record per batch: a refused record refuses its whole batch.
            p.produce(prefix, value=v, on_delivery=lambda e, m: results.append(e))
            p.flush(30)
        assert [None if e is None else e.code() for e in results] == [
            None, KafkaError.INVALID_RECORD]
    finally:
        for br in brokers:
            if br.alive():
                br.stop()


def test_schemas_command(registry_broker, tmp_path):
    """`icestream schemas`: register, list, show, check (exit status 1 when not
    compatible)."""
    import subprocess
    from helpers import icestream_bin

    def run(*args):
        return subprocess.run([icestream_bin(), "schemas", "--registry",
                               registry_broker.registry_url, *args],
                              capture_output=True, text=True, timeout=60)

    v1, bad = tmp_path / "v1.avsc", tmp_path / "bad.avsc"
    v1.write_text(USER_V1)
    bad.write_text(USER_BAD)
    r = run("register", "cli-value", "--file", str(v1))
    assert r.returncode == 0, r.stderr
    sid = int(r.stdout.strip())
    r = run("list")
    assert r.returncode == 0 and "cli-value" in r.stdout and str(sid) in r.stdout, r
    r = run("show", "cli-value")
    assert r.returncode == 0 and '"namespace": "shop"' in r.stdout, r
    assert run("check", "cli-value", "--file", str(v1)).returncode == 0
    r = run("check", "cli-value", "--file", str(bad))
    assert r.returncode == 1 and "not compatible" in r.stderr, r
    r = run("show", "missing-value")
    assert r.returncode == 1 and "40401" in r.stderr, r
