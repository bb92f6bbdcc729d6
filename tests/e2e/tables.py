"""Reading icestream's topic tables with engines nobody here wrote: PyIceberg, DuckDB."""

import glob
import os
import time

import duckdb
from pyiceberg.catalog.sql import SqlCatalog


def open_sql_catalog(uri, warehouse, **props):
    """PyIceberg's SqlCatalog. Opening it creates the catalog tables if missing, which
    races with the broker creating them ("table ... already exists"): open it again."""
    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
    for attempt in range(20):
        try:
            return SqlCatalog("icestream", uri=uri, warehouse=warehouse, **props)
        except (OperationalError, IntegrityError, ProgrammingError):
            if attempt == 19:
                raise
            time.sleep(0.25)


def sql_catalog(broker, **props):
    """PyIceberg's SqlCatalog on the broker's embedded SQLite catalog."""
    return open_sql_catalog(f"sqlite:///{broker.data_dir}/catalog.db",
                            f"file://{broker.data_dir}/objects/warehouse", **props)


def rows(catalog, topic, namespace="kafka"):
    """All rows of a topic table, keyed by (partition, offset) → (key, value, headers, ts ms)."""
    if not catalog.table_exists((namespace, topic)):
        return {}
    table = catalog.load_table((namespace, topic))
    arrow = table.scan().to_arrow()
    out = {}
    for r in arrow.to_pylist():
        k = (r["partition"], r["offset"])
        assert k not in out, f"row {k} appears twice in the table"
        headers = [(h["key"], h["value"]) for h in (r["headers"] or [])]
        ts = int(r["timestamp"].timestamp() * 1000 + 0.5)
        out[k] = (r["key"], r["value"], headers, ts)
    return out


def wait_for_rows(catalog, topic, count, timeout=60, namespace="kafka"):
    deadline = time.time() + timeout
    got = {}
    while time.time() < deadline:
        got = rows(catalog, topic, namespace)
        if len(got) >= count:
            return got
        time.sleep(0.25)
    raise AssertionError(f"table {topic} has {len(got)} rows after {timeout}s, expected {count}")


def duck_connection():
    """A DuckDB connection with the iceberg extension (loaded from its PyPI wheel: no
    network)."""
    site = os.path.dirname(os.path.dirname(duckdb.__file__))
    con = duckdb.connect()
    con.execute("SET autoinstall_known_extensions=false")
    con.execute("SET autoload_known_extensions=false")
    for ext in ["avro", "iceberg"]:
        path = glob.glob(f"{site}/duckdb_extension_{ext}/extensions/*/{ext}.duckdb_extension")[0]
        con.execute(f"LOAD '{path}'")
    return con


def duckdb_count(metadata_glob):
    """Row count of the newest metadata file matching `metadata_glob`, via DuckDB's
    iceberg extension."""
    con = duck_connection()
    newest = sorted(glob.glob(metadata_glob))[-1]
    return con.execute(f"SELECT count(*) FROM iceberg_scan('{newest}')").fetchone()[0]
