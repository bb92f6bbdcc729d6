// Produces, consumes and commits through a broker with Debian's Go Kafka clients, which
// speak pre-0.11 protocol versions: sarama 1.22 (Version 0.8.2: Produce v0, Fetch v0,
// ListOffsets v0, OffsetCommit v1, message format v0; 0.10: Produce v2, Fetch v2,
// message format v1) and kafka-go 0.2.1 (Produce v2, Fetch v2, groups with OffsetCommit
// v2). Keys are "<client>-<i>", values "value-<i>"; prints one JSON summary line.
//
//	oldclients -client sarama|kafka-go -brokers host:port -topic t -group g -n 500 [-version 0.8.2.0]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"time"

	"github.com/Shopify/sarama"
	kafka "github.com/segmentio/kafka-go"
	kgzip "github.com/segmentio/kafka-go/gzip"
)

type summary struct {
	Produced  int               `json:"produced"`
	Consumed  map[string]string `json:"consumed"`
	Committed map[int32]int64   `json:"committed"`
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}

func main() {
	client := flag.String("client", "sarama", "sarama or kafka-go")
	broker := flag.String("brokers", "127.0.0.1:9092", "bootstrap broker")
	topic := flag.String("topic", "go", "topic (two partitions)")
	group := flag.String("group", "go-group", "consumer group")
	n := flag.Int("n", 500, "records")
	version := flag.String("version", "0.8.2.0", "sarama's Kafka version")
	flag.Parse()
	var s summary
	switch *client {
	case "sarama":
		s = runSarama(*broker, *topic, *group, *n, *version)
	case "kafka-go":
		s = runKafkaGo(*broker, *topic, *group, *n)
	default:
		fail("unknown client %q", *client)
	}
	out, err := json.Marshal(s)
	if err != nil {
		fail("json: %v", err)
	}
	fmt.Println(string(out))
}

func runSarama(broker, topic, group string, n int, version string) summary {
	cfg := sarama.NewConfig()
	v, err := sarama.ParseKafkaVersion(version)
	if err != nil {
		fail("version: %v", err)
	}
	cfg.Version = v
	cfg.ClientID = "sarama-old"
	cfg.Producer.Return.Successes = true
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Producer.Compression = sarama.CompressionGZIP
	cfg.Producer.Partitioner = sarama.NewManualPartitioner
	producer, err := sarama.NewSyncProducer([]string{broker}, cfg)
	if err != nil {
		fail("producer: %v", err)
	}
	for i := 0; i < n; i++ {
		msg := &sarama.ProducerMessage{
			Topic:     topic,
			Partition: int32(i % 2),
			Key:       sarama.StringEncoder(fmt.Sprintf("sarama-%d", i)),
			Value:     sarama.StringEncoder(fmt.Sprintf("value-%d", i)),
		}
		if _, _, err := producer.SendMessage(msg); err != nil {
			fail("send %d: %v", i, err)
		}
	}
	if err := producer.Close(); err != nil {
		fail("producer close: %v", err)
	}

	consumer, err := sarama.NewConsumer([]string{broker}, cfg)
	if err != nil {
		fail("consumer: %v", err)
	}
	s := summary{Produced: n, Consumed: map[string]string{}, Committed: map[int32]int64{}}
	next := map[int32]int64{}
	for p := int32(0); p < 2; p++ {
		pc, err := consumer.ConsumePartition(topic, p, sarama.OffsetOldest)
		if err != nil {
			fail("consume partition %d: %v", p, err)
		}
		want := n / 2
		if p == 0 {
			want = n - n/2
		}
		timeout := time.After(60 * time.Second)
		for got := 0; got < want; got++ {
			select {
			case m := <-pc.Messages():
				s.Consumed[fmt.Sprintf("%d:%d", p, m.Offset)] = string(m.Key) + "=" + string(m.Value)
				next[p] = m.Offset + 1
			case err := <-pc.Errors():
				fail("partition %d: %v", p, err)
			case <-timeout:
				fail("partition %d: %d of %d records after 60 s", p, got, want)
			}
		}
		pc.Close()
	}
	consumer.Close()

	c, err := sarama.NewClient([]string{broker}, cfg)
	if err != nil {
		fail("client: %v", err)
	}
	om, err := sarama.NewOffsetManagerFromClient(group, c)
	if err != nil {
		fail("offset manager: %v", err)
	}
	parts := []int32{}
	for p := range next {
		parts = append(parts, p)
	}
	sort.Slice(parts, func(i, j int) bool { return parts[i] < parts[j] })
	for _, p := range parts {
		pom, err := om.ManagePartition(topic, p)
		if err != nil {
			fail("manage partition %d: %v", p, err)
		}
		pom.MarkOffset(next[p], "")
		if err := pom.Close(); err != nil {
			fail("partition offset manager %d: %v", p, err)
		}
		s.Committed[p] = next[p]
	}
	if err := om.Close(); err != nil {
		fail("offset manager close: %v", err)
	}
	c.Close()
	return s
}

func runKafkaGo(broker, topic, group string, n int) summary {
	w := kafka.NewWriter(kafka.WriterConfig{
		Brokers:          []string{broker},
		Topic:            topic,
		CompressionCodec: kgzip.NewCompressionCodec(),
		BatchSize:        50,
		BatchTimeout:     5 * time.Millisecond,
	})
	msgs := make([]kafka.Message, 0, n)
	for i := 0; i < n; i++ {
		msgs = append(msgs, kafka.Message{
			Key:   []byte(fmt.Sprintf("kafka-go-%d", i)),
			Value: []byte(fmt.Sprintf("value-%d", i)),
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		fail("write: %v", err)
	}
	if err := w.Close(); err != nil {
		fail("writer close: %v", err)
	}

	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:  []string{broker},
		GroupID:  group,
		Topic:    topic,
		MinBytes: 1,
		MaxBytes: 1 << 20,
		MaxWait:  100 * time.Millisecond,
	})
	s := summary{Produced: n, Consumed: map[string]string{}, Committed: map[int32]int64{}}
	for len(s.Consumed) < n {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			fail("read after %d records: %v", len(s.Consumed), err)
		}
		s.Consumed[fmt.Sprintf("%d:%d", m.Partition, m.Offset)] = string(m.Key) + "=" + string(m.Value)
		// ReadMessage commits as it goes (CommitInterval 0): the next offset to read.
		if m.Offset+1 > s.Committed[int32(m.Partition)] {
			s.Committed[int32(m.Partition)] = m.Offset + 1
		}
	}
	if err := r.Close(); err != nil {
		fail("reader close: %v", err)
	}
	return s
}
