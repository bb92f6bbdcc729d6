// Kafka transactions with the real Java client (kafka-clients 3.9.1) against icestream.
//
//   java TxnRoundTrip roundtrip BOOTSTRAP TOPIC PARTITIONS N M K TXN_ID
//       initTransactions; commit N records, abort M, commit K; then read the topic back
//       with isolation.level=read_committed and read_uncommitted.
//   java TxnRoundTrip fencing BOOTSTRAP TOPIC PARTITIONS TXN_ID
//       a second producer with the same transactional.id fences the first, whose open
//       transaction is aborted; only the second producer's records are committed.
//   java TxnRoundTrip ctp BOOTSTRAP IN OUT PARTITIONS GROUP TXN_ID
//       consume-transform-produce: read IN (read_committed), write OUT in transactions that
//       also commit the group's offsets (sendOffsetsToTransaction); the third batch is
//       aborted and reprocessed from the committed offsets.
//
// Every step prints one JSON line on stdout: {"step": NAME, "ok": true, ...} or, on the
// first failure, {"step": NAME, "ok": false, "error": CLASS, "message": ..., "causes": [...]}
// and the program exits 1. The last line is {"step": "done", "ok": true}.

import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.Future;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

public class TxnRoundTrip {
    static String step = "start";

    public static void main(String[] args) throws Exception {
        try {
            switch (args[0]) {
                case "roundtrip":
                    roundtrip(args[1], args[2], Integer.parseInt(args[3]), Integer.parseInt(args[4]),
                            Integer.parseInt(args[5]), Integer.parseInt(args[6]), args[7]);
                    break;
                case "fencing":
                    fencing(args[1], args[2], Integer.parseInt(args[3]), args[4]);
                    break;
                case "ctp":
                    ctp(args[1], args[2], args[3], Integer.parseInt(args[4]), args[5], args[6]);
                    break;
                default:
                    throw new IllegalArgumentException("unknown mode " + args[0]);
            }
            emit("done", true, "");
            System.exit(0);
        } catch (Throwable t) {
            fail(t);
            System.exit(1);
        }
    }

    // --- scenarios ------------------------------------------------------------------------

    static void roundtrip(String bootstrap, String topic, int partitions, int n, int m, int k,
                          String txnId) throws Exception {
        try (KafkaProducer<String, String> p = producer(bootstrap, txnId)) {
            step = "initTransactions";
            p.initTransactions();
            emit(step, true, "");

            transaction(p, topic, partitions, "c1", n, true);
            transaction(p, topic, partitions, "ab", m, false);
            transaction(p, topic, partitions, "c2", k, true);
        }
        step = "read_committed";
        emit(step, true, ",\"records\":" + readAll(bootstrap, topic, partitions, "read_committed"));
        step = "read_uncommitted";
        emit(step, true, ",\"records\":" + readAll(bootstrap, topic, partitions, "read_uncommitted"));
    }

    static void fencing(String bootstrap, String topic, int partitions, String txnId) throws Exception {
        KafkaProducer<String, String> first = producer(bootstrap, txnId);
        step = "first.initTransactions";
        first.initTransactions();
        emit(step, true, "");
        step = "first.send";
        first.beginTransaction();
        sendBatch(first, topic, partitions, "zombie", 10);
        emit(step, true, "");

        KafkaProducer<String, String> second = producer(bootstrap, txnId);
        step = "second.initTransactions";
        second.initTransactions(); // fences `first` and aborts its open transaction
        emit(step, true, "");

        step = "first.commitTransaction";
        String fencedBy;
        try {
            first.commitTransaction();
            fencedBy = null;
        } catch (Exception e) {
            fencedBy = e.getClass().getName();
        }
        try {
            first.close(Duration.ofSeconds(5));
        } catch (Exception ignored) {
        }
        emit(step, true, ",\"fenced_with\":" + (fencedBy == null ? "null" : json(fencedBy)));

        transaction(second, topic, partitions, "second", 5, true);
        second.close();

        step = "read_committed";
        emit(step, true, ",\"records\":" + readAll(bootstrap, topic, partitions, "read_committed"));
        step = "read_uncommitted";
        emit(step, true, ",\"records\":" + readAll(bootstrap, topic, partitions, "read_uncommitted"));
    }

