"""The Java programs of the end-to-end tests (tests/e2e/java): the jars they run on, compiling
them, and running them as subprocesses.

The jars come from PyPI (no Maven here): `apache-flink-libraries` carries Flink 2.0's runtime
jars, `shigawire-apache-flink-libraries` adds flink-connector-kafka 4.0.1-2.0 and
kafka-clients 3.9.1. They are installed once with `pip install --target` into
$ICESTREAM_CACHE/flink-2.0.0 (default ~/.cache/icestream), and the sources are compiled with
the machine's javac (Java 17) into a directory keyed by a hash of the sources and classpath.
"""

import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

JAVA_SRC = Path(__file__).resolve().parent / "java"
CACHE = Path(os.environ.get("ICESTREAM_CACHE") or Path.home() / ".cache" / "icestream")
FLINK_PACKAGES = ["apache-flink-libraries==2.0.0", "shigawire-apache-flink-libraries==2.0.0.post1"]
FLINK_DIR = CACHE / "flink-2.0.0"

# What Flink's own config.yaml passes to its JVMs on Java 17 (env.java.opts.all).
JVM_OPENS = [
    "--add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED",
    "--add-exports=java.security.jgss/sun.security.krb5=ALL-UNNAMED",
    "--add-opens=java.base/java.lang=ALL-UNNAMED",
    "--add-opens=java.base/java.net=ALL-UNNAMED",
    "--add-opens=java.base/java.io=ALL-UNNAMED",
    "--add-opens=java.base/java.nio=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens=java.base/java.lang.reflect=ALL-UNNAMED",
    "--add-opens=java.base/java.text=ALL-UNNAMED",
    "--add-opens=java.base/java.time=ALL-UNNAMED",
    "--add-opens=java.base/java.util=ALL-UNNAMED",
    "--add-opens=java.base/java.util.concurrent=ALL-UNNAMED",
    "--add-opens=java.base/java.util.concurrent.atomic=ALL-UNNAMED",
    "--add-opens=java.base/java.util.concurrent.locks=ALL-UNNAMED",
]


def have_jdk() -> bool:
    return shutil.which("javac") is not None and shutil.which("java") is not None


@contextmanager
def _locked(name: str):
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def lib_dir() -> Path:
    """Flink's and Kafka's jars (installing them the first time)."""
    marker = FLINK_DIR / ".complete"
    want = " ".join(FLINK_PACKAGES)
    if marker.exists() and marker.read_text() == want:
        return FLINK_DIR / "pyflink" / "lib"
    with _locked("flink-2.0.0"):
        if not (marker.exists() and marker.read_text() == want):
            tmp = FLINK_DIR.with_name(f"{FLINK_DIR.name}.tmp-{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-input",
                   "--disable-pip-version-check", "--no-deps", "--target", str(tmp),
                   *FLINK_PACKAGES]
            env = dict(os.environ, PIP_NO_INPUT="1")
            r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                               timeout=1800, env=env)
            if r.returncode != 0:
                shutil.rmtree(tmp, ignore_errors=True)
                raise RuntimeError(f"installing {want} failed:\n{r.stdout}\n{r.stderr}")
            # Not needed here: the Python parts, Flink's plugins and optional jars.
            for extra in ("plugins", "opt", "bin", "licenses"):
                shutil.rmtree(tmp / "pyflink" / extra, ignore_errors=True)
            (tmp / ".complete").write_text(want)
            shutil.rmtree(FLINK_DIR, ignore_errors=True)
            tmp.rename(FLINK_DIR)
    return FLINK_DIR / "pyflink" / "lib"


def _jars(*patterns: str) -> list[str]:
    lib = lib_dir()
    out = []
    for pattern in patterns:
        found = sorted(lib.glob(pattern))
        if not found:
            raise RuntimeError(f"no {pattern} in {lib}")
        out.append(str(found[-1]))
    return out


LOGGING_JARS = ("log4j-api-*.jar", "log4j-core-*.jar", "log4j-slf4j-impl-*.jar")
CODEC_JARS = ("lz4-java.jar", "snappy-java.jar", "zstd-jni.jar")


def kafka_classpath() -> list[str]:
    """The plain Java client: kafka-clients 3.9.1, its compression codecs, slf4j to log4j."""
    return _jars("kafka-clients.jar", "slf4j-api.jar", *LOGGING_JARS, *CODEC_JARS)


def flink_classpath() -> list[str]:
    """What a Flink distribution's lib/ holds (flink-dist bundles the runtime, the DataStream
    API, connector-base and slf4j), plus the Kafka connector and client. The per-module jars
    of the second wheel (flink-core.jar, flink-runtime.jar, ...) repeat flink-dist's classes
    and are left out."""
    return _jars("flink-dist-*.jar", "flink-table-api-java-uber-*.jar",
                 "flink-table-planner-loader-*.jar", "flink-table-runtime-*.jar",
                 "flink-json-*.jar", "flink-csv-*.jar", "flink-cep-*.jar",
                 "flink-connector-kafka.jar",
                 "kafka-clients.jar", "log4j-1.2-api-*.jar", *LOGGING_JARS, *CODEC_JARS)


