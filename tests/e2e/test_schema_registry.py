"""The built-in schema registry with Confluent's own client (confluent-kafka's
SchemaRegistryClient, AvroSerializer and AvroDeserializer): registration, ids, lookups,
compatibility levels and refusals, deletes, modes; topics whose records must carry a
registered schema id; and every broker serving the same registry."""

import json
import time
import urllib.error
import urllib.request
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
                          "admin_listen": f"127.0.0.1:{free_port()}",
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


def test_slow_or_idle_clients_do_not_hold_the_registry(registry_broker):
    """A client that never finishes its request head is disconnected after the 10 s
    header-read timeout, and serves nobody meanwhile: Confluent's client still answers."""
    import socket
    host, port = registry_broker.registry_url.removeprefix("http://").split(":")
    slow = socket.create_connection((host, int(port)))
    slow.sendall(b"GET /subjects HTTP/1.1\r\nHost: x\r\n")
    idle = socket.create_connection((host, int(port)))
    try:
        assert SchemaRegistryClient({"url": registry_broker.registry_url}).get_subjects() == []
        started = time.time()
        for s in (slow, idle):
            s.settimeout(20)
            assert s.recv(1) == b"", "a connection without a request head stayed open"
        assert time.time() - started < 15
    finally:
        slow.close()
        idle.close()


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


