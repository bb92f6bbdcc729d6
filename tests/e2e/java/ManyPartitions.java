// A consumer of many partitions with the real Java client (kafka-clients 3.9.1), which
// fetches through incremental fetch sessions (KIP-227).
//
//   java ManyPartitions BOOTSTRAP TOPIC PARTITIONS PER_PARTITION KEEP
//       read_all:  assign every partition, read PER_PARTITION records of each ("P-I"),
//                  with small responses so that most fetches are incremental;
//       read_new:  produce one record to partitions 0, 1 and PARTITIONS-1, read them;
//       narrowed:  assign partitions [0, KEEP) at their positions, produce one record to
//                  every partition, read KEEP records and then nothing for two seconds;
//       then close the consumer (which closes its fetch session).
//
// Steps print JSON lines as TxnRoundTrip's do; the last is {"step": "done", "ok": true}.

import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

public class ManyPartitions {
    public static void main(String[] args) {
        try {
            run(args[0], args[1], Integer.parseInt(args[2]), Integer.parseInt(args[3]),
                    Integer.parseInt(args[4]));
            TxnRoundTrip.emit("done", true, "");
            System.exit(0);
        } catch (Throwable t) {
            TxnRoundTrip.fail(t);
            System.exit(1);
        }
    }

    static void run(String bootstrap, String topic, int partitions, int per, int keep)
            throws Exception {
        Properties c = new Properties();
        c.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        c.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        c.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        c.put(ConsumerConfig.MAX_PARTITION_FETCH_BYTES_CONFIG, "512");
        c.put(ConsumerConfig.FETCH_MAX_BYTES_CONFIG, "4096");
        c.put(ConsumerConfig.FETCH_MAX_WAIT_MS_CONFIG, "200");
        c.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        c.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.ACKS_CONFIG, "all");
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());

        Map<Integer, Integer> next = new HashMap<>();
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(c);
             KafkaProducer<String, String> producer = new KafkaProducer<>(p)) {
            TxnRoundTrip.step = "read_all";
            List<TopicPartition> all = new ArrayList<>();
            for (int i = 0; i < partitions; i++) all.add(new TopicPartition(topic, i));
            consumer.assign(all);
            consumer.seekToBeginning(all);
            int n = read(consumer, next, partitions * per, new java.util.TreeSet<>());
            TxnRoundTrip.emit("read_all", true, ",\"records\":" + n);

            TxnRoundTrip.step = "read_new";
            int[] fresh = {0, 1, partitions - 1};
            for (int q : fresh) {
                producer.send(new ProducerRecord<>(topic, q, null, q + "-" + next.get(q))).get();
            }
            n = read(consumer, next, fresh.length, new java.util.TreeSet<>());
            TxnRoundTrip.emit("read_new", true, ",\"records\":" + n);

            TxnRoundTrip.step = "narrowed";
            List<TopicPartition> some = new ArrayList<>();
            for (int i = 0; i < keep; i++) some.add(new TopicPartition(topic, i));
            consumer.assign(some);
            for (TopicPartition tp : some) consumer.seek(tp, next.get(tp.partition()));
            for (int i = 0; i < partitions; i++) {
                producer.send(new ProducerRecord<>(topic, i, null, i + "-" + next.get(i))).get();
            }
            java.util.TreeSet<Integer> from = new java.util.TreeSet<>();
            n = read(consumer, next, keep, from);
            List<Integer> late = new ArrayList<>();
            long until = System.currentTimeMillis() + 2000;
            while (System.currentTimeMillis() < until) {
                for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(200))) {
                    late.add(r.partition());
                }
            }
            if (!late.isEmpty()) {
                throw new IllegalStateException("records after the narrowed reads: " + late);
            }
            StringBuilder parts = new StringBuilder("[");
            for (int q : from) {
                if (parts.length() > 1) parts.append(',');
                parts.append(q);
            }
            parts.append(']');
            TxnRoundTrip.emit("narrowed", true, ",\"records\":" + n + ",\"partitions\":" + parts);
        }
    }

    /**
     * Polls until `count` records arrived, checking each is the next of its partition
     * ("P-I" at offset I); `next` holds each partition's next offset, `from` gets the
     * partitions read from.
     */
    static int read(KafkaConsumer<String, String> consumer, Map<Integer, Integer> next,
                    int count, java.util.Set<Integer> from) {
        int n = 0;
        long deadline = System.currentTimeMillis() + 60_000;
        while (n < count && System.currentTimeMillis() < deadline) {
            for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(200))) {
                int expected = next.getOrDefault(r.partition(), 0);
                String want = r.partition() + "-" + expected;
                if (r.offset() != expected || !want.equals(r.value())) {
                    throw new IllegalStateException("partition " + r.partition() + " offset "
                            + r.offset() + " value " + r.value() + ", expected " + want
                            + " at " + expected);
                }
                next.put(r.partition(), expected + 1);
                from.add(r.partition());
                n++;
            }
        }
        if (n != count) throw new IllegalStateException("read " + n + " of " + count + " records");
        return n;
    }
}
