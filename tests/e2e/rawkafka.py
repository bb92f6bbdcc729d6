"""Hand-encoded Kafka requests over a plain socket, for feeding the broker bad input.
Record batches come from kafka-python's encoder."""

import socket
import struct

from kafka.record.default_records import DefaultRecordBatchBuilder


def batch(values, producer_id=-1, epoch=-1, base_sequence=-1, compression=0):
    b = DefaultRecordBatchBuilder(magic=2, compression_type=compression, is_transactional=False,
                                  producer_id=producer_id, producer_epoch=epoch,
                                  base_sequence=base_sequence, batch_size=1 << 30)
    for i, v in enumerate(values):
        b.append(i, 1_700_000_000_000 + i, None, v, [])
    return bytes(b.build())


def string(s):
    if s is None:
        return struct.pack(">h", -1)
    data = s.encode()
    return struct.pack(">h", len(data)) + data


def nbytes(b):
    if b is None:
        return struct.pack(">i", -1)
    return struct.pack(">i", len(b)) + b


class Conn:
    def __init__(self, bootstrap, timeout=10):
        host, port = bootstrap.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.correlation = 0

    def close(self):
        self.sock.close()

    def send_raw(self, data):
        self.sock.sendall(data)

    def request(self, api_key, version, body):
        """Sends a request with header v1 and returns the response body (after the v0
        response header)."""
        self.correlation += 1
        header = struct.pack(">hhi", api_key, version, self.correlation) + string("raw-tests")
        payload = header + body
        self.sock.sendall(struct.pack(">i", len(payload)) + payload)
        resp = self.read_frame()
        if resp is None:
            return None
        (corr,) = struct.unpack(">i", resp[:4])
        assert corr == self.correlation, f"correlation id {corr} != {self.correlation}"
        return resp[4:]

    def read_frame(self):
        head = self._read_exact(4)
        if head is None:
            return None
        (size,) = struct.unpack(">i", head)
        return self._read_exact(size)

    def _read_exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf

    def closed_by_peer(self, timeout=10):
        """True when the broker closes the connection (EOF)."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True


class Reader:
    def __init__(self, data):
        self.data = data
        self.pos = 0

    def take(self, fmt):
        size = struct.calcsize(fmt)
        (v,) = struct.unpack(fmt, self.data[self.pos:self.pos + size])
        self.pos += size
        return v

    def string(self):
        n = self.take(">h")
        if n < 0:
            return None
        s = self.data[self.pos:self.pos + n].decode()
        self.pos += n
        return s

    def bytes(self):
        n = self.take(">i")
        if n < 0:
            return None
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b


def produce_v3(conn, topic, partition, records, acks=-1):
    """Produce v3; returns (error_code, base_offset) of the one partition."""
    body = string(None) + struct.pack(">hi", acks, 10_000) + struct.pack(">i", 1) + string(topic)
    body += struct.pack(">i", 1) + struct.pack(">i", partition) + nbytes(records)
    resp = conn.request(0, 3, body)
    if resp is None:
        return None
    r = Reader(resp)
    assert r.take(">i") == 1
    r.string()
    assert r.take(">i") == 1
    r.take(">i")
    error = r.take(">h")
    base = r.take(">q")
    return error, base


def fetch_v4(conn, topic, partition, offset, max_bytes=1 << 20):
    """Fetch v4 of one partition; returns (error_code, high_watermark, records)."""
    body = struct.pack(">iiiib", -1, 0, 1, max_bytes, 0) + struct.pack(">i", 1) + string(topic)
    body += struct.pack(">i", 1) + struct.pack(">iqi", partition, offset, max_bytes)
    r = Reader(conn.request(1, 4, body))
    r.take(">i")  # throttle
    assert r.take(">i") == 1
    r.string()
    assert r.take(">i") == 1
    r.take(">i")
    error = r.take(">h")
    hw = r.take(">q")
    r.take(">q")  # last stable offset
    n = r.take(">i")
    for _ in range(max(n, 0)):
        r.take(">q")
        r.take(">q")
    return error, hw, r.bytes()


def api_versions(conn, version):
    """ApiVersions (header v1 is fine for v0-v2; v3+ would need header v2, which the
    broker never gets to parse for versions it does not know); returns
    (error_code, [(api_key, min, max)])."""
    r = Reader(conn.request(18, version, b""))
    error = r.take(">h")
    n = r.take(">i")
    keys = [(r.take(">h"), r.take(">h"), r.take(">h")) for _ in range(n)]
    return error, keys
