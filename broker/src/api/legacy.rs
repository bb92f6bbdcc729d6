//! The request versions of clients older than Kafka 0.11 that Kafka 3.9 still serves and
//! `kafka-protocol` (which follows Kafka 4's schemas) no longer encodes: Produce v0–v2,
//! Fetch v0–v3, ListOffsets v0, OffsetCommit v0–v1, OffsetFetch v0, CreateTopics v0–v1,
//! DeleteTopics v0 and DescribeConfigs v0. Requests are decoded into the
//! current request types and handled as those; answers are encoded here from the current
//! response types. The records inside (message format v0/v1) are converted by
//! `icestream_storage::legacy`, in the Produce and Fetch handlers.
//!
//! Every array length read from the wire is checked against the bytes left before
//! anything is reserved for it.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::{
    CreatableReplicaAssignment, CreatableTopic, CreatableTopicConfig,
};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, DeleteTopicsRequest, DescribeConfigsRequest, FetchRequest,
    GroupId, ListOffsetsRequest, OffsetCommitRequest, OffsetFetchRequest, ProduceRequest,
    RequestKind, ResponseKind, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

/// Whether `version` of `api` is one of the versions this module decodes and encodes.
pub fn is_legacy(api: ApiKey, version: i16) -> bool {
    match api {
        ApiKey::Produce => (0..=2).contains(&version),
        ApiKey::Fetch => (0..=3).contains(&version),
        ApiKey::ListOffsets => version == 0,
        ApiKey::OffsetCommit => (0..=1).contains(&version),
        ApiKey::OffsetFetch | ApiKey::DeleteTopics | ApiKey::DescribeConfigs => version == 0,
        ApiKey::CreateTopics => (0..=1).contains(&version),
        _ => false,
    }
}

/// A cursor over a request body that fails instead of reading past its end.
struct Reader(Bytes);

impl Reader {
    fn need(&self, n: usize, what: &str) -> Result<(), String> {
        if self.0.remaining() < n {
            return Err(format!("truncated {what}"));
        }
        Ok(())
    }

    fn i8(&mut self, what: &str) -> Result<i8, String> {
        self.need(1, what)?;
        Ok(self.0.get_i8())
    }

    fn i16(&mut self, what: &str) -> Result<i16, String> {
        self.need(2, what)?;
        Ok(self.0.get_i16())
    }

    fn i32(&mut self, what: &str) -> Result<i32, String> {
        self.need(4, what)?;
        Ok(self.0.get_i32())
    }

    fn i64(&mut self, what: &str) -> Result<i64, String> {
        self.need(8, what)?;
        Ok(self.0.get_i64())
    }

    fn nullable_string(&mut self, what: &str) -> Result<Option<StrBytes>, String> {
        let len = self.i16(what)?;
        if len < 0 {
            return Ok(None);
        }
        self.need(len as usize, what)?;
        let raw = self.0.split_to(len as usize);
        StrBytes::from_utf8(raw)
            .map(Some)
            .map_err(|_| format!("{what} is not UTF-8"))
    }

    fn string(&mut self, what: &str) -> Result<StrBytes, String> {
        self.nullable_string(what)?
            .ok_or_else(|| format!("{what} is null"))
    }

    fn nullable_bytes(&mut self, what: &str) -> Result<Option<Bytes>, String> {
        let len = self.i32(what)?;
        if len < 0 {
            return Ok(None);
        }
        self.need(len as usize, what)?;
        Ok(Some(self.0.split_to(len as usize)))
    }

    /// An array of at least `min` bytes per element (a null array reads as empty).
    fn array<T>(
        &mut self,
        what: &str,
        min: usize,
        element: impl FnMut(&mut Self) -> Result<T, String>,
    ) -> Result<Vec<T>, String> {
        Ok(self.nullable_array(what, min, element)?.unwrap_or_default())
    }