def post_schema(url, subject, body):
    """POST a registration the way a registry-to-registry exporter does (with `id` and
    `version`, which the client's register call does not send)."""
    request = urllib.request.Request(
        f"{url}/subjects/{subject}/versions", data=json.dumps(body).encode(),
        headers={"Content-Type": "application/vnd.schemaregistry.v1+json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_import_mode_keeps_the_ids_and_versions_of_another_registry(registry_broker):
    url = registry_broker.registry_url
    client = SchemaRegistryClient({"url": url})
    client.register_schema("existing-value", Schema(USER_V1, "AVRO"))
    # IMPORT needs an empty subject, or force.
    with pytest.raises(SchemaRegistryError) as err:
        client.update_mode("existing-value", "IMPORT")
    assert err.value.error_code == 42205
    # An id outside IMPORT mode is refused.
    status, body = post_schema(url, "existing-value",
                               {"schema": USER_V2, "id": 500, "version": 2})
    assert status == 422 and body["error_code"] == 42205, body

    assert client.update_mode("moved-value", "IMPORT") == "IMPORT"
    assert client.get_mode("moved-value") == "IMPORT"
    status, body = post_schema(url, "moved-value", {"schema": USER_V1, "id": 1000, "version": 3})
    assert (status, body) == (200, {"id": 1000})
    status, body = post_schema(url, "moved-value", {"schema": USER_V2, "id": 1001, "version": 7})
    assert (status, body) == (200, {"id": 1001})
    # The same import again is fine; another schema under a taken id or version is not.
    assert post_schema(url, "moved-value", {"schema": USER_V1, "id": 1000, "version": 3}) == (
        200, {"id": 1000})
    status, body = post_schema(url, "moved-value", {"schema": USER_BAD, "id": 1001, "version": 8})
    assert status == 422 and body["error_code"] == 42207, body
    status, body = post_schema(url, "moved-value", {"schema": USER_BAD, "id": 1002, "version": 7})
    assert status == 422 and body["error_code"] == 42207, body
    # Compatibility is not checked while importing (USER_BAD is not BACKWARD of USER_V2).
    assert post_schema(url, "moved-value", {"schema": USER_BAD, "id": 1002, "version": 9}) == (
        200, {"id": 1002})

    assert client.get_versions("moved-value") == [3, 7, 9]
    v7 = client.get_version("moved-value", 7)
    assert v7.schema_id == 1001 and json.loads(v7.schema.schema_str) == json.loads(USER_V2)
    assert json.loads(client.get_schema(1000).schema_str) == json.loads(USER_V1)

    # Back to READWRITE: the imported schemas keep their ids, new ones come after them,
    # and records framed with an imported id decode with the client's deserializer.
    client.update_mode("moved-value", "READWRITE")
    client.set_compatibility("moved-value", "NONE")
    assert client.register_schema("moved-value", Schema(USER_BAD, "AVRO")) == 1002
    widened = json.dumps({"type": "record", "name": "User", "namespace": "shop",
                          "fields": [{"name": "name", "type": "string"}]})
    new_id = client.register_schema("moved-value", Schema(widened, "AVRO"))
    assert new_id > 1002
    assert client.get_versions("moved-value") == [3, 7, 9, 10]

    create_topic(registry_broker.bootstrap, "moved", 1)
    serializer = AvroSerializer(client, USER_V1, conf={"auto.register.schemas": False,
                                                       "use.latest.version": False})
    # The serializer looks the schema up in "moved-value": version 3, id 1000.
    producer = Producer({"bootstrap.servers": registry_broker.bootstrap})
    user = {"name": "ada", "age": 36}
    producer.produce("moved", value=serializer(
        user, SerializationContext("moved", MessageField.VALUE)))
    producer.flush(30)
    raw = read_values(registry_broker.bootstrap, "moved")
    assert int.from_bytes(raw[0][1:5], "big") == 1000
    deserializer = AvroDeserializer(client)
    assert deserializer(raw[0], SerializationContext("moved", MessageField.VALUE)) == user


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
    """Three brokers sharing PostgreSQL: a schema registered through one is served, and
    enforced on produce, by the others."""
    from helpers import Broker
    from test_cluster import cluster_settings

    prefix = f"sr-{uuid.uuid4().hex[:8]}"
    ports = [free_port() for _ in range(3)]
    brokers = [Broker(tmp_path / f"b{i}",
                      {**cluster_settings(postgres_url, seaweedfs, prefix),
                       "schema_registry_listen": f"127.0.0.1:{ports[i]}"},
                      free_port()).start() for i in range(3)]
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
        # A version added through the third broker is the latest everywhere.
        c = SchemaRegistryClient({"url": urls[2]})
        sid2 = c.register_schema(subject, Schema(USER_V2, "AVRO"))
        assert a.get_latest_version(subject).schema_id == sid2
        assert b.get_versions(subject) == [1, 2]

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


ORDER_V1 = json.dumps({
    "type": "record", "name": "Order", "namespace": "shop",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "customer", "type": {
            "type": "record", "name": "Customer",
            "fields": [{"name": "name", "type": "string"},
                       {"name": "vip", "type": "boolean"}]}},
        {"name": "items", "type": {"type": "array", "items": "string"}},
        {"name": "attributes", "type": {"type": "map", "values": "int"}},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal",
                                    "precision": 10, "scale": 2}},
        {"name": "ref", "type": {"type": "string", "logicalType": "uuid"}},
        {"name": "note", "type": ["null", "string"], "default": None},
        {"name": "offset", "type": "int"},
    ]})
ORDER_V2 = json.loads(ORDER_V1)
ORDER_V2["fields"].append({"name": "coupon", "type": ["null", "string"], "default": None})
ORDER_V2 = json.dumps(ORDER_V2)


def order(i, coupon=None):
    import datetime
    import decimal
    o = {"id": i, "customer": {"name": f"c{i}", "vip": i % 2 == 0},
         "items": [f"item-{i}-{j}" for j in range(i % 3)],
         "attributes": {"size": i, "color": i * 10},
         "day": datetime.date(2026, 11, 1 + i % 28),
         "at": datetime.datetime(2026, 11, 30, 12, 0, i % 60,
                                 tzinfo=datetime.timezone.utc),
         "amount": decimal.Decimal(f"{i}.25"),
         "ref": uuid.UUID(int=i),
         "note": None if i % 2 else f"note-{i}",
         "offset": -i}
    if coupon is not None:
        o["coupon"] = coupon
    return o


