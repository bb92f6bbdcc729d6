#!/usr/bin/env python3
"""Drives real clients through the capture proxy: librdkafka (confluent-kafka) producers
with every codec, idempotence, consumers in groups, admin calls; kafka-python and
aiokafka producers and consumers. Their request frames become the fuzzing corpus.

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
    asyncio.run(aiokafka_clients(bootstrap))
    print("clients done")