    static void ctp(String bootstrap, String in, String out, int partitions, String group,
                    String txnId) throws Exception {
        Properties cp = consumerProps(bootstrap, "read_committed");
        cp.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        cp.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, "100");
        List<TopicPartition> tps = partitionsOf(in, partitions);
        try (KafkaProducer<String, String> p = producer(bootstrap, txnId);
             KafkaConsumer<String, String> c = new KafkaConsumer<>(cp)) {
            step = "initTransactions";
            p.initTransactions();
            emit(step, true, "");
            c.subscribe(List.of(in));
            Map<TopicPartition, Long> end = null;
            int batches = 0, aborted = 0, processed = 0;
            long deadline = System.currentTimeMillis() + 120_000;
            while (System.currentTimeMillis() < deadline) {
                ConsumerRecords<String, String> recs = c.poll(Duration.ofMillis(500));
                if (end == null && !c.assignment().isEmpty()) {
                    end = c.endOffsets(tps);
                }
                if (recs.isEmpty()) {
                    if (end != null && caughtUp(c, end)) {
                        break;
                    }
                    continue;
                }
                batches++;
                step = "ctp.batch" + batches;
                p.beginTransaction();
                Map<TopicPartition, OffsetAndMetadata> offsets = new HashMap<>();
                List<Future<RecordMetadata>> acks = new ArrayList<>();
                for (ConsumerRecord<String, String> r : recs) {
                    acks.add(p.send(new ProducerRecord<>(out, r.partition(), r.key(),
                            "t(" + r.value() + ")")));
                    offsets.put(new TopicPartition(r.topic(), r.partition()),
                            new OffsetAndMetadata(r.offset() + 1));
                }
                p.flush();
                for (Future<RecordMetadata> f : acks) {
                    f.get();
                }
                p.sendOffsetsToTransaction(offsets, c.groupMetadata());
                if (batches == 3) {
                    p.abortTransaction();
                    aborted += recs.count();
                    // Rewind to the last committed offsets and process the batch again.
                    Map<TopicPartition, OffsetAndMetadata> committed = c.committed(offsets.keySet());
                    for (TopicPartition tp : offsets.keySet()) {
                        OffsetAndMetadata om = committed.get(tp);
                        if (om == null) {
                            c.seekToBeginning(List.of(tp));
                        } else {
                            c.seek(tp, om.offset());
                        }
                    }
                    emit(step + ".abort", true, ",\"records\":" + recs.count());
                } else {
                    p.commitTransaction();
                    processed += recs.count();
                }
            }
            step = "ctp.loop";
            if (end == null || !caughtUp(c, end)) {
                throw new IllegalStateException("consume-transform-produce did not reach the end of " + in);
            }
            emit(step, true, ",\"batches\":" + batches + ",\"processed\":" + processed
                    + ",\"aborted\":" + aborted);
        }
        step = "group_offsets";
        try (Admin admin = Admin.create(Map.of(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap))) {
            Map<TopicPartition, OffsetAndMetadata> offs = admin.listConsumerGroupOffsets(group)
                    .partitionsToOffsetAndMetadata().get();
            StringBuilder sb = new StringBuilder("{");
            for (TopicPartition tp : tps) {
                OffsetAndMetadata om = offs.get(tp);
                if (sb.length() > 1) sb.append(',');
                sb.append(json(Integer.toString(tp.partition()))).append(':')
                        .append(om == null ? "null" : Long.toString(om.offset()));
            }
            sb.append('}');
            emit(step, true, ",\"offsets\":" + sb + ",\"end\":" + offsetsJson(endOffsets(bootstrap, in, partitions)));
        }
        step = "read_committed";
        emit(step, true, ",\"records\":" + readAll(bootstrap, out, partitions, "read_committed"));
        step = "read_uncommitted";
        emit(step, true, ",\"records\":" + readAll(bootstrap, out, partitions, "read_uncommitted"));
    }

    // --- helpers ---------------------------------------------------------------------------

    static KafkaProducer<String, String> producer(String bootstrap, String txnId) {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, txnId);
        p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
        p.put(ProducerConfig.ACKS_CONFIG, "all");
        p.put(ProducerConfig.TRANSACTION_TIMEOUT_CONFIG, "60000");
        p.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, "30000");
        p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "60000");
        p.put(ProducerConfig.LINGER_MS_CONFIG, "5");
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        return new KafkaProducer<>(p);
    }

    /** One transaction of `count` records with values PREFIX-i on partitions i % partitions. */
    static void transaction(KafkaProducer<String, String> p, String topic, int partitions,
                            String prefix, int count, boolean commit) throws Exception {
        step = prefix + ".beginTransaction";
        p.beginTransaction();
        step = prefix + ".send";
        sendBatch(p, topic, partitions, prefix, count);
        step = prefix + (commit ? ".commitTransaction" : ".abortTransaction");
        if (commit) {
            p.commitTransaction();
        } else {
            p.abortTransaction();
        }
        emit(step, true, ",\"records\":" + count);
    }

    static void sendBatch(KafkaProducer<String, String> p, String topic, int partitions,
                          String prefix, int count) throws Exception {
        List<Future<RecordMetadata>> acks = new ArrayList<>();
        for (int i = 0; i < count; i++) {
            acks.add(p.send(new ProducerRecord<>(topic, i % partitions, "k-" + i, prefix + "-" + i)));
        }
        p.flush();
        for (Future<RecordMetadata> f : acks) {
            f.get(); // rethrows the send's error (e.g. UnsupportedVersionException)
        }
    }

    static Properties consumerProps(String bootstrap, String isolation) {
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, isolation);
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        return p;
    }

    static List<TopicPartition> partitionsOf(String topic, int partitions) {
        List<TopicPartition> tps = new ArrayList<>();
        for (int i = 0; i < partitions; i++) tps.add(new TopicPartition(topic, i));
        return tps;
    }

    static boolean caughtUp(KafkaConsumer<?, ?> c, Map<TopicPartition, Long> end) {
        for (Map.Entry<TopicPartition, Long> e : end.entrySet()) {
            if (c.assignment().contains(e.getKey()) && c.position(e.getKey()) < e.getValue()) return false;
        }
        return c.assignment().containsAll(end.keySet());
    }

    static Map<TopicPartition, Long> endOffsets(String bootstrap, String topic, int partitions) {
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(consumerProps(bootstrap, "read_uncommitted"))) {
            return c.endOffsets(partitionsOf(topic, partitions));
        }
    }

    static String offsetsJson(Map<TopicPartition, Long> offs) {
        StringBuilder sb = new StringBuilder("{");
        for (Map.Entry<TopicPartition, Long> e : offs.entrySet()) {
            if (sb.length() > 1) sb.append(',');
            sb.append(json(Integer.toString(e.getKey().partition()))).append(':').append(e.getValue());
        }
        return sb.append('}').toString();
    }

    /**
     * Reads every partition from the beginning up to its end offset as seen with this
     * isolation level (the last stable offset for read_committed); returns a JSON list of
     * [partition, offset, key, value] in consumption order, and the end offsets.
     */
    static String readAll(String bootstrap, String topic, int partitions, String isolation) {
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(consumerProps(bootstrap, isolation))) {
            List<TopicPartition> tps = partitionsOf(topic, partitions);
            c.assign(tps);
            c.seekToBeginning(tps);
            Map<TopicPartition, Long> end = c.endOffsets(tps);
            StringBuilder sb = new StringBuilder("[");
            long deadline = System.currentTimeMillis() + 60_000;
            int n = 0;
            while (!caughtUp(c, end)) {
                if (System.currentTimeMillis() > deadline) {
                    throw new IllegalStateException("reading " + topic + " (" + isolation
                            + ") did not reach end offsets " + end);
                }
                for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(200))) {
                    if (n++ > 0) sb.append(',');
                    sb.append('[').append(r.partition()).append(',').append(r.offset()).append(',')
                            .append(json(r.key())).append(',').append(json(r.value())).append(']');
                }
            }
            sb.append("],\"end\":").append(offsetsJson(end));
            return sb.toString();
        }
    }

    static void emit(String name, boolean ok, String extra) {
        System.out.println("{\"step\":" + json(name) + ",\"ok\":" + ok + extra + "}");
        System.out.flush();
    }

    static void fail(Throwable t) {
        StringBuilder causes = new StringBuilder("[");
        Throwable root = t;
        for (Throwable c = t; c != null; c = c.getCause()) {
            if (causes.length() > 1) causes.append(',');
            causes.append("{\"error\":").append(json(c.getClass().getName()))
                    .append(",\"message\":").append(json(String.valueOf(c.getMessage()))).append('}');
            root = c;
            if (c.getCause() == c) break;
        }
        causes.append(']');
        t.printStackTrace();
        emit(step, false, ",\"error\":" + json(root.getClass().getName()) + ",\"message\":"
                + json(String.valueOf(root.getMessage())) + ",\"causes\":" + causes);
    }

    static String json(String s) {
        if (s == null) return "null";
        StringBuilder sb = new StringBuilder("\"");
        for (char ch : s.toCharArray()) {
            switch (ch) {
                case '"': sb.append("\\\""); break;
                case '\\': sb.append("\\\\"); break;
                case '\n': sb.append("\\n"); break;
                case '\r': sb.append("\\r"); break;
                case '\t': sb.append("\\t"); break;
                default:
                    if (ch < 0x20) sb.append(String.format("\\u%04x", (int) ch));
                    else sb.append(ch);
            }
        }
        return sb.append('"').toString();
    }
}
