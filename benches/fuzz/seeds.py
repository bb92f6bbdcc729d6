#!/usr/bin/env python3
"""Turns a broker's data directory into fuzzing seeds: every WAL segment (segment_decode)
and every chunk of record batches in them, exactly as producers sent them
(batch_validate), plus message sets of format v0/v1 as kafka-python's legacy builder
writes them, in every codec (legacy_convert). Request frames come from capture.py.

    seeds.py DATA_DIR OUT_DIR
"""

import hashlib
import os
import struct
import sys


def write(out_dir, data):
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, hashlib.sha1(data).hexdigest()), "wb") as f:
        f.write(data)


def message_sets(out_dir):
    from kafka.record.legacy_records import LegacyRecordBatchBuilder
    for magic in (0, 1):
        for codec in (0, 1, 2, 3):  # none, gzip, snappy, lz4
            b = LegacyRecordBatchBuilder(magic=magic, compression_type=codec, batch_size=1 << 20)
            for i in range(5):
                b.append(i, 1_700_000_000_000 + i if magic else None,
                         None if i == 3 else f"key-{i}".encode(),
                         None if i == 4 else f"value-{i}".encode() * (i + 1))
            write(out_dir, bytes(b.build()))


def main():
    data_dir, out = sys.argv[1], sys.argv[2]
    message_sets(os.path.join(out, "legacy_convert"))
    wal = os.path.join(data_dir, "objects", "wal")
    for name in sorted(os.listdir(wal)):
        seg = open(os.path.join(wal, name), "rb").read()
        if len(seg) <= 64 * 1024:
            write(os.path.join(out, "segment_decode"), seg)
        footer_len, _crc = struct.unpack(">II", seg[-16:-8])
        footer = seg[-16 - footer_len:-16]
        (count,) = struct.unpack(">I", footer[:4])
        for i in range(count):
            entry = footer[4 + 64 * i: 4 + 64 * (i + 1)]
            position, length = struct.unpack(">QI", entry[20:32])
            chunk = seg[position:position + length]
            if len(chunk) <= 64 * 1024:
                write(os.path.join(out, "batch_validate"), chunk)


if __name__ == "__main__":
    main()