def classes_dir() -> Path:
    """The compiled programs (compiling them when the sources changed)."""
    classpath = flink_classpath()
    sources = sorted(JAVA_SRC.glob("*.java"))
    resources = sorted(JAVA_SRC.glob("*.properties"))
    h = hashlib.sha256()
    version = subprocess.run(["javac", "-version"], capture_output=True, text=True)
    h.update((version.stdout + version.stderr).encode())
    for p in classpath:
        h.update(Path(p).name.encode())
    for p in sources + resources:
        h.update(p.name.encode())
        h.update(p.read_bytes())
    out = CACHE / "java-classes" / h.hexdigest()[:16]
    if (out / ".complete").exists():
        return out
    with _locked("java-classes"):
        if not (out / ".complete").exists():
            tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            r = subprocess.run(["javac", "-nowarn", "-encoding", "UTF-8", "-d", str(tmp),
                                "-cp", os.pathsep.join(classpath), *map(str, sources)],
                               stdin=subprocess.DEVNULL, capture_output=True, text=True,
                               timeout=600)
            if r.returncode != 0:
                shutil.rmtree(tmp, ignore_errors=True)
                raise RuntimeError(f"javac failed:\n{r.stdout}\n{r.stderr}")
            for res in resources:
                shutil.copy(res, tmp / res.name)
            (tmp / ".complete").write_text("")
            shutil.rmtree(out, ignore_errors=True)
            tmp.rename(out)
    return out


class JavaProcess:
    """A Java program running as a subprocess; stdout (JSON lines), stderr and its log4j log
    go to files in `workdir` named after `name`."""

    def __init__(self, main: str, args, workdir: Path, name: str, classpath, heap="768m"):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.stdout_path = self.workdir / f"{name}.out"
        self.stderr_path = self.workdir / f"{name}.err"
        self.log_path = self.workdir / f"{name}.log"
        tmp = self.workdir / f"{name}.tmp"
        tmp.mkdir(exist_ok=True)
        classes = classes_dir()
        cmd = ["java", f"-Xmx{heap}", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
               *JVM_OPENS,
               f"-Djava.io.tmpdir={tmp}",
               f"-Dlog4j.configurationFile={classes / 'log4j2.properties'}",
               f"-Dicestream.java.log={self.log_path}",
               "-cp", os.pathsep.join([str(classes), *classpath]), main, *map(str, args)]
        self.cmd = cmd
        self.started = time.time()
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                         cwd=self.workdir)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill9()
            raise TimeoutError(f"{self.name} did not finish within {timeout}s\n{self.describe()}")

    def kill9(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def events(self) -> list[dict]:
        """The JSON lines the program printed (other lines are skipped)."""
        out = []
        for line in self.stdout_path.read_text(errors="replace").splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out

    def describe(self, tail=4000) -> str:
        """Exit status and the tails of stdout, stderr and the log, for assertion messages."""
        def tail_of(p: Path) -> str:
            try:
                return p.read_text(errors="replace")[-tail:]
            except FileNotFoundError:
                return ""
        return (f"{self.name}: exit {self.proc.poll()} after {time.time() - self.started:.0f}s\n"
                f"--- stdout\n{tail_of(self.stdout_path)}\n--- stderr\n{tail_of(self.stderr_path)}\n"
                f"--- log {self.log_path}\n{tail_of(self.log_path)}")


def start_kafka_program(main: str, args, workdir: Path, name: str) -> JavaProcess:
    return JavaProcess(main, args, workdir, name, kafka_classpath(), heap="256m")


def start_flink_program(main: str, args, workdir: Path, name: str) -> JavaProcess:
    return JavaProcess(main, args, workdir, name, flink_classpath(), heap="1g")


def run_kafka_program(main: str, args, workdir: Path, name: str, timeout: float = 120) -> JavaProcess:
    p = start_kafka_program(main, args, workdir, name)
    p.wait(timeout)
    return p


def latest_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The newest completed checkpoint (a chk-N directory with a `_metadata` file) under
    `checkpoint_dir`/JOB_ID/, or None. Flink writes `_metadata` to a temporary file that it
    renames, so its presence means the checkpoint was written whole. Restore from exactly this
    one: an exactly-once sink may already have committed the transactions of the newest
    checkpoint, and restoring from an older one would write their records again."""
    best = None
    for meta in Path(checkpoint_dir).glob("*/chk-*/_metadata"):
        try:
            st = meta.stat()
        except FileNotFoundError:
            continue  # removed (only a few checkpoints are retained)
        if st.st_size == 0:
            continue
        n = int(meta.parent.name.split("-", 1)[1])
        key = (st.st_mtime, n)
        if best is None or key > best[0]:
            best = (key, meta.parent)
    return best[1] if best else None
