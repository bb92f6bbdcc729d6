"""Security with real clients: TLS (a CA made here with openssl), mTLS, SASL PLAIN and
SCRAM-SHA-256/512 (librdkafka via confluent-kafka, kcat, kafka-python), users created
with `icestream users` and through the Kafka API, ACLs through kafka-python's admin API
enforced with Kafka's error codes, HTTP basic on the admin endpoint and the schema
registry, re-authentication, and brokers sharing users and ACLs."""

import base64
import subprocess
import time
import urllib.error
import urllib.request
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import (AdminClient, NewTopic, ScramCredentialInfo, ScramMechanism,
                                   UserScramCredentialDeletion, UserScramCredentialUpsertion)
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import (ACL, ACLFilter, ACLOperation, ACLPermissionType, ACLResourcePatternType,
                         ResourcePattern, ResourcePatternFilter, ResourceType)
from kafka.errors import (ClusterAuthorizationFailedError, GroupAuthorizationFailedError,
                          KafkaError as KafkaPythonError, TopicAuthorizationFailedError)

from helpers import free_port, icestream_bin

# kafka-python reports a refused InitProducerId as a KafkaError wrapping the cluster error.
KafkaTimeoutOrAuthorization = (ClusterAuthorizationFailedError, KafkaPythonError)