    /// An array of at least `min` bytes per element, or null.
    fn nullable_array<T>(
        &mut self,
        what: &str,
        min: usize,
        mut element: impl FnMut(&mut Self) -> Result<T, String>,
    ) -> Result<Option<Vec<T>>, String> {
        let len = self.i32(what)?;
        if len < 0 {
            return Ok(None);
        }
        let len = len as usize;
        if len.saturating_mul(min) > self.0.remaining() {
            return Err(format!("{what}: {len} elements cannot fit in the request"));
        }
        let mut out = Vec::with_capacity(len.min(1024));
        for _ in 0..len {
            out.push(element(self)?);
        }
        Ok(Some(out))
    }

    fn done(self) -> Result<(), String> {
        if self.0.has_remaining() {
            return Err(format!("{} bytes after the request", self.0.remaining()));
        }
        Ok(())
    }
}

/// Decodes a legacy request body (the header already read).
pub fn decode(api: ApiKey, version: i16, body: Bytes) -> Result<RequestKind, String> {
    let mut r = Reader(body);
    let request = match api {
        ApiKey::Produce => RequestKind::Produce(produce(&mut r)?),
        ApiKey::Fetch => RequestKind::Fetch(fetch(&mut r, version)?),
        ApiKey::ListOffsets => RequestKind::ListOffsets(list_offsets(&mut r)?),
        ApiKey::OffsetCommit => RequestKind::OffsetCommit(offset_commit(&mut r, version)?),
        // Laid out as v1, which reads the same offsets (v0 read ZooKeeper's in Kafka).
        ApiKey::OffsetFetch => RequestKind::OffsetFetch(
            OffsetFetchRequest::decode(&mut r.0, 1).map_err(|e| e.to_string())?,
        ),
        // Laid out as v1.
        ApiKey::DeleteTopics => RequestKind::DeleteTopics(
            DeleteTopicsRequest::decode(&mut r.0, 1).map_err(|e| e.to_string())?,
        ),
        ApiKey::CreateTopics => RequestKind::CreateTopics(create_topics(&mut r, version)?),
        ApiKey::DescribeConfigs => RequestKind::DescribeConfigs(describe_configs(&mut r)?),
        _ => return Err(format!("{api:?} v{version} is not a legacy request")),
    };
    r.done()?;
    Ok(request)
}

fn produce(r: &mut Reader) -> Result<ProduceRequest, String> {
    let mut req = ProduceRequest::default();
    req.acks = r.i16("acks")?;
    req.timeout_ms = r.i32("timeout")?;
    req.topic_data = r.array("topics", 6, |r| {
        let mut t = TopicProduceData::default();
        t.name = TopicName(r.string("topic name")?);
        t.partition_data = r.array("partitions", 8, |r| {
            let mut p = PartitionProduceData::default();
            p.index = r.i32("partition")?;
            p.records = r.nullable_bytes("records")?;
            Ok(p)
        })?;
        Ok(t)
    })?;
    Ok(req)
}

fn fetch(r: &mut Reader, version: i16) -> Result<FetchRequest, String> {
    let mut req = FetchRequest::default();
    req.replica_id = r.i32("replica id")?.into();
    req.max_wait_ms = r.i32("max wait")?;
    req.min_bytes = r.i32("min bytes")?;
    if version >= 3 {
        req.max_bytes = r.i32("max bytes")?;
    }
    req.topics = r.array("topics", 6, |r| {
        let mut t = FetchTopic::default();
        t.topic = TopicName(r.string("topic name")?);
        t.partitions = r.array("partitions", 16, |r| {
            let mut p = FetchPartition::default();
            p.partition = r.i32("partition")?;
            p.fetch_offset = r.i64("fetch offset")?;
            p.partition_max_bytes = r.i32("partition max bytes")?;
            Ok(p)
        })?;
        Ok(t)
    })?;
    Ok(req)
}

