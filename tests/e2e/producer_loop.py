"""A producer process for crash tests: sends `count` records with unique keys
(`id-N`) to `topic` with acks=all and idempotence, writing every acknowledgement
(`key partition offset`) to `acks_file` as it arrives. Exits 0 when all were acknowledged,
1 if any delivery failed."""

import sys

from confluent_kafka import Producer


def main():
    bootstrap, topic, count, acks_file = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    failures = []
    out = open(acks_file, "w", buffering=1)

    def on_delivery(err, msg):
        if err is not None:
            failures.append(str(err))
        else:
            out.write(f"{msg.key().decode()} {msg.partition()} {msg.offset()}\n")

    p = Producer({
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 2,
        "message.timeout.ms": 180_000,
        "reconnect.backoff.max.ms": 500,
        "queue.buffering.max.messages": 20_000,
    })
    for i in range(count):
        while True:
            try:
                p.produce(topic, key=f"id-{i}".encode(), value=f"value-{i}".encode() * 8,
                          on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    left = p.flush(240)
    out.close()
    if left or failures:
        print(f"undelivered={left} failures={failures[:5]}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
