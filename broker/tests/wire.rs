//! Raw wire tests: an in-process broker on port 0, requests encoded with kafka-protocol.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use icestream::{Server, Settings};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, FetchRequest, FetchResponse, ProduceResponse, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use kafka_protocol::records::RecordBatchDecoder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn start(dir: &tempfile::TempDir) -> Server {
    let settings = Settings {
        listen: "127.0.0.1:0".into(),
        data_dir: dir.path().to_path_buf(),
        object_store: Some("memory://".into()),
        flush_interval_ms: Some(1),
        socket_request_max_bytes: 1 << 20,
        ..Settings::default()
    };
    Server::start(settings).await.expect("server starts")
}

mod common;
use common::{create_topic, produce, Client};

#[tokio::test]
async fn api_versions_kip511_fallback() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(&dir).await;
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    // ApiVersions v127 with a header v2 the broker cannot know: only the first 8 bytes matter.
    let mut frame = BytesMut::new();
    frame.put_i16(ApiKey::ApiVersions as i16);
    frame.put_i16(127);
    frame.put_i32(42);
    frame.put_slice(&[0xff, 0xff, 0, 1, 2, 3]);
    let mut out = BytesMut::new();
    out.put_i32(frame.len() as i32);
    out.put_slice(&frame);
    stream.write_all(&out).await.expect("write");
    let size = stream.read_i32().await.expect("size");
    let mut buf = vec![0u8; size as usize];
    stream.read_exact(&mut buf).await.expect("read");
    let mut bytes = Bytes::from(buf);
    assert_eq!(bytes.get_i32(), 42);
    let resp = ApiVersionsResponse::decode(&mut bytes, 0).expect("v0 body");
    assert_eq!(resp.error_code, 35);
    assert!(resp
        .api_keys
        .iter()
        .any(|k| k.api_key == ApiKey::Produce as i16 && k.max_version == 13));
    server.shutdown().await;
}

#[tokio::test]
async fn pipelined_produce_keeps_order_and_fetch_serves_patched_batches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(&dir).await;
    let mut client = Client::connect(&server).await;
    create_topic(&mut client, "wire").await;
    // Ten produce requests sent back to back before reading any response.
    let mut correlations = Vec::new();
    for i in 0..10 {
        let values = [format!("a{i}"), format!("b{i}"), format!("c{i}")];
        let refs: Vec<&str> = values.iter().map(String::as_str).collect();
        correlations.push(
            client
                .send(ApiKey::Produce, 9, &produce("wire", &refs))
                .await,
        );
    }
    for (i, c) in correlations.into_iter().enumerate() {
        let resp: ProduceResponse = client.recv(ApiKey::Produce, 9, c).await;
        let p = &resp.responses[0].partition_responses[0];
        assert_eq!(p.error_code, 0);
        assert_eq!(p.base_offset, 3 * i as i64);
    }
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    let fetch = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_static_str("wire")))
            .with_partitions(vec![FetchPartition::default()
                .with_fetch_offset(7)
                .with_partition_max_bytes(1 << 20)])]);
    let resp: FetchResponse = client.call(ApiKey::Fetch, 12, &fetch).await;
    let part = &resp.responses[0].partitions[0];
    assert_eq!(part.error_code, 0);
    assert_eq!(part.high_watermark, 30);
    let mut data = part.records.clone().expect("records");
    let sets = RecordBatchDecoder::decode_all(&mut data).expect("valid batches");
    let offsets: Vec<i64> = sets
        .iter()
        .flat_map(|s| s.records.iter().map(|r| r.offset))
        .collect();
    // The batch holding offset 7 starts at 6; everything up to the end follows.
    assert_eq!(offsets, (6..30).collect::<Vec<_>>());
    let values: Vec<Bytes> = sets
        .iter()
        .flat_map(|s| s.records.iter().filter_map(|r| r.value.clone()))
        .collect();
    assert_eq!(values[1], Bytes::from_static(b"b2"));
    server.shutdown().await;
}

