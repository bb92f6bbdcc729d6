"""Tables through every kind of catalog and store: the SQL catalog with the warehouse on
SeaweedFS, the SQL catalog on PostgreSQL, and SeaweedFS's Iceberg REST catalog."""

import os
import uuid

import pytest
from pyiceberg.catalog.rest import RestCatalog

from helpers import admin_settings, metric
from tables import open_sql_catalog, wait_for_rows
from workload import assert_same, consume, create_topic, expected_tuple, make_records, produce

FAST = {"compaction_interval_ms": 300}


def s3_props(seaweed, access="icestream", secret="icestream-secret"):
    return {"s3.endpoint": seaweed.s3_endpoint, "s3.access-key-id": access,
            "s3.secret-access-key": secret, "s3.region": "us-east-1",
            "s3.path-style-access": "true"}


def check_roundtrip(broker, catalog, topic="events", namespace="kafka"):
    create_topic(broker.bootstrap, topic, 3)
    records = make_records(6_000, 3, seed=31)
    acked, errors = produce(broker.bootstrap, topic, records, **{"compression.type": "snappy"})
    assert not errors
    table = wait_for_rows(catalog, topic, len(acked), namespace=namespace)
    assert len(table) == len(acked)
    for k, rec in acked.items():
        assert table[k] == expected_tuple(rec)
    assert_same(acked, consume(broker.bootstrap, topic, 3, len(acked)))


def test_sql_catalog_with_warehouse_on_seaweedfs(seaweedfs, make_broker):
    prefix = f"wh-{uuid.uuid4().hex[:8]}"
    broker = make_broker({**FAST, "object_store": seaweedfs.s3_url(prefix=prefix)})
    catalog = open_sql_catalog(f"sqlite:///{broker.data_dir}/catalog.db",
                               f"s3://icestream/{prefix}/warehouse", **s3_props(seaweedfs))
    check_roundtrip(broker, catalog)
    t = catalog.load_table(("kafka", "events"))
    assert t.location().startswith(f"s3://icestream/{prefix}/warehouse/")


def test_sql_catalog_on_postgres(postgres_url, make_broker):
    broker = make_broker({**FAST, "catalog": postgres_url})
    uri = postgres_url.replace("postgres://", "postgresql+psycopg2://", 1)
    catalog = open_sql_catalog(uri, f"file://{broker.data_dir}/objects/warehouse")
    check_roundtrip(broker, catalog)


def test_rest_catalog_on_seaweedfs(seaweedfs_anonymous, make_broker):
    s = seaweedfs_anonymous
    prefix = f"rest-{uuid.uuid4().hex[:8]}"
    broker = make_broker({**FAST, "object_store": s.s3_url(prefix=prefix),
                          "catalog": f"{s.rest_uri}?warehouse=s3://tables",
                          "table_namespace": prefix})
    catalog = RestCatalog("rest", uri=s.rest_uri, warehouse="s3://tables",
                          auth={"type": "noop"}, **s3_props(s))
    check_roundtrip(broker, catalog, namespace=prefix)
    t = catalog.load_table((prefix, "events"))
    assert t.location().startswith("s3://tables/")


@pytest.mark.parametrize("kind", ["sqlite", "postgres", "rest"])
def test_commits_that_fail_or_are_lost_lose_nothing(kind, request, make_broker):
    """Every catalog, with injected commit faults: two commits fail, two are reported done
    but never happen (as the SQL catalog did when SQLite refused its COMMIT), two happen and
    are reported failed. The table still holds every acknowledged record exactly once."""
    settings = admin_settings({"compaction_interval_ms": 300})
    namespace = "kafka"
    if kind == "sqlite":
        def open_catalog(broker):
            return open_sql_catalog(f"sqlite:///{broker.data_dir}/catalog.db",
                                    f"file://{broker.data_dir}/objects/warehouse")
    elif kind == "postgres":
        url = request.getfixturevalue("postgres_url")
        settings["catalog"] = url

        def open_catalog(broker):
            return open_sql_catalog(url.replace("postgres://", "postgresql+psycopg2://", 1),
                                    f"file://{broker.data_dir}/objects/warehouse")
    else:
        s = request.getfixturevalue("seaweedfs_anonymous")
        namespace = f"faults-{uuid.uuid4().hex[:8]}"
        settings.update({"object_store": s.s3_url(prefix=namespace),
                         "catalog": f"{s.rest_uri}?warehouse=s3://tables",
                         "table_namespace": namespace})

        def open_catalog(broker):
            return RestCatalog("rest", uri=s.rest_uri, warehouse="s3://tables",
                               auth={"type": "noop"}, **s3_props(s))
    os.environ["ICESTREAM_TEST_CATALOG_FAULTS"] = "fail=2,lose=2,commit_then_fail=2"
    try:
        broker = make_broker(settings)
    finally:
        del os.environ["ICESTREAM_TEST_CATALOG_FAULTS"]
    check_roundtrip(broker, open_catalog(broker), namespace=namespace)
    assert "injecting catalog commit faults" in broker.log()
    assert metric(broker, "icestream_compaction_commit_failures_total") >= 4
