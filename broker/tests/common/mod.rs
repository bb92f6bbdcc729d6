//! Helpers shared by the raw wire tests: a minimal Kafka client over kafka-protocol's
//! codecs, and requests the tests send.
#![allow(dead_code)]

use bytes::{BufMut, Bytes, BytesMut};
use icestream::Server;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, CreateTopicsResponse, ProduceRequest, RequestHeader,
    ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct Client {
    pub stream: TcpStream,
    pub correlation: i32,
}

impl Client {
    pub async fn connect(server: &Server) -> Self {
        Self {
            stream: TcpStream::connect(server.addr).await.expect("connect"),
            correlation: 0,
        }
    }

    pub async fn send<R: Encodable>(&mut self, api: ApiKey, version: i16, req: &R) -> i32 {
        self.correlation += 1;
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str("wire-test")))
            .encode(&mut buf, api.request_header_version(version))
            .expect("header");
        req.encode(&mut buf, version).expect("body");
        let size = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&size.to_be_bytes());
        self.stream.write_all(&buf).await.expect("write");
        self.correlation
    }

    pub async fn recv<R: Decodable>(&mut self, api: ApiKey, version: i16, correlation: i32) -> R {
        let size = self.stream.read_i32().await.expect("response size");
        let mut buf = vec![0u8; size as usize];
        self.stream.read_exact(&mut buf).await.expect("response");
        let mut bytes = Bytes::from(buf);
        let header_version = if api == ApiKey::ApiVersions {
            0
        } else {
            api.response_header_version(version)
        };
        let header = ResponseHeader::decode(&mut bytes, header_version).expect("header");
        assert_eq!(header.correlation_id, correlation);
        R::decode(&mut bytes, version).expect("body")
    }

    pub async fn call<Q: Encodable, R: Decodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        req: &Q,
    ) -> R {
        let c = self.send(api, version, req).await;
        self.recv(api, version, c).await
    }
}

pub fn records(values: &[&str]) -> Bytes {
    let recs: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // One batch for all records: the encoder splits when offset - sequence changes.
            sequence: i as i32 - 1,
            timestamp: 1_700_000_000_000 + i as i64,
            key: None,
            value: Some(Bytes::copy_from_slice(v.as_bytes())),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &recs,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::Zstd,
        },
    )
    .expect("encode");
    buf.freeze()
}

pub fn produce(topic: &str, values: &[&str]) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.into())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(records(values)))])])
}

pub async fn create_topic(client: &mut Client, name: &str) {
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    let resp: CreateTopicsResponse = client
        .call(
            ApiKey::CreateTopics,
            7,
            &CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_string(name.into())))
                .with_num_partitions(1)
                .with_replication_factor(-1)]),
        )
        .await;
    assert_eq!(resp.topics[0].error_code, 0);
}
