"""Table growth probe for benches/growth.sh: produces a steady trickle to one topic and,
at given round counts, measures the topic table as PyIceberg and DuckDB see it."""

import argparse
import os
import random
import sys
import threading
import time
import urllib.request

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from pyiceberg.catalog.sql import SqlCatalog

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tests", "e2e"))
from tables import duck_connection  # noqa: E402

TOPIC = "growth"
TARGET_FILE_BYTES = 128 * 1024 * 1024


def metric(admin, name):
    body = urllib.request.urlopen(f"http://{admin}/metrics", timeout=10).read().decode()
    for line in body.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def du(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except FileNotFoundError:
                pass
    return total


class Trickle:
    def __init__(self, bootstrap, partitions, rate):
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5,
                                  "compression.type": "lz4"})
        self.partitions, self.rate = partitions, rate
        self.acked = [0] * partitions
        self.errors = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def on_delivery(self, err, msg):
        if err is None:
            self.acked[msg.partition()] += 1
        else:
            self.errors += 1

    def run(self):
        rng = random.Random(7)
        words = [f"w{i}" for i in range(500)]
        n, start = 0, time.time()
        while not self.stop.is_set():
            due = int((time.time() - start) * self.rate)
            while n < due:
                value = " ".join(rng.choice(words) for _ in range(60)).encode()
                self.producer.produce(TOPIC, value=value, key=str(n).encode(),
                                      partition=n % self.partitions, on_delivery=self.on_delivery)
                n += 1
            self.producer.poll(0.01)
        self.producer.flush(60)


def probe(catalog, con, data_dir, label):
    table = catalog.load_table(("kafka", TOPIC))
    t0 = time.time()
    tasks = list(table.scan().plan_files())
    plan_s = time.time() - t0
    rows = sum(t.file.record_count for t in tasks)
    small = {}
    for t in tasks:
        if t.file.file_size_in_bytes < TARGET_FILE_BYTES * 3 // 4:
            p = t.file.partition[0]
            small[p] = small.get(p, 0) + 1
    snap = table.current_snapshot()
    manifests = len(snap.manifests(table.io)) if snap else 0
    location = table.metadata_location.removeprefix("file://")
    table_dir = os.path.dirname(os.path.dirname(location))
    t0 = time.time()
    count = con.execute(f"SELECT count(*) FROM iceberg_scan('{location}')").fetchone()[0]
    count_s = time.time() - t0
    by_dir = con.execute(f"SELECT count(*) FROM iceberg_scan('{table_dir}')").fetchone()[0]
    out = {
        "rounds": label, "rows": rows, "data_files": len(tasks),
        "small_max": max(small.values(), default=0), "manifests": manifests,
        "snapshots": len(table.metadata.snapshots),
        "metadata_file": os.path.getsize(location),
        "metadata_bytes": du(os.path.join(table_dir, "metadata")),
        "data_bytes": du(os.path.join(table_dir, "data")),
        "plan_s": plan_s, "count_s": count_s, "duck_rows": count, "duck_dir_rows": by_dir,
    }
    print(f"| {out['rounds']} | {rows} | {len(tasks)} | {out['small_max']} | {manifests} | "
          f"{out['snapshots']} | {out['metadata_file'] / 1024:.0f} KB | "
          f"{out['metadata_bytes'] / 1e6:.1f} MB | {out['data_bytes'] / 1e6:.1f} MB | "
          f"{plan_s:.2f} s | {count_s:.2f} s |", flush=True)
    assert count == rows, f"DuckDB counts {count} rows, PyIceberg plans {rows}"
    # The table may have moved on between the two queries.
    assert by_dir >= count, f"DuckDB by table directory (version-hint.text) counts {by_dir}"
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--admin", required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--partitions", type=int, default=16)
    ap.add_argument("--rate", type=float, default=800)
    ap.add_argument("--probes", default="200,1000,1800")
    a = ap.parse_args()
    probes = [int(x) for x in a.probes.split(",")]
    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    admin.create_topics([NewTopic(TOPIC, a.partitions, 1)])[TOPIC].result(30)
    trickle = Trickle(a.bootstrap, a.partitions, a.rate)
    trickle.thread.start()
    catalog = SqlCatalog("icestream", uri=f"sqlite:///{a.data_dir}/catalog.db",
                         warehouse=f"file://{a.data_dir}/objects/warehouse")
    con = duck_connection()
    print(f"growth: {a.partitions} partitions, {a.rate:.0f} records/s of ~300 B")
    print("| rounds | rows | data files | small files/partition (max) | manifests | snapshots | "
          "metadata.json | metadata bytes | data bytes | PyIceberg plan | DuckDB count(*) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    results = []
    started = time.time()
    rewrites0 = metric(a.admin, "icestream_table_rewrite_bytes_total")
    for target in probes:
        while metric(a.admin, "icestream_compaction_rounds_total") < target:
            time.sleep(0.5)
        results.append(probe(catalog, con, a.data_dir, target))
    elapsed = time.time() - started
    trickle.stop.set()
    trickle.thread.join()
    acked = sum(trickle.acked)
    rewritten = metric(a.admin, "icestream_table_rewrite_bytes_total") - rewrites0
    print(f"acknowledged {acked} records in {elapsed:.0f} s ({trickle.errors} errors); "
          f"rewrites read {rewritten / 1e6:.1f} MB")
    # Every acknowledged record is in the table once, offsets dense.
    deadline = time.time() + 120
    while True:
        table = catalog.load_table(("kafka", TOPIC))
        arrow = table.scan(selected_fields=("partition", "offset")).to_arrow()
        if arrow.num_rows >= acked or time.time() > deadline:
            break
        time.sleep(1)
    seen = {}
    for p, o in zip(arrow.column("partition").to_pylist(), arrow.column("offset").to_pylist()):
        seen.setdefault(p, []).append(o)
    dense = all(sorted(v) == list(range(trickle.acked[p])) for p, v in seen.items())
    print(f"table: {arrow.num_rows} rows for {acked} acknowledged, offsets dense and unique: {dense}")
    first, last = results[0], results[-1]
    checks = [
        ("small files per partition <= 16", last["small_max"] <= 16),
        ("manifests <= 64", last["manifests"] <= 64),
        ("metadata file <= 256 KB", last["metadata_file"] <= 256 * 1024),
        ("metadata bytes < data bytes", last["metadata_bytes"] < last["data_bytes"]),
        ("plan time <= 2x round ~200", last["plan_s"] <= 2 * max(first["plan_s"], 0.05)),
        ("count time <= 2x round ~200", last["count_s"] <= 2 * max(first["count_s"], 0.05)),
        ("every acknowledged record once", arrow.num_rows == acked and dense),
    ]
    for name, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'} {name}")
    sys.exit(0 if all(ok for _, ok in checks) else 1)


if __name__ == "__main__":
    main()
