"""The admin endpoint: Prometheus metrics and a health check."""

import urllib.request

from helpers import free_port
from workload import consume, create_topic, make_records, produce


def get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.read().decode()


def metric(text, name):
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"metric {name} missing")


def test_metrics_and_health(make_broker):
    port = free_port()
    broker = make_broker({"admin_listen": f"127.0.0.1:{port}"})
    base = f"http://127.0.0.1:{port}"
    status, body = get(base + "/health")
    assert status == 200 and '"status":"ok"' in body
    create_topic(broker.bootstrap, "observed", 2)
    acked, _ = produce(broker.bootstrap, "observed", make_records(500, 2, seed=60))
    consume(broker.bootstrap, "observed", 2, len(acked))
    _, text = get(base + "/metrics")
    assert metric(text, "icestream_produce_requests_total") >= 1
    assert metric(text, "icestream_produce_bytes_total") > 0
    assert metric(text, "icestream_segment_puts_total") >= 1
    assert metric(text, "icestream_fetch_bytes_total") > 0
    assert metric(text, "icestream_meta_commit_seconds_count") >= 1
    assert metric(text, "icestream_live_brokers") == 1
    assert "icestream_produce_latency_seconds_bucket" in text


def test_logs_written_to_a_file_are_plain_text(broker):
    """The broker's log goes to a file here: no terminal colour codes in it."""
    create_topic(broker.bootstrap, "plain-logs", 1)
    log = broker.log()
    assert "broker.open" in log, log[-2000:]
    assert "\x1b[" not in log, log[-2000:]


def test_idle_connections_do_not_hold_the_admin_endpoint(make_broker):
    """100 connections that never send a request (more than the endpoint serves at once)
    are closed after its 10 s read timeout, and /health answers meanwhile or right after."""
    import socket
    import time

    port = free_port()
    make_broker({"admin_listen": f"127.0.0.1:{port}"})
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(100)]
    try:
        started = time.time()
        # It may wait for the idle connections' timeout: a slot frees after 10 s.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=30) as r:
            assert r.status == 200 and '"status":"ok"' in r.read().decode()
        assert time.time() - started < 20
        idle[0].settimeout(15)
        assert idle[0].recv(1) == b"", "an idle connection stayed open"
    finally:
        for s in idle:
            s.close()
