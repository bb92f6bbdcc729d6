#!/usr/bin/env python3
"""Records real clients' request frames as a fuzzing corpus.

A TCP proxy in front of a broker: every request frame a client sends (without its 4-byte
size prefix: api key, version, correlation id, client id, body) is written to OUT_DIR,
named by its SHA-1, and forwarded; responses are passed back untouched. Start the broker
with its advertised listener set to the proxy's address so clients keep talking through it.

    capture.py LISTEN_PORT BROKER_PORT OUT_DIR
"""

import hashlib
import os
import socket
import sys
import threading


def pump_requests(src, dst, out_dir):
    buf = b""
    while True:
        data = src.recv(65536)
        if not data:
            break
        dst.sendall(data)
        buf += data
        while len(buf) >= 4:
            size = int.from_bytes(buf[:4], "big", signed=True)
            if size < 0 or len(buf) < 4 + size:
                break
            frame, buf = buf[4 : 4 + size], buf[4 + size :]
            name = hashlib.sha1(frame).hexdigest()
            with open(os.path.join(out_dir, name), "wb") as f:
                f.write(frame)
    dst.shutdown(socket.SHUT_WR)


def pump(src, dst):
    while True:
        data = src.recv(65536)
        if not data:
            break
        dst.sendall(data)
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def main():
    listen_port, broker_port, out_dir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    os.makedirs(out_dir, exist_ok=True)
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", listen_port))
    server.listen(64)
    while True:
        client, _ = server.accept()
        upstream = socket.create_connection(("127.0.0.1", broker_port))
        threading.Thread(
            target=pump_requests, args=(client, upstream, out_dir), daemon=True
        ).start()
        threading.Thread(target=pump, args=(upstream, client), daemon=True).start()


if __name__ == "__main__":
    main()