def test_tables_get_typed_columns_from_the_value_schema(registry_broker):
    """An Avro topic's table has the record's fields as typed columns (nested records,
    arrays, maps, logical types, optional fields; `offset` clashes and becomes
    `value_offset`), read by PyIceberg and DuckDB; the raw value stays byte-exact; a new
    schema version adds its column (old rows null); a value that does not decode keeps
    its bytes and null columns."""
    from tables import duck_connection, sql_catalog, wait_for_rows

    broker = registry_broker
    client = SchemaRegistryClient({"url": broker.registry_url})
    create_topic(broker.bootstrap, "orders", 1)
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    ser1 = AvroSerializer(client, ORDER_V1)
    ctx = SerializationContext("orders", MessageField.VALUE)
    sent = {}
    for i in range(20):
        sent[i] = ser1(order(i), ctx)
        producer.produce("orders", value=sent[i])
    producer.flush(30)
    catalog = sql_catalog(broker)
    wait_for_rows(catalog, "orders", 20)

    table = catalog.load_table(("kafka", "orders"))
    names = [f.name for f in table.schema().fields]
    assert names[:6] == ["partition", "offset", "timestamp", "key", "value", "headers"]
    assert names[6:] == ["id", "customer", "items", "attributes", "day", "at", "amount",
                         "ref", "note", "value_offset"]
    got = {r["offset"]: r for r in table.scan().to_arrow().to_pylist()}
    for i in range(20):
        r, want = got[i], order(i)
        assert r["value"] == sent[i]
        assert r["id"] == i and r["customer"] == want["customer"]
        assert r["items"] == want["items"]
        assert dict(r["attributes"]) == want["attributes"]
        assert r["day"] == want["day"] and r["at"] == want["at"]
        assert r["amount"] == want["amount"]
        assert r["ref"] == want["ref"].bytes or r["ref"] == want["ref"]
        assert r["note"] == want["note"] and r["value_offset"] == -i

    # v2 adds an optional field: a new column, null in the rows written before.
    ser2 = AvroSerializer(client, ORDER_V2)
    for i in range(20, 30):
        sent[i] = ser2(order(i, coupon=f"C{i}"), ctx)
        producer.produce("orders", value=sent[i])
    # A value no schema decodes: stored as bytes, typed columns null.
    producer.produce("orders", value=b"not avro at all")
    producer.flush(30)
    wait_for_rows(catalog, "orders", 31)
    table = catalog.load_table(("kafka", "orders"))
    assert [f.name for f in table.schema().fields][-1] == "coupon"
    got = {r["offset"]: r for r in table.scan().to_arrow().to_pylist()}
    assert all(got[i]["coupon"] is None and got[i]["id"] == i for i in range(20))
    assert all(got[i]["coupon"] == f"C{i}" and got[i]["id"] == i for i in range(20, 30))
    assert got[30]["value"] == b"not avro at all" and got[30]["id"] is None
    from helpers import metric
    assert metric(broker, "icestream_compaction_undecodable_values_total") >= 1

    # DuckDB reads the typed columns through the table's metadata.
    con = duck_connection()
    location = table.metadata_location
    total, vips, coupons = con.execute(
        f"SELECT sum(id), count(*) FILTER (WHERE customer.vip), count(coupon) "
        f"FROM iceberg_scan('{location}')").fetchone()
    assert total == sum(range(30)) and vips == 15 and coupons == 10
    # Consumers still get the bytes they produced.
    assert read_values(broker.bootstrap, "orders") == [sent[i] for i in range(30)] + [
        b"not avro at all"]


