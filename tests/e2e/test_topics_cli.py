"""`icestream topics`: create, describe, list and delete topics against a running broker,
with how fresh each topic's table is (ListOffsets' LATEST_TIERED, -5: the last offset
folded into the table), checked against the table PyIceberg reads and what
confluent-kafka (librdkafka) sees."""

import subprocess
import time

from confluent_kafka.admin import AdminClient, ConfigResource

from helpers import icestream_bin
from tables import sql_catalog, wait_for_rows
from workload import make_records, produce


def topics_cli(broker, *args, ok=True):
    r = subprocess.run([icestream_bin(), "topics", "--bootstrap", broker.bootstrap, *args],
                       capture_output=True, timeout=60)
    if ok:
        assert r.returncode == 0, r.stderr.decode()
    return r


def partition_rows(out):
    """PARTITION → (START, END, LAST IN TABLE, NOT IN TABLE) from `topics describe`."""
    rows = {}
    lines = out.splitlines()
    header = next(i for i, l in enumerate(lines) if l.startswith("PARTITION"))
    for line in lines[header + 1:]:
        cells = line.split()
        if len(cells) != 5 or not cells[0].isdigit():
            break
        last = -1 if cells[3] == "-" else int(cells[3])
        rows[int(cells[0])] = (int(cells[1]), int(cells[2]), last, int(cells[4]))
    return rows


def test_topics_cli_creates_describes_lists_and_deletes(make_broker):
    broker = make_broker({"compaction_interval_ms": 300})
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})

    out = topics_cli(broker, "create", "events", "--partitions", "3",
                     "--config", "retention.ms=86400000").stdout.decode()
    assert "created events (3 partition(s))" in out
    md = admin.list_topics(timeout=10)
    assert len(md.topics["events"].partitions) == 3
    resource = ConfigResource(ConfigResource.Type.TOPIC, "events")
    configs = admin.describe_configs([resource])[resource].result(timeout=10)
    assert configs["retention.ms"].value == "86400000"

    # A second create is refused with Kafka's error, and a clear message.
    again = topics_cli(broker, "create", "events", ok=False)
    assert again.returncode != 0
    assert "TopicAlreadyExists" in again.stderr.decode()

    # Nothing written: every partition empty, nothing in the table.
    described = topics_cli(broker, "describe", "events").stdout.decode()
    assert "retention.ms=86400000" in described
    assert partition_rows(described) == {p: (0, 0, -1, 0) for p in range(3)}

    records = make_records(3000, 3, seed=91)
    acked, errors = produce(broker.bootstrap, "events", records)
    assert not errors
    wait_for_rows(sql_catalog(broker), "events", len(acked))
    table = sql_catalog(broker).load_table(("kafka", "events")).scan().to_arrow().to_pylist()
    last_in_table = {}
    for r in table:
        last_in_table[r["partition"]] = max(last_in_table.get(r["partition"], -1), r["offset"])
    ends = {p: sum(1 for (q, _) in acked if q == p) for p in range(3)}

    deadline = time.time() + 30
    while True:
        rows = partition_rows(topics_cli(broker, "describe", "events").stdout.decode())
        if all(rows[p][3] == 0 for p in range(3)) or time.time() > deadline:
            break
        time.sleep(0.3)
    for p in range(3):
        start, end, last, behind = rows[p]
        assert (start, end) == (0, ends[p]), rows
        assert last == last_in_table[p] == end - 1, (rows, last_in_table)
        assert behind == 0, rows

    listed = topics_cli(broker, "list").stdout.decode().splitlines()
    line = next(l for l in listed if l.split()[0] == "events")
    assert line.split()[1:] == ["3", str(len(acked)), "0"], line

    out = topics_cli(broker, "delete", "events").stdout.decode()
    assert "deleted events" in out
    deadline = time.time() + 10
    while "events" in admin.list_topics(timeout=10).topics and time.time() < deadline:
        time.sleep(0.2)
    assert "events" not in admin.list_topics(timeout=10).topics
    missing = topics_cli(broker, "describe", "events", ok=False)
    assert missing.returncode != 0
    assert "UnknownTopicOrPartition" in missing.stderr.decode()
