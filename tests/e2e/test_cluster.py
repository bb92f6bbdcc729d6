"""Several stateless brokers sharing SeaweedFS and PostgreSQL: a broker killed with -9
loses nothing; producers and a consumer group carry on through the others."""

import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

from helpers import Broker, free_port
from tables import open_sql_catalog, wait_for_rows
from test_groups import Member, wait_until
from workload import assert_same, consume, create_topic, make_records, produce


def cluster_settings(postgres_url, seaweedfs, prefix):
    return {
        "metadata": postgres_url,
        "catalog": postgres_url,
        "object_store": seaweedfs.s3_url(prefix=prefix),
        "compaction_interval_ms": 500,
        "broker_lease_ms": 3000,
        "group_initial_rebalance_delay_ms": 500,
    }


def test_three_brokers_survive_a_kill9(postgres_url, seaweedfs, tmp_path):
    prefix = f"cluster-{uuid.uuid4().hex[:8]}"
    settings = cluster_settings(postgres_url, seaweedfs, prefix)
    ports = [free_port() for _ in range(3)]
    # All three start at once on a new database, as a cluster's brokers do: each creates
    # the metadata and catalog tables if missing, and none may lose that race.
    brokers = [Broker(tmp_path / f"b{i}", settings, port).launch() for i, port in enumerate(ports)]
    for b in brokers:
        b.wait()
    bootstrap = ",".join(b.bootstrap for b in brokers)
    try:
        deadline = time.time() + 20
        while time.time() < deadline and not all("compactor.start" in b.log() for b in brokers):
            time.sleep(0.2)
        for b in brokers:
            assert "compactor.start" in b.log() and "cannot open the catalog" not in b.log(), b.log()
        # Every broker sees the others.
        from confluent_kafka.admin import AdminClient
        for b in brokers:
            deadline = time.time() + 20
            while time.time() < deadline:
                md = AdminClient({"bootstrap.servers": b.bootstrap}).list_topics(timeout=10)
                if len(md.brokers) == 3:
                    break
                time.sleep(0.3)
            assert len(md.brokers) == 3, md.brokers

        # Every broker names the same coordinator for a group, whichever one is asked.
        for group in ("cluster-group", "another-group", "a-third-group"):
            coordinators = set()
            for b in brokers:
                admin = AdminClient({"bootstrap.servers": b.bootstrap})
                described = admin.describe_consumer_groups([group])[group].result(timeout=10)
                coordinators.add(described.coordinator.id)
            assert len(coordinators) == 1 and coordinators <= set(md.brokers), coordinators

        topic, partitions, count = "clustered", 6, 60_000
        create_topic(bootstrap, topic, partitions)
        acks_file = tmp_path / "acks.txt"
        producer = subprocess.Popen(
            [sys.executable, str(Path(__file__).parent / "producer_loop.py"), bootstrap, topic,
             str(count), str(acks_file)], stderr=subprocess.PIPE)
        members = [Member(bootstrap, "cluster-group", topic, f"m{i}") for i in range(2)]
        for m in members:
            m.start()
        wait_until(lambda: acks_file.exists() and sum(1 for _ in open(acks_file)) >= count // 3,
                   what="a third of the records acknowledged")
        brokers[1].kill9()
        _, err = producer.communicate(timeout=300)
        assert producer.returncode == 0, err.decode()
        acked = {}
        for line in open(acks_file):
            key, p, o = line.split()
            acked[key] = (int(p), int(o))
        assert len(acked) == count

        def consumed_by_group():
            return {x for m in members for x in m.seen + m.uncertain}

        try:
            wait_until(lambda: len(consumed_by_group()) >= count, timeout=180,
                       what="the group to consume every record")
        except AssertionError:
            got = consumed_by_group()
            missing = sorted(set(acked.values()) - got)
            raise AssertionError(
                f"{len(missing)} records never consumed, first {missing[:10]}; "
                f"assignments {[sorted(m.assignment) for m in members]}; "
                f"errors {[m.errors[-5:] for m in members]}")
        for m in members:
            m.stop()
        # At least once: every acknowledged record was processed; a record is processed
        # twice only when a commit covering it failed (the broker holding the group died).
        seen = [x for m in members for x in m.seen]
        uncertain = {x for m in members for x in m.uncertain}
        assert consumed_by_group() == set(acked.values())
        twice = {x for x, n in Counter(seen).items() if n > 1}
        assert twice <= uncertain, f"records processed twice without a failed commit: {twice}"

        survivors = ",".join(brokers[i].bootstrap for i in (0, 2))
        consumed = consume(survivors, topic, partitions, count, timeout=180)
        keys = [v[0].decode() for v in consumed.values()]
        assert len(keys) == len(set(keys)) == count, "no record stored twice"
        for (p, o), v in consumed.items():
            assert acked[v[0].decode()] == (p, o), "every record at its acknowledged offset"
        for p in range(partitions):
            offs = sorted(o for (pp, o) in consumed if pp == p)
            assert offs == list(range(len(offs))), f"partition {p} offsets are dense"

        uri = postgres_url.replace("postgres://", "postgresql+psycopg2://", 1)
        catalog = open_sql_catalog(uri, f"s3://icestream/{prefix}/warehouse",
                                   **{"s3.endpoint": seaweedfs.s3_endpoint,
                                      "s3.access-key-id": seaweedfs.ACCESS_KEY,
                                      "s3.secret-access-key": seaweedfs.SECRET_KEY,
                                      "s3.region": "us-east-1", "s3.path-style-access": "true"})
        table = wait_for_rows(catalog, topic, count, timeout=120)
        assert sorted(table) == sorted(acked.values()), "the table holds every record once"
    finally:
        for b in brokers:
            if b.alive():
                b.stop()