fn list_offsets(r: &mut Reader) -> Result<ListOffsetsRequest, String> {
    let mut req = ListOffsetsRequest::default();
    req.replica_id = r.i32("replica id")?.into();
    req.topics = r.array("topics", 6, |r| {
        let mut t = ListOffsetsTopic::default();
        t.name = TopicName(r.string("topic name")?);
        t.partitions = r.array("partitions", 16, |r| {
            let mut p = ListOffsetsPartition::default();
            p.partition_index = r.i32("partition")?;
            p.timestamp = r.i64("timestamp")?;
            // max_num_offsets: one offset is answered, as every client asks.
            r.i32("max number of offsets")?;
            Ok(p)
        })?;
        Ok(t)
    })?;
    Ok(req)
}

fn offset_commit(r: &mut Reader, version: i16) -> Result<OffsetCommitRequest, String> {
    let mut req = OffsetCommitRequest::default();
    req.group_id = GroupId(r.string("group id")?);
    if version >= 1 {
        req.generation_id_or_member_epoch = r.i32("generation id")?;
        req.member_id = r.string("member id")?;
    }
    req.topics = r.array("topics", 6, |r| {
        let mut t = OffsetCommitRequestTopic::default();
        t.name = TopicName(r.string("topic name")?);
        t.partitions = r.array("partitions", 14, |r| {
            let mut p = OffsetCommitRequestPartition::default();
            p.partition_index = r.i32("partition")?;
            p.committed_offset = r.i64("offset")?;
            if version == 1 {
                // commit_timestamp: Kafka ignores it since 2.1 (KIP-211).
                r.i64("commit timestamp")?;
            }
            p.committed_metadata = r.nullable_string("metadata")?;
            Ok(p)
        })?;
        Ok(t)
    })?;
    Ok(req)
}

fn create_topics(r: &mut Reader, version: i16) -> Result<CreateTopicsRequest, String> {
    let mut req = CreateTopicsRequest::default();
    req.topics = r.array("topics", 14, |r| {
        let mut t = CreatableTopic::default();
        t.name = TopicName(r.string("topic name")?);
        t.num_partitions = r.i32("partitions")?;
        t.replication_factor = r.i16("replication factor")?;
        t.assignments = r.array("assignments", 8, |r| {
            let mut a = CreatableReplicaAssignment::default();
            a.partition_index = r.i32("partition")?;
            a.broker_ids = r.array("broker ids", 4, |r| Ok(r.i32("broker id")?.into()))?;
            Ok(a)
        })?;
        t.configs = r.array("configs", 4, |r| {
            let mut c = CreatableTopicConfig::default();
            c.name = r.string("config name")?;
            c.value = r.nullable_string("config value")?;
            Ok(c)
        })?;
        Ok(t)
    })?;
    req.timeout_ms = r.i32("timeout")?;
    if version >= 1 {
        req.validate_only = r.i8("validate only")? != 0;
    }
    Ok(req)
}

fn describe_configs(r: &mut Reader) -> Result<DescribeConfigsRequest, String> {
    let mut req = DescribeConfigsRequest::default();
    req.resources = r.array("resources", 7, |r| {
        let mut res = DescribeConfigsResource::default();
        res.resource_type = r.i8("resource type")?;
        res.resource_name = r.string("resource name")?;
        // A null array asks for every config.
        res.configuration_keys = r.nullable_array("config names", 2, |r| r.string("name"))?;
        Ok(res)
    })?;
    Ok(req)
}

fn put_string(buf: &mut BytesMut, s: &str) {
    buf.put_i16(s.len() as i16);
    buf.put_slice(s.as_bytes());
}

fn put_nullable_string(buf: &mut BytesMut, s: Option<&str>) {
    match s {
        None => buf.put_i16(-1),
        Some(s) => put_string(buf, s),
    }
}

/// DescribeConfigs' config source DEFAULT_CONFIG.
const CONFIG_SOURCE_DEFAULT: i8 = 5;

fn put_len(buf: &mut BytesMut, len: usize) {
    buf.put_i32(len as i32);
}

