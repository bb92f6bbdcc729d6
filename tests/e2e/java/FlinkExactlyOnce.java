// A Flink 2.0 SQL job in an in-process mini cluster: topic SOURCE -> topic SINK through the
// Kafka connector (flink-connector-kafka 4.0.1-2.0, kafka-clients 3.9.1), with checkpoints
// every second retained in a local directory, so that a SIGKILLed run can be restarted from
// its last checkpoint.
//
// The source is unbounded: a bounded Kafka source restored from a checkpoint never finishes
// (its split enumerator only signals "no more splits" after discovering partitions it does not
// already have in its restored state), so the program ends the job itself: once the source's
// consumer group has committed SOURCE's end offsets (Flink commits them when a checkpoint
// completes, as the exactly-once sink commits its transactions), it stops the job with a
// draining savepoint, which ends the sink's last transaction like the end of a bounded job.
//
//   java FlinkExactlyOnce key=value...
//     bootstrap=HOST:PORT source=A sink=B guarantee=exactly-once|at-least-once
//     checkpoints=DIR          checkpoint storage (file system); checkpoints are retained
//     restore=DIR              optional: a chk-N directory to restore from
//     txnPrefix=P              sink.transactional-id-prefix (exactly-once)
//     naming=INCREMENTING|POOLING  sink.transaction-naming-strategy (default INCREMENTING)
//     parallelism=2            job parallelism
//     sleepMicros=1000         per-record delay in the job (to make it last long enough to kill)
//     group=G                  the source's consumer group (offsets committed on checkpoints)
//     bounded=false            true: 'scan.bounded.mode' = 'latest-offset' instead of the
//                              stop described above (fine for runs that are not restored)
//
// The job reads keys and values as raw strings and writes them unchanged. Prints JSON lines
// on stdout: {"event":"submitted","job":ID,"restored_from":DIR|null},
// {"event":"caught_up","offsets":{..}}, {"event":"stopped","savepoint":DIR}, then
// {"event":"finished","ok":true} or {"event":"failed","ok":false,"error":..,"message":..,"causes":[..]}.

import java.io.File;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import org.apache.flink.configuration.CheckpointingOptions;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.CoreOptions;
import org.apache.flink.configuration.ExternalizedCheckpointRetention;
import org.apache.flink.configuration.RestartStrategyOptions;
import org.apache.flink.configuration.StateBackendOptions;
import org.apache.flink.configuration.StateRecoveryOptions;
import org.apache.flink.core.execution.CheckpointingMode;
import org.apache.flink.core.execution.JobClient;
import org.apache.flink.core.execution.SavepointFormatType;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.table.api.TableResult;
import org.apache.flink.table.api.bridge.java.StreamTableEnvironment;
import org.apache.flink.table.functions.ScalarFunction;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.TopicPartition;

public class FlinkExactlyOnce {

    /** Passes a value through after sleeping, so the job takes long enough to be killed. */
    public static class Throttle extends ScalarFunction {
        private final long micros;
        private transient long owed;

        public Throttle() {
            this(0);
        }

        public Throttle(long micros) {
            this.micros = micros;
        }

        public String eval(String value) {
            owed += micros;
            if (owed >= 1000) {
                try {
                    Thread.sleep(owed / 1000);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
                owed %= 1000;
            }
            return value;
        }

        @Override
        public boolean isDeterministic() {
            return false;
        }
    }

    public static void main(String[] argv) {
        Map<String, String> a = new HashMap<>();
        for (String s : argv) {
            int i = s.indexOf('=');
            a.put(s.substring(0, i), s.substring(i + 1));
        }
        try {
            run(a);
            System.exit(0);
        } catch (Throwable t) {
            t.printStackTrace();
            emitFailure(t);
            System.exit(1);
        }
    }