def test_file_rewrites_across_a_schema_change_keep_the_typed_columns(make_broker):
    """Small files written under v1 and under v2 of the value schema are merged into files
    of the current table schema: nothing lost, v1 rows keep null in the added column."""
    from helpers import admin_settings, metric
    from tables import sql_catalog, wait_for_rows

    port = free_port()
    broker = make_broker(admin_settings({
        "schema_registry_listen": f"127.0.0.1:{port}", "compaction_interval_ms": 100,
        "table_rewrite_interval_ms": 300, "table_max_small_files": 2}))
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 10
    while True:
        try:
            client = SchemaRegistryClient({"url": url})
            client.get_subjects()
            break
        except Exception:  # noqa: BLE001 - not listening yet
            assert time.time() < deadline
            time.sleep(0.1)
    create_topic(broker.bootstrap, "merged", 1)
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    ctx = SerializationContext("merged", MessageField.VALUE)
    catalog = sql_catalog(broker)
    n = 0
    for version, schema in ((1, ORDER_V1), (2, ORDER_V2)):
        ser = AvroSerializer(client, schema)
        for _ in range(6):  # one small file per burst
            for _ in range(5):
                producer.produce("merged", value=ser(
                    order(n, coupon=f"C{n}" if version == 2 else None), ctx))
                n += 1
            producer.flush(30)
            wait_for_rows(catalog, "merged", n)
    deadline = time.time() + 60
    while time.time() < deadline:
        table = catalog.load_table(("kafka", "merged"))
        files = [t.file for t in table.scan().plan_files()]
        if metric(broker, "icestream_table_rewrites_total") > 0 and len(files) <= 3:
            break
        time.sleep(0.5)
    assert metric(broker, "icestream_table_rewrites_total") > 0
    got = {r["offset"]: r for r in table.scan().to_arrow().to_pylist()}
    assert sorted(got) == list(range(n))
    for i, r in got.items():
        assert r["id"] == i and r["customer"]["name"] == f"c{i}"
        assert r["coupon"] == (f"C{i}" if i >= 30 else None)