#[tokio::test]
async fn oversize_frame_closes_only_that_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(&dir).await;
    let mut bad = TcpStream::connect(server.addr).await.expect("connect");
    bad.write_all(&(2_000_000i32).to_be_bytes())
        .await
        .expect("write");
    let mut buf = [0u8; 1];
    assert_eq!(bad.read(&mut buf).await.expect("eof"), 0);
    let mut good = Client::connect(&server).await;
    create_topic(&mut good, "still-serving").await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_batches_are_validated_off_the_runtime_threads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(&dir).await;
    let mut client = Client::connect(&server).await;
    create_topic(&mut client, "large").await;
    // 100 records of 4 KiB of noise: ~400 KiB even compressed, above the inline limit.
    let mut x: u64 = 1;
    let values: Vec<String> = (0..100)
        .map(|_| {
            (0..4096)
                .map(|_| {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                    char::from(b'a' + (x >> 59) as u8)
                })
                .collect()
        })
        .collect();
    let refs: Vec<&str> = values.iter().map(String::as_str).collect();
    let request = produce("large", &refs);
    let size = request.topic_data[0].partition_data[0]
        .records
        .as_ref()
        .map_or(0, Bytes::len);
    assert!(size > 256 * 1024, "{size} bytes");
    let resp: ProduceResponse = client.call(ApiKey::Produce, 9, &request).await;
    let p = &resp.responses[0].partition_responses[0];
    assert_eq!((p.error_code, p.base_offset), (0, 0));
    // The same batch claiming one record more (CRC fixed): refused.
    let mut lying = request.clone();
    let records = lying.topic_data[0].partition_data[0]
        .records
        .take()
        .expect("records");
    let mut b = BytesMut::from(&records[..]);
    b[23..27].copy_from_slice(&100i32.to_be_bytes());
    b[57..61].copy_from_slice(&101i32.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    lying.topic_data[0].partition_data[0].records = Some(b.freeze());
    let resp: ProduceResponse = client.call(ApiKey::Produce, 9, &lying).await;
    let p = &resp.responses[0].partition_responses[0];
    assert_eq!(p.error_code, 2, "CORRUPT_MESSAGE");
    let resp: ProduceResponse = client.call(ApiKey::Produce, 9, &request).await;
    assert_eq!(resp.responses[0].partition_responses[0].base_offset, 100);
    server.shutdown().await;
}

/// Every segment file under `dir`, recursively.
fn segment_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            segment_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "seg") {
            out.push(path);
        }
    }
}

/// On the local store segments are padded to whole blocks (written without cutting the
/// last one), and they read back, padding and all, after a restart empties the cache.
#[tokio::test]
async fn local_segments_are_whole_blocks_and_read_back_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = Settings {
        listen: "127.0.0.1:0".into(),
        data_dir: dir.path().to_path_buf(),
        flush_interval_ms: Some(1),
        compaction: false,
        ..Settings::default()
    };
    let server = Server::start(settings.clone())
        .await
        .expect("server starts");
    let mut client = Client::connect(&server).await;
    create_topic(&mut client, "blocks").await;
    let mut expected = Vec::new();
    for i in 0..5 {
        // Values of different lengths, little alike, so segment sizes differ.
        let values: Vec<String> = (0..=i * 40)
            .map(|j| format!("{}-{}", i * 7919 + j, "x".repeat(j * 13 % 97)))
            .collect();
        let refs: Vec<&str> = values.iter().map(String::as_str).collect();
        let resp: ProduceResponse = client
            .call(ApiKey::Produce, 9, &produce("blocks", &refs))
            .await;
        assert_eq!(resp.responses[0].partition_responses[0].error_code, 0);
        expected.extend(values);
    }
    drop(client);
    server.shutdown().await;

    let mut files = Vec::new();
    segment_files(&dir.path().join("objects"), &mut files);
    assert!(!files.is_empty(), "segments are on disk");
    let mut chunks = 0;
    for file in &files {
        let bytes = std::fs::read(file).expect("read segment");
        assert_eq!(
            bytes.len() % 4096,
            0,
            "{} is {} bytes",
            file.display(),
            bytes.len()
        );
        chunks += icestream_storage::segment::decode_segment(&bytes)
            .expect("a padded segment decodes")
            .len();
    }
    assert!(chunks >= 5, "every produce is in some segment's footer");

    let server = Server::start(settings).await.expect("server restarts");
    let mut client = Client::connect(&server).await;
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    let mut values = Vec::new();
    while values.len() < expected.len() {
        let fetch = FetchRequest::default()
            .with_max_wait_ms(0)
            .with_max_bytes(1 << 20)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str("blocks")))
                .with_partitions(vec![FetchPartition::default()
                    .with_fetch_offset(values.len() as i64)
                    .with_partition_max_bytes(1 << 20)])]);
        let resp: FetchResponse = client.call(ApiKey::Fetch, 12, &fetch).await;
        let part = &resp.responses[0].partitions[0];
        assert_eq!(part.error_code, 0);
        assert_eq!(part.high_watermark, expected.len() as i64);
        let mut data = part.records.clone().expect("records");
        let sets = RecordBatchDecoder::decode_all(&mut data).expect("valid batches");
        assert!(
            !sets.is_empty(),
            "fetch at {} returned nothing",
            values.len()
        );
        for set in sets {
            for r in set.records {
                if r.offset >= values.len() as i64 {
                    assert_eq!(r.offset, values.len() as i64);
                    values.push(String::from_utf8(r.value.expect("value").to_vec()).expect("utf8"));
                }
            }
        }
    }
    assert_eq!(values, expected);
    server.shutdown().await;
}
