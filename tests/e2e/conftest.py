import pytest

from helpers import Broker, SeaweedFS


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path / "broker").start()
    yield b
    b.stop()


@pytest.fixture
def make_broker(tmp_path):
    """Starts brokers with custom settings; all are stopped at the end."""
    started = []

    def make(settings=None, data_dir=None, port=None):
        b = Broker(data_dir or tmp_path / f"broker{len(started)}", settings, port).start()
        started.append(b)
        return b

    yield make
    for b in started:
        b.stop()


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory):
    s = SeaweedFS(tmp_path_factory.mktemp("seaweedfs")).start()
    yield s
    s.stop()


@pytest.fixture(scope="session")
def seaweedfs_anonymous(tmp_path_factory):
    s = SeaweedFS(tmp_path_factory.mktemp("seaweedfs-anon"), anonymous=True).start()
    s.create_table_bucket("tables")
    yield s
    s.stop()


@pytest.fixture
def postgres_url():
    """A fresh database in the test script's PostgreSQL, as a postgres:// URL."""
    import os
    import uuid
    base = os.environ.get("ICESTREAM_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("ICESTREAM_TEST_POSTGRES_URL is not set (scripts/test.sh sets it)")
    import psycopg2
    name = f"t{uuid.uuid4().hex[:12]}"
    conn = psycopg2.connect(base)
    conn.autocommit = True
    conn.cursor().execute(f"CREATE DATABASE {name}")
    conn.close()
    yield base.rsplit("/", 1)[0] + "/" + name
