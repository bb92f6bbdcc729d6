#!/usr/bin/env python3
"""Drives real clients through the capture proxy: librdkafka (confluent-kafka) producers
with every codec, idempotence, consumers in groups, admin calls; kafka-python and
aiokafka producers and consumers, and kafka-python pinned to 0.8-0.10 protocol versions.
Their request frames become the fuzzing corpus.

    clients.py BOOTSTRAP
"""

import asyncio
import sys
import uuid

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, ConfigResource, NewPartitions, NewTopic


def librdkafka(bootstrap):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topics = [f"corpus-{c}" for c in ("none", "gzip", "snappy", "lz4", "zstd")]
    for f in admin.create_topics([NewTopic(t, 2) for t in topics]).values():
        f.result()
    admin.describe_configs([ConfigResource("topic", topics[0])])[
        ConfigResource("topic", topics[0])
    ].result()
    admin.create_partitions([NewPartitions(topics[0], 3)])[topics[0]].result()
    for codec, topic in zip(("none", "gzip", "snappy", "lz4", "zstd"), topics):
        p = Producer(
            {
                "bootstrap.servers": bootstrap,
                "compression.codec": codec,
                "enable.idempotence": codec != "none",
                "linger.ms": 5,
            }
        )
        for i in range(200):
            p.produce(
                topic,
                key=f"k{i}".encode(),
                value=(f"value-{i}-" * (i % 7 + 1)).encode(),
                headers=[("h", b"v"), ("trace", str(i).encode())],
            )
        p.flush(30)
    group = f"g-{uuid.uuid4()}"
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    c.subscribe(topics)
    got = 0
    while got < 1000:
        m = c.poll(10)
        if m is None:
            break
        if not m.error():
            got += 1
    c.commit(asynchronous=False)
    c.close()
    admin.list_consumer_groups().result()
    admin.describe_consumer_groups([group])[group].result()
    admin.delete_topics([topics[0]])[topics[0]].result()


def kafka_python(bootstrap):
    from kafka import KafkaConsumer, KafkaProducer

    p = KafkaProducer(bootstrap_servers=bootstrap, compression_type="gzip")
    for i in range(100):
        p.send("corpus-kp", key=b"k", value=f"kafka-python {i}".encode())
    p.flush()
    p.close()
    c = KafkaConsumer(
        "corpus-kp",
        bootstrap_servers=bootstrap,
        group_id="corpus-kp-group",
        auto_offset_reset="earliest",
        consumer_timeout_ms=5000,
    )
    for n, _ in enumerate(c):
        if n >= 99:
            break
    c.commit()
    c.close()


def kafka_python_old(bootstrap):
    """Pre-0.11 protocol versions: Produce v0-v2 with message sets, Fetch v0-v2,
    ListOffsets v0, OffsetCommit v1-v2."""
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    for version, codec in (((0, 8, 2), None), ((0, 9), "lz4"), ((0, 10, 0), "gzip")):
        topic = "corpus-old-" + "-".join(map(str, version))
        p = KafkaProducer(bootstrap_servers=bootstrap, api_version=version, compression_type=codec)
        for i in range(20):
            p.send(topic, key=b"k", value=f"old {version} {i}".encode())
        p.flush()
        p.close()
        c = KafkaConsumer(bootstrap_servers=bootstrap, api_version=version,
                          group_id=topic + "-group", auto_offset_reset="earliest",
                          enable_auto_commit=False, consumer_timeout_ms=5000)
        c.assign([TopicPartition(topic, 0)])
        for n, _ in enumerate(c):
            if n >= 19:
                break
        c.commit()
        c.close()


async def aiokafka_clients(bootstrap):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    p = AIOKafkaProducer(bootstrap_servers=bootstrap, compression_type="lz4")
    await p.start()
    for i in range(100):
        await p.send("corpus-aio", value=f"aiokafka {i}".encode(), key=b"a")
    await p.stop()
    c = AIOKafkaConsumer(
        "corpus-aio",
        bootstrap_servers=bootstrap,
        group_id="corpus-aio-group",
        auto_offset_reset="earliest",
    )
    await c.start()
    try:
        n = 0
        async for _ in c:
            n += 1
            if n >= 100:
                break
        await c.commit()
    finally:
        await c.stop()


if __name__ == "__main__":
    bootstrap = sys.argv[1]
    librdkafka(bootstrap)
    kafka_python(bootstrap)
    kafka_python_old(bootstrap)
    asyncio.run(aiokafka_clients(bootstrap))
    print("clients done")
