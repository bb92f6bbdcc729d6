"""A transactional producer on the transactions-v2 protocol (KIP-890), driven the way the
Java client 4.x drives it: no AddPartitionsToTxn (Produce v12 enrolls the partitions), no
AddOffsetsToTxn (TxnOffsetCommit v5 enrolls the group), and EndTxn v5 returns the epoch
of the next transaction. The requests and responses are kafka-python's (3.x), encoded
from Kafka's own message schemas; record batches come from kafka-python's encoder."""

import socket
import struct

from kafka.protocol.metadata.api_versions import ApiVersionsRequest, ApiVersionsResponse
from kafka.protocol.metadata.find_coordinator import (FindCoordinatorRequest,
                                                      FindCoordinatorResponse)
from kafka.protocol.producer.produce import ProduceRequest, ProduceResponse
from kafka.protocol.producer.transaction import (EndTxnRequest, EndTxnResponse,
                                                 InitProducerIdRequest, InitProducerIdResponse,
                                                 TxnOffsetCommitRequest,
                                                 TxnOffsetCommitResponse)
from kafka.record.default_records import DefaultRecordBatchBuilder

PRODUCE_V = 12
END_TXN_V = 5
TXN_OFFSET_COMMIT_V = 5

NONE = 0
INVALID_PRODUCER_EPOCH = 47
INVALID_TXN_STATE = 48
PRODUCER_FENCED = 90


class Connection:
    """One socket; requests answered in order."""

    def __init__(self, address, timeout=30):
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.correlation = 0

    def close(self):
        self.sock.close()

    def call(self, request, response_class, version):
        self.correlation += 1
        request.with_header(correlation_id=self.correlation, client_id="txn-v2")
        self.sock.sendall(bytes(request.encode(version=version, header=True, framed=True)))
        (size,) = struct.unpack(">i", self._read(4))
        frame = self._read(size)
        response = response_class.decode(frame, version=version, header=True)
        assert response.header.correlation_id == self.correlation
        return response

    def _read(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("the broker closed the connection")
            buf += chunk
        return buf


def finalized_features(address):
    """{name: (min, max)} of the finalized features a broker advertises (ApiVersions v3)."""
    conn = Connection(address)
    try:
        r = conn.call(ApiVersionsRequest(client_software_name="txn-v2",
                                         client_software_version="1"),
                      ApiVersionsResponse, 3)
        assert r.error_code == NONE
        return {f.name: (f.min_version_level, f.max_version_level)
                for f in (r.finalized_features or [])}
    finally:
        conn.close()


def find_coordinator(address, key, key_type):
    conn = Connection(address)
    try:
        r = conn.call(FindCoordinatorRequest(key_type=key_type, coordinator_keys=[key]),
                      FindCoordinatorResponse, 4)
        (c,) = r.coordinators
        assert c.error_code == NONE, c
        return f"{c.host}:{c.port}"
    finally:
        conn.close()


class ProduceError(Exception):
    def __init__(self, code, message=None):
        super().__init__(f"produce error {code}: {message}")
        self.code = code


class TxnV2Producer:
    """Enough of a transactional producer: one transaction at a time, one batch per send,
    sequences per partition from 0 in every epoch (v2 bumps it every transaction)."""

    def __init__(self, bootstrap, transactional_id, timeout_ms=60_000, produce_to=None):
        self.bootstrap = bootstrap
        self.tid = transactional_id
        self.coordinator = Connection(find_coordinator(bootstrap, transactional_id, 1))
        self.data = Connection(produce_to or bootstrap)
        r = self.coordinator.call(
            InitProducerIdRequest(transactional_id=transactional_id,
                                  transaction_timeout_ms=timeout_ms, producer_id=-1,
                                  producer_epoch=-1),
            InitProducerIdResponse, 5)
        assert r.error_code == NONE, r
        self.producer_id, self.epoch = r.producer_id, r.producer_epoch
        self.sequences = {}

    def close(self):
        self.coordinator.close()
        self.data.close()

    def batch(self, values, partition_key, epoch=None):
        seq = self.sequences.get(partition_key, 0)
        b = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=True,
                                      producer_id=self.producer_id,
                                      producer_epoch=self.epoch if epoch is None else epoch,
                                      base_sequence=seq, batch_size=1 << 30)
        for i, v in enumerate(values):
            b.append(i, 1_700_000_000_000 + i, v, v, [])
        return bytes(b.build()), seq + len(values)

    def send(self, topic, partition, values, epoch=None):
        """Produce v12 of one batch; the base offset, or ProduceError."""
        records, next_seq = self.batch(values, (topic, partition), epoch)
        req = ProduceRequest(
            transactional_id=self.tid, acks=-1, timeout_ms=30_000,
            topic_data=[ProduceRequest.TopicProduceData(
                name=topic,
                partition_data=[ProduceRequest.TopicProduceData.PartitionProduceData(
                    index=partition, records=records)])])
        r = self.data.call(req, ProduceResponse, PRODUCE_V)
        (t,) = r.responses
        (p,) = t.partition_responses
        if p.error_code != NONE:
            raise ProduceError(p.error_code, p.error_message)
        self.sequences[(topic, partition)] = next_seq
        return p.base_offset

    def send_offsets(self, group, offsets):
        """TxnOffsetCommit v5 of {(topic, partition): offset} for a group (no member:
        generation -1); the error codes by (topic, partition)."""
        conn = Connection(find_coordinator(self.bootstrap, group, 0))
        try:
            topics = {}
            for (topic, partition), offset in offsets.items():
                topics.setdefault(topic, []).append(
                    TxnOffsetCommitRequest.TxnOffsetCommitRequestTopic
                    .TxnOffsetCommitRequestPartition(
                        partition_index=partition, committed_offset=offset,
                        committed_leader_epoch=-1, committed_metadata=""))
            req = TxnOffsetCommitRequest(
                transactional_id=self.tid, group_id=group, producer_id=self.producer_id,
                producer_epoch=self.epoch, generation_id=-1, member_id="",
                group_instance_id=None,
                topics=[TxnOffsetCommitRequest.TxnOffsetCommitRequestTopic(
                    name=t, partitions=ps) for t, ps in topics.items()])
            r = conn.call(req, TxnOffsetCommitResponse, TXN_OFFSET_COMMIT_V)
            return {(t.name, p.partition_index): p.error_code
                    for t in r.topics for p in t.partitions}
        finally:
            conn.close()

    def end(self, commit, epoch=None):
        """EndTxn v5; (error code, producer id, epoch) of the answer. On success the
        producer goes on with the returned id and epoch, sequences from 0."""
        r = self.coordinator.call(
            EndTxnRequest(transactional_id=self.tid, producer_id=self.producer_id,
                          producer_epoch=self.epoch if epoch is None else epoch,
                          committed=commit),
            EndTxnResponse, END_TXN_V)
        if r.error_code == NONE:
            self.producer_id, self.epoch = r.producer_id, r.producer_epoch
            self.sequences = {}
        return r.error_code, r.producer_id, r.producer_epoch
