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