def test_embedded_store_refuses_a_second_broker(tmp_path):
    first = Broker(tmp_path / "shared").start()
    try:
        second = Broker(tmp_path / "shared")
        try:
            second.start()
            raise AssertionError("a second broker started on the same embedded store")
        except RuntimeError:
            pass
        assert "in use by another process" in second.log()
    finally:
        first.stop()


def test_consumers_fetch_from_their_rack(postgres_url, tmp_path):
    """KIP-392: a consumer with `client.rack` reads every partition from a broker in its
    rack; the leader in another rack only names that broker."""
    from confluent_kafka.admin import AdminClient
    from test_observability import get, metric

    shared = {"metadata": postgres_url, "catalog": postgres_url,
              "object_store": f"file://{tmp_path / 'objects'}",
              # No broker dies here: a long lease keeps a heartbeat delayed on a busy
              # machine from dropping a rack-b broker and moving its partitions.
              "broker_lease_ms": 15000}
    racks = ["a", "b", "b"]
    admin_ports = [free_port() for _ in racks]
    brokers = [Broker(tmp_path / f"b{i}", {**shared, "rack": rack,
                                            "admin_listen": f"127.0.0.1:{admin_ports[i]}"}).start()
               for i, rack in enumerate(racks)]
    bootstrap = ",".join(b.bootstrap for b in brokers)
    try:
        for b in brokers:
            wait_until(lambda: len(AdminClient({"bootstrap.servers": b.bootstrap})
                                   .list_topics(timeout=10).brokers) == 3,
                       timeout=20, what="every broker to see the others")
        topic, partitions = "racked", 24
        create_topic(bootstrap, topic, partitions)
        md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
        rack_a = [n for n, b in md.brokers.items() if b.port == brokers[0].port]
        leaders = [p.leader for p in md.topics[topic].partitions.values()]
        assert rack_a and rack_a[0] in leaders, "some partitions are led from rack a"

        records = make_records(3_000, partitions, seed=5)
        acked, errors = produce(bootstrap, topic, records)
        assert not errors
        consumed = consume(bootstrap, topic, partitions, len(acked), **{"client.rack": "b"})
        assert_same(acked, consumed)

        fetched = [metric(get(f"http://127.0.0.1:{p}/metrics")[1], "icestream_fetch_bytes_total")
                   for p in admin_ports]
        assert fetched[0] == 0, f"records fetched from the other rack's broker: {fetched}"
        assert fetched[1] + fetched[2] > 0, fetched
    finally:
        for b in brokers:
            if b.alive():
                b.stop()