ADMIN = ("admin", "admin-secret")
ALICE = ("alice", "alice-secret")
BOB = ("bob", "bob-secret")


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, a server certificate for 127.0.0.1, and a client certificate for CN=alice."""
    d = tmp_path_factory.mktemp("pki")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
            "-days", "2", "-subj", "/CN=icestream test CA", cwd=d)
    for name, subject, ext in [
        ("server", "/CN=localhost", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
        ("client", "/O=example/OU=eng/CN=alice", "extendedKeyUsage=clientAuth"),
    ]:
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
                f"{name}.csr", "-subj", subject, cwd=d)
        (d / f"{name}.ext").write_text(ext + "\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext",
                cwd=d)
    return d


def add_user(data_dir, user, password, extra=()):
    data_dir.mkdir(parents=True, exist_ok=True)
    out = subprocess.run([icestream_bin(), "users", "--data-dir", str(data_dir), *extra, "add", user,
                          "--password", password], check=True, capture_output=True, text=True)
    assert "credential set" in out.stdout


class Ports:
    def __init__(self):
        self.plain, self.ssl, self.sasl_ssl, self.sasl_plain = (free_port() for _ in range(4))

    def listeners(self):
        return (f"PLAINTEXT://127.0.0.1:{self.plain},SSL://127.0.0.1:{self.ssl},"
                f"SASL_SSL://127.0.0.1:{self.sasl_ssl},"
                f"SASL_PLAINTEXT://127.0.0.1:{self.sasl_plain}")


@pytest.fixture
def secure(make_broker, pki, tmp_path):
    """A broker with every kind of listener, users admin (super user), alice and bob, the
    ACL authorizer, and HTTP basic on the admin endpoint and the registry."""
    data = tmp_path / "secure"
    for user, password in (ADMIN, ALICE, BOB):
        add_user(data, user, password)
    ports = Ports()
    admin_port, registry_port = free_port(), free_port()
    broker = make_broker({
        "listeners": ports.listeners(),
        "ssl_certificate_file": str(pki / "server.pem"),
        "ssl_key_file": str(pki / "server.key"),
        "ssl_client_ca_file": str(pki / "ca.pem"),
        "ssl_client_auth": "requested",
        "super_users": "User:admin",
        "sasl_authentication_timeout_ms": 2000,
        "admin_listen": f"127.0.0.1:{admin_port}",
        "schema_registry_listen": f"127.0.0.1:{registry_port}",
    }, data_dir=data, port=ports.plain)
    broker.ports = ports
    broker.admin_url = f"http://127.0.0.1:{admin_port}"
    broker.registry_url = f"http://127.0.0.1:{registry_port}"
    broker.ca = str(pki / "ca.pem")
    return broker


def sasl_conf(broker, who, mechanism="SCRAM-SHA-512", tls=True):
    port = broker.ports.sasl_ssl if tls else broker.ports.sasl_plain
    conf = {"bootstrap.servers": f"127.0.0.1:{port}",
            "security.protocol": "SASL_SSL" if tls else "SASL_PLAINTEXT",
            "sasl.mechanisms": mechanism, "sasl.username": who[0], "sasl.password": who[1]}
    if tls:
        conf["ssl.ca.location"] = broker.ca
    return conf


def produce(conf, topic, n, prefix="m"):
    errors = []
    p = Producer({**conf, "acks": "all", "message.timeout.ms": 15000})
    for i in range(n):
        p.produce(topic, value=f"{prefix}-{i}".encode(),
                  on_delivery=lambda err, msg: errors.append(err) if err else None)
    p.flush(30)
    return errors


def consume(conf, topic, n, group=None, timeout=30):
    c = Consumer({**conf, "group.id": group or f"g-{uuid.uuid4().hex[:6]}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    got, errors = [], []
    deadline = time.time() + timeout
    while len(got) < n and time.time() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            errors.append(m.error())
            if m.error().fatal() or not m.error().retriable():
                break
            continue
        got.append(m.value().decode())
    c.close()
    return got, errors


def create(conf, topic, partitions=3):
    admin = AdminClient(conf)
    for f in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        f.result(30)


def test_sasl_ssl_with_scram_and_plain_and_per_listener_addresses(secure):
    admin = sasl_conf(secure, ADMIN)
    create(admin, "events")
    # The SASL_SSL listener's clients are sent to SASL_SSL addresses (librdkafka connects
    # to what Metadata advertises: a wrong listener would fail the TLS handshake).
    md = AdminClient(admin).list_topics(timeout=15)
    assert [(b.host, b.port) for b in md.brokers.values()] == [("127.0.0.1", secure.ports.sasl_ssl)]
    assert produce(admin, "events", 100) == []
    got, errors = consume(admin, "events", 100)
    assert errors == [] and sorted(got) == sorted(f"m-{i}" for i in range(100))

    # PLAIN over TLS, SCRAM-SHA-256 over SASL_PLAINTEXT (the super user again).
    assert produce(sasl_conf(secure, ADMIN, "PLAIN"), "events", 10, "plain") == []
    plaintext = sasl_conf(secure, ADMIN, "SCRAM-SHA-256", tls=False)
    md = AdminClient(plaintext).list_topics(timeout=15)
    assert [b.port for b in md.brokers.values()] == [secure.ports.sasl_plain]
    got, _ = consume(plaintext, "events", 110)
    assert len(got) == 110

    # kcat with SCRAM-SHA-256 over TLS.
    kcat = ["kcat", "-b", f"127.0.0.1:{secure.ports.sasl_ssl}", "-X", "security.protocol=SASL_SSL",
            "-X", "sasl.mechanisms=SCRAM-SHA-256", "-X", f"sasl.username={ADMIN[0]}",
            "-X", f"sasl.password={ADMIN[1]}", "-X", f"ssl.ca.location={secure.ca}"]
    subprocess.run(kcat + ["-P", "-t", "events", "-p", "0"], input=b"from-kcat\n", check=True,
                   timeout=60)
    out = subprocess.run(kcat + ["-C", "-t", "events", "-e", "-f", "%s\n"], capture_output=True,
                         check=True, timeout=60).stdout.decode().split()
    assert "from-kcat" in out and "m-0" in out

    # kafka-python with SCRAM-SHA-512 over TLS.
    kp = dict(bootstrap_servers=f"127.0.0.1:{secure.ports.sasl_ssl}", security_protocol="SASL_SSL",
              sasl_mechanism="SCRAM-SHA-512", sasl_plain_username=ADMIN[0],
              sasl_plain_password=ADMIN[1], ssl_cafile=secure.ca)
    producer = KafkaProducer(**kp)
    producer.send("events", b"from-kafka-python").get(timeout=30)
    producer.close()
    consumer = KafkaConsumer("events", auto_offset_reset="earliest", consumer_timeout_ms=5000,
                             group_id="kp", **kp)
    values = [m.value for m in consumer]
    consumer.close()
    assert b"from-kafka-python" in values and len(values) == 112


def test_bad_credentials_get_clean_errors_and_the_broker_stays_healthy(secure):
    for who, mechanism in [(("admin", "wrong"), "SCRAM-SHA-512"), (("nobody", "x"), "SCRAM-SHA-256"),
                           (("admin", "wrong"), "PLAIN")]:
        errors = []
        client = Producer({**sasl_conf(secure, who, mechanism),
                           "error_cb": lambda e: errors.append(e)})
        with pytest.raises(KafkaException):
            client.list_topics(timeout=3)
        client.poll(1)
        assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), errors
        assert any("Authentication failed" in e.str() for e in errors), errors

    # A plaintext client on the TLS port, and a TLS client that never authenticates on the
    # SASL_SSL port: no answer, the connection is closed.
    errors = []
    plain_on_tls = Producer({"bootstrap.servers": f"127.0.0.1:{secure.ports.sasl_ssl}",
                             "error_cb": lambda e: errors.append(e)})
    with pytest.raises(KafkaException):
        plain_on_tls.list_topics(timeout=4)
    plain_on_tls.poll(1)
    assert errors
    import socket
    import ssl
    ctx = ssl.create_default_context(cafile=secure.ca)
    with socket.create_connection(("127.0.0.1", secure.ports.sasl_ssl)) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.settimeout(10)
            started = time.time()
            assert tls.recv(1) == b""  # closed after sasl_authentication_timeout_ms
            assert time.time() - started < 8

    # The broker serves on; failures are counted, no password is logged.
    assert produce(sasl_conf(secure, ADMIN), "still-fine", 5) == []
    metrics = http_get(secure.admin_url + "/metrics", ADMIN)[1].decode()
    failures = [l for l in metrics.splitlines()
                if l.startswith("icestream_authentication_failures_total ")]
    assert failures and float(failures[0].split()[1]) >= 5, failures
    log = secure.log()
    assert "wrong" not in log and "admin-secret" not in log
    assert "authentication failed" in log


def test_mtls_principal_and_required_client_certificates(secure, pki, make_broker, tmp_path):
    ssl_conf = {"bootstrap.servers": f"127.0.0.1:{secure.ports.ssl}", "security.protocol": "SSL",
                "ssl.ca.location": secure.ca}
    with_cert = {**ssl_conf, "ssl.certificate.location": str(pki / "client.pem"),
                 "ssl.key.location": str(pki / "client.key")}
    create(sasl_conf(secure, ADMIN), "certs", 1)
    # The certificate's subject is the principal, as Kafka's SSL listeners make it.
    principal = "User:CN=alice,OU=eng,O=example"
    kadmin = kafka_admin(secure, ADMIN)
    kadmin.create_acls([ACL(principal, "*", ACLOperation.WRITE, ACLPermissionType.ALLOW,
                            ResourcePattern(ResourceType.TOPIC, "certs"))])
    kadmin.close()
    assert produce(with_cert, "certs", 3) == []
    errors = produce(ssl_conf, "certs", 1)
    assert [e.code() for e in errors] == [KafkaError.TOPIC_AUTHORIZATION_FAILED]

    # ssl_client_auth=required: no certificate, no connection.
    port = free_port()
    make_broker({"listeners": f"SSL://127.0.0.1:{port}",
                 "ssl_certificate_file": str(pki / "server.pem"),
                 "ssl_key_file": str(pki / "server.key"),
                 "ssl_client_ca_file": str(pki / "ca.pem"), "ssl_client_auth": "required",
                 "authorizer": "none"}, port=port)
    required = {**ssl_conf, "bootstrap.servers": f"127.0.0.1:{port}"}
    with pytest.raises(KafkaException):
        AdminClient(required).list_topics(timeout=4)
    md = AdminClient({**with_cert, "bootstrap.servers": f"127.0.0.1:{port}"}).list_topics(timeout=15)
    assert [b.port for b in md.brokers.values()] == [port]


def kafka_admin(broker, who):
    return KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{broker.ports.sasl_ssl}",
                            security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
                            sasl_plain_username=who[0], sasl_plain_password=who[1],
                            ssl_cafile=broker.ca)


def test_acls_through_kafka_pythons_admin_api(secure):
    admin_conf = sasl_conf(secure, ADMIN)
    for t in ("orders-eu", "orders-us", "orders-secret", "payments"):
        create(admin_conf, t, 1)
    assert produce(admin_conf, "payments", 3, "pay") == []
    kadmin = kafka_admin(secure, ADMIN)
    topic = lambda name, pattern=ACLResourcePatternType.LITERAL: ResourcePattern(  # noqa: E731
        ResourceType.TOPIC, name, pattern)
    acls = [
        ACL("User:alice", "*", ACLOperation.WRITE, ACLPermissionType.ALLOW,
            topic("orders-", ACLResourcePatternType.PREFIXED)),
        ACL("User:alice", "*", ACLOperation.ALL, ACLPermissionType.DENY, topic("orders-secret")),
        ACL("User:bob", "*", ACLOperation.READ, ACLPermissionType.ALLOW, topic("payments")),
        ACL("User:bob", "*", ACLOperation.READ, ACLPermissionType.ALLOW,
            ResourcePattern(ResourceType.GROUP, "billing")),
        # DESCRIBE finds the coordinator; joining needs READ.
        ACL("User:bob", "*", ACLOperation.DESCRIBE, ACLPermissionType.ALLOW,
            ResourcePattern(ResourceType.GROUP, "watchers")),
    ]
    result = kadmin.create_acls(acls)
    assert len(result["succeeded"]) == 5 and result["failed"] == []

    listed, error = kadmin.describe_acls(ACLFilter(
        principal=None, host="*", operation=ACLOperation.ANY, permission_type=ACLPermissionType.ANY,
        resource_pattern=ResourcePatternFilter(ResourceType.TOPIC, None,
                                               ACLResourcePatternType.ANY)))
    assert error.errno == 0
    assert {(a.principal, a.resource_pattern.resource_name) for a in listed} == {
        ("User:alice", "orders-"), ("User:alice", "orders-secret"), ("User:bob", "payments")}

    alice = sasl_conf(secure, ALICE)
    assert produce(alice, "orders-eu", 5) == []
    # Prefixed WRITE implies DESCRIBE: alice sees the orders topics but not the others.
    visible = set(AdminClient(alice).list_topics(timeout=15).topics)
    assert {"orders-eu", "orders-us"} <= visible and "payments" not in visible
    assert "orders-secret" not in visible  # deny wins over the prefixed allow
    codes = lambda errs: {e.code() for e in errs}  # noqa: E731
    assert codes(produce(alice, "orders-secret", 1)) == {KafkaError.TOPIC_AUTHORIZATION_FAILED}
    assert codes(produce(alice, "payments", 1)) == {KafkaError.TOPIC_AUTHORIZATION_FAILED}
    _, errors = consume(alice, "payments", 1, group="billing", timeout=10)
    assert KafkaError.TOPIC_AUTHORIZATION_FAILED in codes(errors) or \
        KafkaError.GROUP_AUTHORIZATION_FAILED in codes(errors), errors

    # bob reads payments in group billing, and not in another group.
    bob = sasl_conf(secure, BOB)
    got, errors = consume(bob, "payments", 3, group="billing")
    assert sorted(got) == ["pay-0", "pay-1", "pay-2"], errors
    _, errors = consume(bob, "payments", 1, group="elsewhere", timeout=10)
    assert KafkaError.GROUP_AUTHORIZATION_FAILED in codes(errors), errors
    _, errors = consume(bob, "payments", 1, group="watchers", timeout=10)
    assert KafkaError.GROUP_AUTHORIZATION_FAILED in codes(errors), errors
    # KIP-430: what each may do, as the authorizer answers (READ implies DESCRIBE).
    from confluent_kafka import TopicCollection
    from confluent_kafka.admin import AclOperation

    def topic_ops(conf, name):
        client = AdminClient(conf)
        described = client.describe_topics(TopicCollection([name]),
                                           include_authorized_operations=True)
        return set(described[name].result(timeout=15).authorized_operations)

    def cluster(conf):
        client = AdminClient(conf)
        described = client.describe_cluster(include_authorized_operations=True)
        return described.result(timeout=15).authorized_operations

    assert topic_ops(bob, "payments") == {AclOperation.READ, AclOperation.DESCRIBE}
    assert topic_ops(alice, "orders-eu") == {AclOperation.WRITE, AclOperation.DESCRIBE}
    assert len(topic_ops(admin_conf, "payments")) == 8, "the super user may do everything"
    assert not cluster(bob)
    assert set(cluster(admin_conf)) >= {AclOperation.ALTER, AclOperation.CREATE,
                                        AclOperation.DESCRIBE, AclOperation.IDEMPOTENT_WRITE}
    bob_client = AdminClient(bob)
    group = bob_client.describe_consumer_groups(
        ["billing"], include_authorized_operations=True)["billing"].result(timeout=15)
    assert set(group.authorized_operations) == {AclOperation.READ, AclOperation.DESCRIBE}
    # kafka-python raises the matching exceptions.
    kp = dict(bootstrap_servers=f"127.0.0.1:{secure.ports.sasl_ssl}", security_protocol="SASL_SSL",
              sasl_mechanism="SCRAM-SHA-256", sasl_plain_username=BOB[0],
              sasl_plain_password=BOB[1], ssl_cafile=secure.ca)
    # (Idempotent producers need WRITE on some topic, or IDEMPOTENT_WRITE on the cluster:
    # bob has neither, so his gets CLUSTER_AUTHORIZATION_FAILED, as from Kafka.)
    with pytest.raises(KafkaTimeoutOrAuthorization):
        idempotent = KafkaProducer(**kp, max_block_ms=5000)
        try:
            idempotent.send("payments", b"x").get(timeout=10)
        finally:
            idempotent.close(timeout=1)
    producer = KafkaProducer(**kp, max_block_ms=10000, enable_idempotence=False)
    with pytest.raises(TopicAuthorizationFailedError):
        producer.send("payments", b"x").get(timeout=30)
    producer.close()
    bob_admin = KafkaAdminClient(**kp)
    with pytest.raises(GroupAuthorizationFailedError):
        bob_admin.list_group_offsets("elsewhere")
    # Only the cluster's ALTER lets one create ACLs.
    result = bob_admin.create_acls([acls[0]])
    assert result["succeeded"] == [] and len(result["failed"]) == 1
    bob_admin.close()

    # Deleting the prefixed ACL takes alice's access away; the super user keeps it.
    deleted = kadmin.delete_acls([ACLFilter(
        principal="User:alice", host="*", operation=ACLOperation.WRITE,
        permission_type=ACLPermissionType.ALLOW,
        resource_pattern=ResourcePatternFilter(ResourceType.TOPIC, "orders-",
                                               ACLResourcePatternType.PREFIXED))])
    assert len(deleted[0][1]) == 1
    kadmin.close()
    assert codes(produce(alice, "orders-us", 1)) == {KafkaError.TOPIC_AUTHORIZATION_FAILED}
    assert produce(admin_conf, "orders-us", 1) == []


def test_users_through_the_kafka_api_and_reauthentication(secure):
    admin = AdminClient(sasl_conf(secure, ADMIN))
    carol = ("carol", "carol-secret-1")
    futures = admin.alter_user_scram_credentials([UserScramCredentialUpsertion(
        carol[0], ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 8192), carol[1].encode())])
    for f in futures.values():
        f.result(30)
    described = admin.describe_user_scram_credentials(["carol"])["carol"].result(30)
    assert [(i.mechanism, i.iterations) for i in described.scram_credential_infos] == [
        (ScramMechanism.SCRAM_SHA_256, 8192)]
    AdminClient(sasl_conf(secure, carol, "SCRAM-SHA-256")).list_topics(timeout=15)
    AdminClient(sasl_conf(secure, carol, "PLAIN")).list_topics(timeout=15)
    with pytest.raises(KafkaException):
        AdminClient(sasl_conf(secure, carol, "SCRAM-SHA-512")).list_topics(timeout=5)

    futures = admin.alter_user_scram_credentials([UserScramCredentialDeletion(
        "carol", ScramMechanism.SCRAM_SHA_256)])
    for f in futures.values():
        f.result(30)
    with pytest.raises(KafkaException):
        AdminClient(sasl_conf(secure, carol, "SCRAM-SHA-256")).list_topics(timeout=5)
    # Bad input: too few iterations, a user without credentials.
    futures = admin.alter_user_scram_credentials([UserScramCredentialUpsertion(
        "dave", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 10), b"pw")])
    with pytest.raises(KafkaException) as err:
        futures["dave"].result(30)
    assert err.value.args[0].code() == KafkaError.UNACCEPTABLE_CREDENTIAL
    with pytest.raises(KafkaException) as err:
        admin.describe_user_scram_credentials(["nobody"])["nobody"].result(30)
    assert err.value.args[0].code() == KafkaError.RESOURCE_NOT_FOUND


def test_reauthentication_keeps_a_long_lived_producer_going(make_broker, tmp_path):
    data = tmp_path / "reauth"
    add_user(data, *ADMIN)
    port, sasl = free_port(), free_port()
    broker = make_broker({"listeners": f"PLAINTEXT://127.0.0.1:{port},SASL_PLAINTEXT://127.0.0.1:{sasl}",
                          "super_users": "User:admin", "connections_max_reauth_ms": 1500},
                         data_dir=data, port=port)
    conf = {"bootstrap.servers": f"127.0.0.1:{sasl}", "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanisms": "SCRAM-SHA-512", "sasl.username": ADMIN[0],
            "sasl.password": ADMIN[1]}
    errors, delivered = [], []
    p = Producer({**conf, "acks": "all", "linger.ms": 5})
    deadline = time.time() + 6
    i = 0
    while time.time() < deadline:
        p.produce("long-lived", value=str(i).encode(),
                  on_delivery=lambda err, msg: (errors if err else delivered).append(err or msg))
        p.poll(0)
        i += 1
        time.sleep(0.01)
    p.flush(30)
    assert errors == [] and len(delivered) == i
    # The sessions were re-authenticated on the same connection, not dropped.
    assert broker.log().count("before SASL authentication") == 0


def http_get(url, who=None):
    request = urllib.request.Request(url)
    if who:
        token = base64.b64encode(f"{who[0]}:{who[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_http_endpoints_need_a_users_password(secure):
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    assert http_get(secure.admin_url + "/health")[0] == 200
    assert http_get(secure.admin_url + "/metrics")[0] == 401
    assert http_get(secure.admin_url + "/metrics", ("alice", "nope"))[0] == 401
    status, body = http_get(secure.admin_url + "/metrics", ALICE)
    assert status == 200 and b"icestream_connections" in body

    assert http_get(secure.registry_url + "/subjects")[0] == 401
    anonymous = SchemaRegistryClient({"url": secure.registry_url})
    with pytest.raises(SchemaRegistryError) as err:
        anonymous.get_subjects()
    assert err.value.http_status_code == 401
    client = SchemaRegistryClient({"url": secure.registry_url,
                                   "basic.auth.user.info": f"{BOB[0]}:{BOB[1]}"})
    schema = '{"type": "record", "name": "R", "fields": [{"name": "a", "type": "int"}]}'
    schema_id = client.register_schema("r-value", Schema(schema, "AVRO"))
    assert client.get_subjects() == ["r-value"] and schema_id >= 1


def test_users_and_acls_made_through_one_broker_hold_on_the_others(postgres_url, seaweedfs,
                                                                   make_broker, tmp_path):
    from test_cluster import cluster_settings

    settings = cluster_settings(postgres_url, seaweedfs, f"sec-{uuid.uuid4().hex[:8]}")
    add_user(tmp_path / "cli", *ADMIN, extra=["--metadata", postgres_url])
    brokers = []
    for i in range(3):
        port, sasl = free_port(), free_port()
        b = make_broker({
            "listeners": f"PLAINTEXT://127.0.0.1:{port},SASL_PLAINTEXT://127.0.0.1:{sasl}",
            **settings, "super_users": "User:admin", "metadata_refresh_ms": 200,
        }, port=port)
        b.sasl = sasl
        brokers.append(b)
    conf = lambda b, who: {"bootstrap.servers": f"127.0.0.1:{b.sasl}",  # noqa: E731
                           "security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "SCRAM-SHA-256",
                           "sasl.username": who[0], "sasl.password": who[1]}
    admin = AdminClient(conf(brokers[0], ADMIN))
    for f in admin.alter_user_scram_credentials([UserScramCredentialUpsertion(
            "erin", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096), b"erin-pw")]).values():
        f.result(30)
    for f in admin.create_topics([NewTopic("shared", 1, 1)]).values():
        f.result(30)
    erin = ("erin", "erin-pw")
    # The user authenticates everywhere at once; the topic is not hers yet.
    for b in brokers[1:]:
        assert {e.code() for e in produce(conf(b, erin), "shared", 1)} == {
            KafkaError.TOPIC_AUTHORIZATION_FAILED}
    kadmin = KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{brokers[0].sasl}",
                              security_protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-256",
                              sasl_plain_username=ADMIN[0], sasl_plain_password=ADMIN[1])
    kadmin.create_acls([ACL("User:erin", "*", ACLOperation.WRITE, ACLPermissionType.ALLOW,
                            ResourcePattern(ResourceType.TOPIC, "shared"))])
    kadmin.close()
    time.sleep(0.5)  # metadata_refresh_ms, with room
    for b in brokers[1:]:
        assert produce(conf(b, erin), "shared", 2) == []