/// Encodes the body of a legacy response.
pub fn encode(response: &ResponseKind, version: i16, buf: &mut BytesMut) -> Result<(), String> {
    match response {
        ResponseKind::Produce(p) => {
            put_len(buf, p.responses.len());
            for t in &p.responses {
                put_string(buf, &t.name.0);
                put_len(buf, t.partition_responses.len());
                for pr in &t.partition_responses {
                    buf.put_i32(pr.index);
                    buf.put_i16(pr.error_code);
                    buf.put_i64(pr.base_offset);
                    if version >= 2 {
                        buf.put_i64(pr.log_append_time_ms);
                    }
                }
            }
            if version >= 1 {
                buf.put_i32(p.throttle_time_ms);
            }
        }
        ResponseKind::Fetch(f) => {
            if version >= 1 {
                buf.put_i32(f.throttle_time_ms);
            }
            put_len(buf, f.responses.len());
            for t in &f.responses {
                put_string(buf, &t.topic.0);
                put_len(buf, t.partitions.len());
                for p in &t.partitions {
                    buf.put_i32(p.partition_index);
                    buf.put_i16(p.error_code);
                    buf.put_i64(p.high_watermark);
                    match &p.records {
                        None => buf.put_i32(-1),
                        Some(records) => {
                            put_len(buf, records.len());
                            buf.put_slice(records);
                        }
                    }
                }
            }
        }
        ResponseKind::ListOffsets(l) => {
            put_len(buf, l.topics.len());
            for t in &l.topics {
                put_string(buf, &t.name.0);
                put_len(buf, t.partitions.len());
                for p in &t.partitions {
                    buf.put_i32(p.partition_index);
                    buf.put_i16(p.error_code);
                    // old_style_offsets: the one offset found, if any.
                    if p.error_code == 0 && p.offset >= 0 {
                        buf.put_i32(1);
                        buf.put_i64(p.offset);
                    } else {
                        buf.put_i32(0);
                    }
                }
            }
        }
        // v0 and v1 answers are laid out as v2's.
        ResponseKind::OffsetCommit(o) => o.encode(buf, 2).map_err(|e| e.to_string())?,
        ResponseKind::OffsetFetch(o) => o.encode(buf, 1).map_err(|e| e.to_string())?,
        ResponseKind::DeleteTopics(d) => {
            put_len(buf, d.responses.len());
            for t in &d.responses {
                put_string(buf, t.name.as_ref().map_or("", |n| n.0.as_str()));
                buf.put_i16(t.error_code);
            }
        }
        ResponseKind::CreateTopics(c) => {
            put_len(buf, c.topics.len());
            for t in &c.topics {
                put_string(buf, &t.name.0);
                buf.put_i16(t.error_code);
                if version >= 1 {
                    put_nullable_string(buf, t.error_message.as_deref());
                }
            }
        }
        ResponseKind::DescribeConfigs(d) => {
            buf.put_i32(d.throttle_time_ms);
            put_len(buf, d.results.len());
            for res in &d.results {
                buf.put_i16(res.error_code);
                put_nullable_string(buf, res.error_message.as_deref());
                buf.put_i8(res.resource_type);
                put_string(buf, &res.resource_name);
                put_len(buf, res.configs.len());
                for c in &res.configs {
                    put_string(buf, &c.name);
                    put_nullable_string(buf, c.value.as_deref());
                    buf.put_i8(i8::from(c.read_only));
                    // is_default: v1 replaced it with the config's source.
                    buf.put_i8(i8::from(c.config_source == CONFIG_SOURCE_DEFAULT));
                    buf.put_i8(i8::from(c.is_sensitive));
                }
            }
        }
        _ => return Err(format!("v{version} of this response is not a legacy one")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::list_offsets_response::{
        ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
    };
    use kafka_protocol::messages::ListOffsetsResponse;

    fn string(buf: &mut BytesMut, s: &str) {
        put_string(buf, s);
    }

    #[test]
    fn produce_v2_and_fetch_v3_requests_decode() {
        let mut b = BytesMut::new();
        b.put_i16(-1);
        b.put_i32(30_000);
        b.put_i32(1);
        string(&mut b, "t");
        b.put_i32(1);
        b.put_i32(3);
        b.put_i32(4);
        b.put_slice(b"abcd");
        let RequestKind::Produce(p) =
            decode(ApiKey::Produce, 2, b.freeze()).expect("valid test input")
        else {
            panic!("not a produce request");
        };
        assert_eq!((p.acks, p.timeout_ms), (-1, 30_000));
        assert_eq!(p.topic_data[0].name.0.as_str(), "t");
        assert_eq!(p.topic_data[0].partition_data[0].index, 3);
        assert_eq!(
            p.topic_data[0].partition_data[0].records.as_deref(),
            Some(&b"abcd"[..])
        );

        for version in [0, 3] {
            let mut b = BytesMut::new();
            b.put_i32(-1);
            b.put_i32(500);
            b.put_i32(1);
            if version == 3 {
                b.put_i32(1 << 20);
            }
            b.put_i32(1);
            string(&mut b, "t");
            b.put_i32(1);
            b.put_i32(0);
            b.put_i64(42);
            b.put_i32(4096);
            let RequestKind::Fetch(f) =
                decode(ApiKey::Fetch, version, b.freeze()).expect("valid test input")
            else {
                panic!("not a fetch request");
            };
            assert_eq!(f.max_bytes, if version == 3 { 1 << 20 } else { i32::MAX });
            assert_eq!(f.isolation_level, 0);
            assert_eq!(f.session_epoch, -1);
            let p = &f.topics[0].partitions[0];
            assert_eq!((p.fetch_offset, p.partition_max_bytes), (42, 4096));
        }
    }

    #[test]
    fn impossible_lengths_and_trailing_bytes_are_refused() {
        // A topics array claiming 2^31-1 elements in a few bytes.
        let mut b = BytesMut::new();
        b.put_i16(1);
        b.put_i32(1000);
        b.put_i32(i32::MAX);
        let e = decode(ApiKey::Produce, 0, b.freeze()).expect_err("refused");
        assert!(e.contains("cannot fit"), "{e}");
        // Records longer than the request.
        let mut b = BytesMut::new();
        b.put_i16(1);
        b.put_i32(1000);
        b.put_i32(1);
        string(&mut b, "t");
        b.put_i32(1);
        b.put_i32(0);
        b.put_i32(1 << 30);
        assert!(decode(ApiKey::Produce, 1, b.freeze()).is_err());
        // A complete OffsetCommit v0 with a byte too many.
        let mut b = BytesMut::new();
        string(&mut b, "g");
        b.put_i32(0);
        b.put_u8(0);
        assert!(decode(ApiKey::OffsetCommit, 0, b.freeze())
            .expect_err("refused")
            .contains("after the request"));
    }

    #[test]
    fn list_offsets_v0_answers_with_old_style_offsets() {
        let mut resp = ListOffsetsResponse::default();
        let mut t = ListOffsetsTopicResponse::default();
        t.name = TopicName(StrBytes::from_static_str("t"));
        for (index, error_code, offset) in [(0, 0, 7i64), (1, 3, -1)] {
            let mut p = ListOffsetsPartitionResponse::default();
            p.partition_index = index;
            p.error_code = error_code;
            p.offset = offset;
            t.partitions.push(p);
        }
        resp.topics.push(t);
        let mut buf = BytesMut::new();
        encode(&ResponseKind::ListOffsets(resp), 0, &mut buf).expect("valid test input");
        let mut expected = BytesMut::new();
        expected.put_i32(1);
        string(&mut expected, "t");
        expected.put_i32(2);
        expected.put_i32(0);
        expected.put_i16(0);
        expected.put_i32(1);
        expected.put_i64(7);
        expected.put_i32(1);
        expected.put_i16(3);
        expected.put_i32(0);
        assert_eq!(buf, expected);
    }
}