READING_V1 = {
    "$schema": "http://json-schema.org/draft-07/schema#", "title": "Reading",
    "type": "object", "additionalProperties": False, "required": ["sensor"],
    "properties": {
        "sensor": {"type": "string"},
        "value": {"type": "number"},
        "count": {"type": "integer"},
        "ok": {"type": "boolean"},
        "day": {"type": "string", "format": "date"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "loc": {"type": "object", "properties": {"lat": {"type": "number"},
                                                 "lon": {"type": "number"}}},
    }}


def test_json_schema_topics(registry_broker):
    """JSON Schema through Confluent's JSONSerializer: registered, compatibility checked
    as document-set inclusion, and the table gets typed columns (value clashes and
    becomes value_value); an added property of a closed schema is compatible and becomes
    a column."""
    import datetime
    from confluent_kafka.schema_registry.json_schema import JSONDeserializer, JSONSerializer
    from tables import sql_catalog, wait_for_rows

    broker = registry_broker
    client = SchemaRegistryClient({"url": broker.registry_url})
    assert "JSON" in client._rest_client.get("schemas/types")
    create_topic(broker.bootstrap, "readings", 1)
    ctx = SerializationContext("readings", MessageField.VALUE)
    ser = JSONSerializer(json.dumps(READING_V1), client)
    docs = [{"sensor": f"s{i}", "value": i / 4, "count": i, "ok": i % 2 == 0,
             "day": f"2026-11-{i + 1:02d}", "tags": ["a"] * (i % 3),
             "loc": {"lat": 1.5 * i, "lon": -2.0}} for i in range(10)]
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    for d in docs:
        producer.produce("readings", value=ser(d, ctx))
    producer.flush(30)
    de = JSONDeserializer(None, schema_registry_client=client)
    assert [de(v, ctx) for v in read_values(broker.bootstrap, "readings")] == docs

    # Set inclusion: a property added to a closed schema is fine, a narrowed type is not.
    v2 = json.loads(json.dumps(READING_V1))
    v2["properties"]["unit"] = {"type": "string"}
    bad = json.loads(json.dumps(READING_V1))
    bad["properties"]["count"] = {"type": "string"}
    assert client.test_compatibility("readings-value", Schema(json.dumps(v2), "JSON"))
    assert not client.test_compatibility("readings-value", Schema(json.dumps(bad), "JSON"))
    with pytest.raises(SchemaRegistryError) as err:
        client.register_schema("readings-value", Schema('{"type": 12}', "JSON"))
    assert err.value.error_code == 42201

    catalog = sql_catalog(broker)
    wait_for_rows(catalog, "readings", 10)
    ser2 = JSONSerializer(json.dumps(v2), client)
    producer.produce("readings", value=ser2({"sensor": "s10", "unit": "C"}, ctx))
    producer.flush(30)
    wait_for_rows(catalog, "readings", 11)
    table = catalog.load_table(("kafka", "readings"))
    # Properties become columns in name order; added ones come last.
    assert [f.name for f in table.schema().fields][6:] == [
        "count", "day", "loc", "ok", "sensor", "tags", "value_value", "unit"]
    got = {r["offset"]: r for r in table.scan().to_arrow().to_pylist()}
    for i, d in enumerate(docs):
        r = got[i]
        assert (r["sensor"], r["value_value"], r["count"], r["ok"]) == (
            d["sensor"], d["value"], d["count"], d["ok"])
        assert r["day"] == datetime.date(2026, 11, i + 1)
        assert r["tags"] == d["tags"] and r["loc"] == d["loc"] and r["unit"] is None
    assert got[10]["sensor"] == "s10" and got[10]["unit"] == "C"
    assert got[10]["count"] is None


def payment_class():
    """A Protobuf message class built at run time (no protoc): shop.Payment with scalars,
    a repeated field, an enum, a Timestamp, a map and a nested message."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    from google.protobuf import timestamp_pb2  # noqa: F401 - registers Timestamp
    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(
        name="shop/payment.proto", package="shop", syntax="proto3",
        dependency=["google/protobuf/timestamp.proto"])
    status = fdp.enum_type.add(name="Status")
    status.value.add(name="NEW", number=0)
    status.value.add(name="PAID", number=1)
    msg = fdp.message_type.add(name="Payment")
    detail = msg.nested_type.add(name="Detail")
    detail.field.add(name="note", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    entry = msg.nested_type.add(name="MetaEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    entry.field.add(name="value", number=2, type=F.TYPE_INT32, label=F.LABEL_OPTIONAL)
    for name, number, ftype, label, type_name in [
            ("id", 1, F.TYPE_INT64, F.LABEL_OPTIONAL, None),
            ("user", 2, F.TYPE_STRING, F.LABEL_OPTIONAL, None),
            ("amount", 3, F.TYPE_DOUBLE, F.LABEL_OPTIONAL, None),
            ("tags", 4, F.TYPE_STRING, F.LABEL_REPEATED, None),
            ("status", 5, F.TYPE_ENUM, F.LABEL_OPTIONAL, ".shop.Status"),
            ("at", 6, F.TYPE_MESSAGE, F.LABEL_OPTIONAL, ".google.protobuf.Timestamp"),
            ("meta", 7, F.TYPE_MESSAGE, F.LABEL_REPEATED, ".shop.Payment.MetaEntry"),
            ("detail", 8, F.TYPE_MESSAGE, F.LABEL_OPTIONAL, ".shop.Payment.Detail")]:
        f = msg.field.add(name=name, number=number, type=ftype, label=label)
        if type_name:
            f.type_name = type_name
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(fdp.name)
    except KeyError:
        pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("shop.Payment"))


def test_protobuf_topics(registry_broker):
    """Protobuf through Confluent's ProtobufSerializer (a serialized descriptor with its
    import as a reference): round trip, compatibility by field numbers and wire types
    (also for .proto source), and typed columns in the table."""
    import datetime
    from confluent_kafka.schema_registry.protobuf import (ProtobufDeserializer,
                                                          ProtobufSerializer)
    from tables import sql_catalog, wait_for_rows

    broker = registry_broker
    client = SchemaRegistryClient({"url": broker.registry_url})
    Payment = payment_class()
    create_topic(broker.bootstrap, "payments", 1)
    ctx = SerializationContext("payments", MessageField.VALUE)
    ser = ProtobufSerializer(Payment, client, {"use.deprecated.format": False})
    messages = []
    for i in range(12):
        m = Payment(id=i, user=f"u{i}", amount=i * 1.5, tags=["x"] * (i % 3),
                    status=i % 2)
        m.at.FromDatetime(datetime.datetime(2026, 11, 30, 8, 0, i))
        m.meta["n"] = i
        if i % 2:
            m.detail.note = f"note {i}"
        messages.append(m)
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    for m in messages:
        producer.produce("payments", value=ser(m, ctx))
    producer.flush(30)
    de = ProtobufDeserializer(Payment, {"use.deprecated.format": False})
    assert [de(v, ctx) for v in read_values(broker.bootstrap, "payments")] == messages

    # The same messages as .proto source, with one field's type and one field to choose.
    source = ('syntax = "proto3"; package shop; import "google/protobuf/timestamp.proto"; '
              'enum Status { NEW = 0; PAID = 1; } '
              'message Payment { message Detail { string note = 1; } '
              'int64 id = 1; string user = 2; %s amount = 3; repeated string tags = 4; '
              'Status status = 5; google.protobuf.Timestamp at = 6; '
              'map<string, int32> meta = 7; Detail detail = 8; %s }')
    assert client.test_compatibility(
        "payments-value", Schema(source % ("double", "string extra = 9;"), "PROTOBUF"))
    assert not client.test_compatibility(
        "payments-value", Schema(source % ("string", ""), "PROTOBUF"))
    with pytest.raises(SchemaRegistryError) as err:
        client.register_schema("payments-value",
                               Schema("syntax = 'proto3'; message {", "PROTOBUF"))
    assert err.value.error_code == 42201

    catalog = sql_catalog(broker)
    wait_for_rows(catalog, "payments", 12)
    table = catalog.load_table(("kafka", "payments"))
    assert [f.name for f in table.schema().fields][6:] == [
        "id", "user", "amount", "tags", "status", "at", "meta", "detail"]
    got = {r["offset"]: r for r in table.scan().to_arrow().to_pylist()}
    for i, m in enumerate(messages):
        r = got[i]
        assert (r["id"], r["user"], r["amount"], r["tags"]) == (i, f"u{i}", i * 1.5, list(m.tags))
        assert r["status"] == ("PAID" if i % 2 else "NEW")
        assert r["at"] == datetime.datetime(2026, 11, 30, 8, 0, i, tzinfo=datetime.timezone.utc)
        assert dict(r["meta"]) == {"n": i}
        assert r["detail"] == ({"note": f"note {i}"} if i % 2 else None)


def test_avro_references(registry_broker):
    """A schema that uses a type registered under another subject (a reference): it
    registers, the referenced version lists it in `referencedby`, and the referenced
    version cannot be dropped from under it silently (its id stays resolvable)."""
    from confluent_kafka.schema_registry import SchemaReference

    client = SchemaRegistryClient({"url": registry_broker.registry_url})
    customer = json.dumps({"type": "record", "name": "Customer", "namespace": "shop",
                           "fields": [{"name": "name", "type": "string"}]})
    order = json.dumps({"type": "record", "name": "Order", "namespace": "shop",
                        "fields": [{"name": "id", "type": "long"},
                                   {"name": "customer", "type": "shop.Customer"}]})
    client.register_schema("customer", Schema(customer, "AVRO"))
    refs = [SchemaReference("shop.Customer", "customer", 1)]
    oid = client.register_schema("order-value", Schema(order, "AVRO", refs))
    got = client.get_schema(oid)
    assert [(r.name, r.subject, r.version) for r in got.references] == [
        ("shop.Customer", "customer", 1)]
    assert client._rest_client.get("subjects/customer/versions/1/referencedby") == [oid]
    # Without the reference the name is unknown.
    with pytest.raises(SchemaRegistryError) as err:
        client.register_schema("order2-value", Schema(order, "AVRO"))
    assert err.value.error_code == 42201