    static void run(Map<String, String> a) throws Exception {
        String bootstrap = a.get("bootstrap");
        String guarantee = a.getOrDefault("guarantee", "exactly-once");
        String restore = a.getOrDefault("restore", "");
        boolean bounded = Boolean.parseBoolean(a.getOrDefault("bounded", "false"));
        int parallelism = Integer.parseInt(a.getOrDefault("parallelism", "2"));
        long sleepMicros = Long.parseLong(a.getOrDefault("sleepMicros", "1000"));

        Configuration conf = new Configuration();
        conf.set(CoreOptions.DEFAULT_PARALLELISM, parallelism);
        conf.set(CheckpointingOptions.CHECKPOINTING_INTERVAL, Duration.ofMillis(
                Long.parseLong(a.getOrDefault("checkpointMs", "1000"))));
        conf.set(CheckpointingOptions.CHECKPOINTING_CONSISTENCY_MODE, CheckpointingMode.EXACTLY_ONCE);
        conf.set(CheckpointingOptions.MIN_PAUSE_BETWEEN_CHECKPOINTS, Duration.ofMillis(200));
        conf.set(CheckpointingOptions.CHECKPOINTING_TIMEOUT, Duration.ofMinutes(2));
        conf.set(CheckpointingOptions.CHECKPOINT_STORAGE, "filesystem");
        conf.set(CheckpointingOptions.CHECKPOINTS_DIRECTORY,
                new File(a.get("checkpoints")).getAbsoluteFile().toURI().toString());
        conf.set(CheckpointingOptions.EXTERNALIZED_CHECKPOINT_RETENTION,
                ExternalizedCheckpointRetention.RETAIN_ON_CANCELLATION);
        conf.set(CheckpointingOptions.MAX_RETAINED_CHECKPOINTS, 3);
        conf.set(StateBackendOptions.STATE_BACKEND, "hashmap");
        // A failure inside the job is retried twice (from the last checkpoint), then reported.
        conf.set(RestartStrategyOptions.RESTART_STRATEGY, "fixed-delay");
        conf.set(RestartStrategyOptions.RESTART_STRATEGY_FIXED_DELAY_ATTEMPTS, 2);
        conf.set(RestartStrategyOptions.RESTART_STRATEGY_FIXED_DELAY_DELAY, Duration.ofSeconds(1));
        if (!restore.isEmpty()) {
            conf.set(StateRecoveryOptions.SAVEPOINT_PATH,
                    new File(restore).getAbsoluteFile().toURI().toString());
        }

        StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment(conf);
        StreamTableEnvironment tEnv = StreamTableEnvironment.create(env);
        tEnv.createTemporarySystemFunction("THROTTLE", new Throttle(sleepMicros));

        String group = a.getOrDefault("group", "flink-" + a.get("source"));
        tEnv.executeSql("CREATE TABLE src (k STRING, v STRING) WITH ("
                + "'connector' = 'kafka',"
                + "'topic' = '" + a.get("source") + "',"
                + "'properties.bootstrap.servers' = '" + bootstrap + "',"
                + "'properties.group.id' = '" + group + "',"
                + "'properties.isolation.level' = 'read_committed',"
                + "'scan.startup.mode' = 'earliest-offset',"
                + (bounded ? "'scan.bounded.mode' = 'latest-offset'," : "")
                + "'key.format' = 'raw', 'key.fields' = 'k',"
                + "'value.format' = 'raw', 'value.fields-include' = 'EXCEPT_KEY')");
        StringBuilder sink = new StringBuilder("CREATE TABLE dst (k STRING, v STRING) WITH ("
                + "'connector' = 'kafka',"
                + "'topic' = '" + a.get("sink") + "',"
                + "'properties.bootstrap.servers' = '" + bootstrap + "',"
                + "'key.format' = 'raw', 'key.fields' = 'k',"
                + "'value.format' = 'raw', 'value.fields-include' = 'EXCEPT_KEY',"
                + "'sink.delivery-guarantee' = '" + guarantee + "'");
        if (guarantee.equals("exactly-once")) {
            sink.append(",'sink.transactional-id-prefix' = '").append(a.get("txnPrefix")).append("'");
            sink.append(",'sink.transaction-naming-strategy' = '")
                    .append(a.getOrDefault("naming", "INCREMENTING")).append("'");
            // Below Kafka's default transaction.max.timeout.ms (15 min); the connector's own
            // default (1 hour) is refused by brokers that enforce that maximum.
            sink.append(",'properties.transaction.timeout.ms' = '")
                    .append(a.getOrDefault("txnTimeoutMs", "600000")).append("'");
        }
        sink.append(")");
        tEnv.executeSql(sink.toString());

        TableResult result = tEnv.executeSql("INSERT INTO dst SELECT k, THROTTLE(v) FROM src");
        String job = result.getJobClient().map(c -> c.getJobID().toString()).orElse("?");
        System.out.println("{\"event\":\"submitted\",\"job\":\"" + job + "\",\"restored_from\":"
                + (restore.isEmpty() ? "null" : json(restore)) + "}");
        System.out.flush();
        if (!bounded) {
            JobClient client = result.getJobClient().orElseThrow();
            Map<Integer, Long> end = waitForCommittedEnd(bootstrap, a.get("source"), group, client);
            if (end != null) {
                System.out.println("{\"event\":\"caught_up\",\"offsets\":" + json(end.toString()) + "}");
                System.out.flush();
                String savepoint = client.stopWithSavepoint(true,
                        new File(a.get("checkpoints"), "savepoints").getAbsoluteFile().toURI().toString(),
                        SavepointFormatType.CANONICAL).get(5, TimeUnit.MINUTES);
                System.out.println("{\"event\":\"stopped\",\"savepoint\":" + json(savepoint) + "}");
                System.out.flush();
            }
        }
        result.await();
        System.out.println("{\"event\":\"finished\",\"ok\":true,\"job\":\"" + job + "\"}");
        System.out.flush();
    }

    /**
     * Waits until `group` has committed the end offsets of every partition of `topic` (read
     * once, at the start: the topic is not written meanwhile); returns them, or null when the
     * job ended first.
     */
    static Map<Integer, Long> waitForCommittedEnd(String bootstrap, String topic, String group,
                                                  JobClient client) throws Exception {
        CompletableFuture<?> ended = client.getJobExecutionResult();
        try (Admin admin = Admin.create(Map.of(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap))) {
            int partitions = admin.describeTopics(List.of(topic)).allTopicNames().get()
                    .get(topic).partitions().size();
            Map<TopicPartition, OffsetSpec> specs = new HashMap<>();
            for (int p = 0; p < partitions; p++) specs.put(new TopicPartition(topic, p), OffsetSpec.latest());
            Map<Integer, Long> end = new HashMap<>();
            admin.listOffsets(specs).all().get().forEach((tp, info) -> end.put(tp.partition(), info.offset()));
            while (true) {
                if (ended.isDone()) {
                    return null;
                }
                Map<TopicPartition, OffsetAndMetadata> committed = admin.listConsumerGroupOffsets(group)
                        .partitionsToOffsetAndMetadata().get();
                boolean done = true;
                for (Map.Entry<Integer, Long> e : end.entrySet()) {
                    OffsetAndMetadata om = committed.get(new TopicPartition(topic, e.getKey()));
                    if (e.getValue() > 0 && (om == null || om.offset() < e.getValue())) {
                        done = false;
                    }
                }
                if (done) {
                    return end;
                }
                Thread.sleep(500);
            }
        }
    }

    /**
     * Prints the failure: `error`/`message` name the most telling exception (the first Kafka
     * client error anywhere among the causes and suppressed exceptions, as Flink wraps a
     * sink's send errors in suppressed ones, else the root cause); `causes` lists them all.
     */
    static void emitFailure(Throwable t) {
        List<Throwable> all = new ArrayList<>();
        collect(t, all, 0);
        Throwable pick = null;
        for (Throwable c : all) {
            if (c.getClass().getName().startsWith("org.apache.kafka.common.errors.")) {
                pick = c;
                break;
            }
        }
        if (pick == null) {
            pick = t;
            while (pick.getCause() != null && pick.getCause() != pick) pick = pick.getCause();
        }
        StringBuilder causes = new StringBuilder("[");
        for (Throwable c : all) {
            if (causes.length() > 1) causes.append(',');
            causes.append("{\"error\":").append(json(c.getClass().getName()))
                    .append(",\"message\":").append(json(String.valueOf(c.getMessage()))).append('}');
        }
        causes.append(']');
        System.out.println("{\"event\":\"failed\",\"ok\":false,\"error\":" + json(pick.getClass().getName())
                + ",\"message\":" + json(String.valueOf(pick.getMessage())) + ",\"causes\":" + causes + "}");
        System.out.flush();
    }

    static void collect(Throwable t, List<Throwable> out, int depth) {
        if (t == null || depth > 20 || out.contains(t) || out.size() > 100) return;
        out.add(t);
        collect(t.getCause(), out, depth + 1);
        for (Throwable s : t.getSuppressed()) collect(s, out, depth + 1);
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
