//! Requests whose lengths lie: array, string and byte lengths that claim more than the frame
//! holds. Decoding must fail with an error (never allocate from the claim), the broker must
//! close only that connection, and everyone else must be served as before.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use icestream::{Server, Settings};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A default (empty-array) request of every API icestream serves.
fn default_request(api: ApiKey) -> Option<RequestKind> {
    macro_rules! kinds {
        ($($variant:ident => $ty:ty),* $(,)?) => {
            match api {
                $(ApiKey::$variant => Some(RequestKind::$variant(<$ty>::default())),)*
                _ => None,
            }
        };
    }
    kinds!(
        Produce => ProduceRequest,
        Fetch => FetchRequest,
        ListOffsets => ListOffsetsRequest,
        Metadata => MetadataRequest,
        FindCoordinator => FindCoordinatorRequest,
        ApiVersions => ApiVersionsRequest,
        CreateTopics => CreateTopicsRequest,
        DeleteTopics => DeleteTopicsRequest,
        InitProducerId => InitProducerIdRequest,
        OffsetForLeaderEpoch => OffsetForLeaderEpochRequest,
        DescribeConfigs => DescribeConfigsRequest,
        CreatePartitions => CreatePartitionsRequest,
        DeleteRecords => DeleteRecordsRequest,
        DescribeCluster => DescribeClusterRequest,
        JoinGroup => JoinGroupRequest,
        SyncGroup => SyncGroupRequest,
        Heartbeat => HeartbeatRequest,
        LeaveGroup => LeaveGroupRequest,
        OffsetCommit => OffsetCommitRequest,
        OffsetFetch => OffsetFetchRequest,
        ListGroups => ListGroupsRequest,
        DescribeGroups => DescribeGroupsRequest,
        DeleteGroups => DeleteGroupsRequest,
        OffsetDelete => OffsetDeleteRequest,
        ConsumerGroupHeartbeat => ConsumerGroupHeartbeatRequest,
        AlterConfigs => AlterConfigsRequest,
        IncrementalAlterConfigs => IncrementalAlterConfigsRequest,
        ConsumerGroupDescribe => ConsumerGroupDescribeRequest,
        AddPartitionsToTxn => AddPartitionsToTxnRequest,
        AddOffsetsToTxn => AddOffsetsToTxnRequest,
        EndTxn => EndTxnRequest,
        TxnOffsetCommit => TxnOffsetCommitRequest,
        DescribeTransactions => DescribeTransactionsRequest,
        ListTransactions => ListTransactionsRequest,
        DescribeProducers => DescribeProducersRequest,
        SaslHandshake => SaslHandshakeRequest,
        SaslAuthenticate => SaslAuthenticateRequest,
        DescribeAcls => DescribeAclsRequest,
        CreateAcls => CreateAclsRequest,
        DeleteAcls => DeleteAclsRequest,
        DescribeUserScramCredentials => DescribeUserScramCredentialsRequest,
        AlterUserScramCredentials => AlterUserScramCredentialsRequest,
    )
}

fn header(api: ApiKey, version: i16) -> BytesMut {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("hostile")))
        .encode(&mut buf, api.request_header_version(version))
        .expect("header");
    buf
}

fn varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
    out
}

/// Every body with one length field replaced by a lie: a 4-byte 0 (an empty array, or an
/// empty string or bytes field, in a non-flexible version) becomes 0x7fffffff, -2 or the
/// remaining bytes + 1; a 1-byte compact length 1 (empty, flexible versions) becomes the
/// varint of 0x80000000, of u32::MAX, or of the remaining bytes + 2.
fn lies(body: &[u8], flexible: bool) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for at in 0..body.len() {
        if flexible {
            if body[at] != 1 {
                continue;
            }
            let remaining = (body.len() - at - 1) as u64;
            for claim in [0x8000_0000u64, u64::from(u32::MAX), remaining + 2] {
                let mut b = body[..at].to_vec();
                b.extend(varint(claim));
                b.extend(&body[at + 1..]);
                out.push(b);
            }
        } else {
            if at + 4 > body.len() || body[at..at + 4] != [0, 0, 0, 0] {
                continue;
            }
            let remaining = (body.len() - at - 4) as i32;
            for claim in [i32::MAX, -2, remaining + 1] {
                let mut b = body.to_vec();
                b[at..at + 4].copy_from_slice(&claim.to_be_bytes());
                out.push(b);
            }
        }
    }
    out
}

fn is_flexible(api: ApiKey, version: i16) -> bool {
    api.request_header_version(version) >= 2
}

/// (api, version, frame) for every lie that the decoder refuses.
fn refused_frames() -> Vec<(ApiKey, i16, Bytes)> {
    let mut refused = Vec::new();
    for &(api, min, max) in icestream::api::SUPPORTED {
        let request = default_request(api).expect("every served API is listed");
        for version in min..=max {
            let legacy = legacy_empty_request(api, version);
            let mut body = BytesMut::new();
            match &legacy {
                Some((request, _)) => body.extend_from_slice(request),
                None => request.encode(&mut body, version).expect("encode default"),
            }
            for lie in lies(&body, is_flexible(api, version)) {
                let mut frame = header(api, version);
                frame.extend_from_slice(&lie);
                let frame = frame.freeze();
                let mut decode = frame.clone();
                // Before the decoder was bounded, this line aborted the test process.
                let header =
                    RequestHeader::decode(&mut decode, api.request_header_version(version));
                let ok = match (header, &legacy) {
                    (Err(_), _) => false,
                    (Ok(_), Some(_)) => {
                        icestream::api::legacy::decode(api, version, decode).is_ok()
                    }
                    (Ok(_), None) => RequestKind::decode(api, &mut decode, version).is_ok(),
                };
                if !ok {
                    refused.push((api, version, frame));
                }
            }
        }
    }
    refused
}

#[test]
fn lying_lengths_are_decode_errors_for_every_api_and_version() {
    let refused = refused_frames();
    // Every API with an array at the top level of its request has a refused lie.
    for &(api, min, max) in icestream::api::SUPPORTED {
        let request = default_request(api).expect("listed");
        let mut body = BytesMut::new();
        request.encode(&mut body, max).expect("encode");
        if lies(&body, is_flexible(api, max)).is_empty() {
            continue;
        }
        assert!(
            refused
                .iter()
                .any(|(a, v, _)| *a == api && (min..=max).contains(v)),
            "{api:?}: no lying length was refused"
        );
    }
    assert!(refused.len() > 500, "only {} refused lies", refused.len());
}

async fn start(dir: &tempfile::TempDir) -> Server {
    let settings = Settings {
        listen: "127.0.0.1:0".into(),
        admin_listen: String::new(),
        data_dir: dir.path().to_path_buf(),
        object_store: Some("memory://".into()),
        flush_interval_ms: Some(1),
        ..Settings::default()
    };
    Server::start(settings).await.expect("server starts")
}

async fn send_frame(stream: &mut TcpStream, frame: &[u8]) {
    let mut buf = BytesMut::with_capacity(frame.len() + 4);
    buf.put_i32(frame.len() as i32);
    buf.extend_from_slice(frame);
    stream.write_all(&buf).await.expect("write");
}

/// True when the broker closed the connection (rather than answering or hanging).
async fn closed(stream: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(
        tokio::time::timeout(Duration::from_secs(10), stream.read(&mut b)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

async fn api_versions_works(server: &Server) {
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    let mut frame = header(ApiKey::ApiVersions, 3);
    ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("t"))
        .with_client_software_version(StrBytes::from_static_str("1"))
        .encode(&mut frame, 3)
        .expect("encode");
    send_frame(&mut stream, &frame).await;
    let size = stream.read_i32().await.expect("size");
    let mut buf = vec![0u8; size as usize];
    stream.read_exact(&mut buf).await.expect("body");
    let mut bytes = Bytes::from(buf);
    ResponseHeader::decode(&mut bytes, 0).expect("header");
    let response = ApiVersionsResponse::decode(&mut bytes, 3).expect("response");
    assert_eq!(response.error_code, 0);
    assert!(!response.api_keys.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_22_byte_list_offsets_request_closes_its_connection_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(&dir).await;
    let mut bystander = TcpStream::connect(server.addr).await.expect("connect");
    // ListOffsets v1, correlation 1, null client id, replica -1, topics: 0x7fffffff.
    let frame: [u8; 22] = [
        0, 0, 0, 18, 0, 2, 0, 1, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0xff, 0xff,
        0xff,
    ];
    let mut hostile = TcpStream::connect(server.addr).await.expect("connect");
    hostile.write_all(&frame).await.expect("write");
    assert!(
        closed(&mut hostile).await,
        "the hostile connection is closed"
    );
    // The connection opened before is still served, and new ones are too.
    let mut frame = header(ApiKey::Metadata, 9);
    MetadataRequest::default()
        .with_topics(Some(vec![]))
        .encode(&mut frame, 9)
        .expect("encode");
    send_frame(&mut bystander, &frame).await;
    let size = bystander.read_i32().await.expect("bystander answered");
    assert!(size > 0);
    api_versions_works(&server).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refused_lie_closes_the_connection_and_the_broker_serves_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(&dir).await;
    let refused = refused_frames();
    let before = icestream::metrics::MALFORMED_REQUESTS
        .as_ref()
        .map(|c| c.get())
        .unwrap_or(0);
    // One lie per (api, version, claim kind) over the wire; the in-process sweep above
    // covers every position.
    let mut sent = 0;
    let mut seen = std::collections::HashSet::new();
    for (api, version, frame) in &refused {
        if !seen.insert((*api, *version, frame.len())) {
            continue;
        }
        let mut stream = TcpStream::connect(server.addr).await.expect("connect");
        send_frame(&mut stream, frame).await;
        assert!(
            closed(&mut stream).await,
            "{api:?} v{version}: a lying request must close the connection"
        );
        sent += 1;
    }
    assert!(sent > 100, "only {sent} lies sent");
    api_versions_works(&server).await;
    let after = icestream::metrics::MALFORMED_REQUESTS
        .as_ref()
        .map(|c| c.get())
        .unwrap_or(0);
    assert!(
        after >= before + sent as u64,
        "malformed requests counted: {before} -> {after} for {sent} sent"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_announcing_large_frames_hold_no_memory_beyond_the_pool() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = Settings {
        listen: "127.0.0.1:0".into(),
        admin_listen: String::new(),
        data_dir: dir.path().to_path_buf(),
        object_store: Some("memory://".into()),
        socket_request_max_bytes: 4 << 20,
        queued_max_request_bytes: 8 << 20,
        ..Settings::default()
    };
    let server = Server::start(settings).await.expect("server starts");
    // Ten connections each announce a 4 MiB frame and send 10 bytes of it: two of them fill
    // the 8 MiB pool, the other eight wait for room before their frames are read (so they
    // hold no buffer at all), and a small request waits too until the slow ones go away.
    let mut slow = Vec::new();
    for _ in 0..10 {
        let mut s = TcpStream::connect(server.addr).await.expect("connect");
        s.write_all(&(4i32 << 20).to_be_bytes()).await.expect("w");
        s.write_all(&[0u8; 10]).await.expect("w");
        slow.push(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The pool is full: a new small request waits...
    let waiting = tokio::spawn({
        let server_addr = server.addr;
        async move {
            let mut stream = TcpStream::connect(server_addr).await.expect("connect");
            let mut frame = header(ApiKey::ApiVersions, 0);
            ApiVersionsRequest::default()
                .encode(&mut frame, 0)
                .expect("encode");
            send_frame(&mut stream, &frame).await;
            stream.read_i32().await.expect("answered")
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the pool should be exhausted");
    // ...until the slow connections go away and give their permits back.
    drop(slow);
    let size = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("answered once the pool has room")
        .expect("task");
    assert!(size > 0);
    server.shutdown().await;
}

/// For the versions older than `kafka-protocol` encodes (clients before Kafka 0.11): an
/// empty request of `api` v`version`, and the answer it gets (no topics; a zero
/// throttle time where the version has one).
fn legacy_empty_request(api: ApiKey, version: i16) -> Option<(Vec<u8>, Vec<u8>)> {
    let no_topics = 0i32.to_be_bytes();
    let with_throttle = [0u8; 8].to_vec();
    let (request, answer): (Vec<u8>, Vec<u8>) = match (api, version) {
        (ApiKey::Produce, 0..=2) => {
            let request = [&(-1i16).to_be_bytes()[..], &0i32.to_be_bytes(), &no_topics].concat();
            let answer = if version == 0 {
                no_topics.to_vec()
            } else {
                with_throttle
            };
            (request, answer)
        }
        (ApiKey::Fetch, 0..=3) => {
            let mut request = [
                (-1i32).to_be_bytes(),
                100i32.to_be_bytes(),
                0i32.to_be_bytes(),
            ]
            .concat();
            if version == 3 {
                request.extend_from_slice(&i32::MAX.to_be_bytes());
            }
            request.extend_from_slice(&no_topics);
            let answer = if version == 0 {
                no_topics.to_vec()
            } else {
                with_throttle
            };
            (request, answer)
        }
        (ApiKey::ListOffsets, 0) => (
            [(-1i32).to_be_bytes(), no_topics].concat(),
            no_topics.to_vec(),
        ),
        (ApiKey::OffsetCommit, 0..=1) => {
            let mut request = 0i16.to_be_bytes().to_vec(); // group id ""
            if version == 1 {
                request.extend_from_slice(&(-1i32).to_be_bytes());
                request.extend_from_slice(&0i16.to_be_bytes()); // member id ""
            }
            request.extend_from_slice(&no_topics);
            (request, no_topics.to_vec())
        }
        (ApiKey::OffsetFetch, 0) => (
            [0i16.to_be_bytes().as_slice(), &no_topics].concat(),
            no_topics.to_vec(),
        ),
        (ApiKey::DeleteTopics, 0) => ([no_topics, 0i32.to_be_bytes()].concat(), no_topics.to_vec()),
        (ApiKey::CreateTopics, 0..=1) => {
            let mut request = [no_topics, 0i32.to_be_bytes()].concat();
            if version == 1 {
                request.push(0); // validate_only
            }
            (request, no_topics.to_vec())
        }
        (ApiKey::DescribeConfigs, 0) => (no_topics.to_vec(), with_throttle),
        _ => return None,
    };
    Some((request, answer))
}

/// Every API and version in the `SUPPORTED` table has a handler: an empty request of each
/// is answered (with whatever error it deserves), never refused as unhandled, which would
/// close the connection. (SASL requests change what the connection expects next and are
/// covered by the SASL tests.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_supported_api_and_version_is_answered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(&dir).await;
    for &(api, min, max) in icestream::api::SUPPORTED {
        if matches!(api, ApiKey::SaslHandshake | ApiKey::SaslAuthenticate) {
            continue;
        }
        let request = match api {
            // acks=0 (the default) is answered with nothing.
            ApiKey::Produce => RequestKind::Produce(ProduceRequest::default().with_acks(-1)),
            _ => default_request(api).expect("every served API is listed"),
        };
        let mut stream = TcpStream::connect(server.addr).await.expect("connect");
        for version in min..=max {
            let mut frame = header(api, version);
            let legacy = legacy_empty_request(api, version);
            match &legacy {
                Some((body, _)) => frame.extend_from_slice(body),
                None => request.encode(&mut frame, version).expect("encode default"),
            }
            send_frame(&mut stream, &frame).await;
            let answer = tokio::time::timeout(Duration::from_secs(10), async {
                let size = stream.read_i32().await?;
                let mut buf = vec![0u8; size.max(0) as usize];
                stream.read_exact(&mut buf).await?;
                Ok::<_, std::io::Error>(Bytes::from(buf))
            })
            .await;
            let mut bytes = match answer {
                Ok(Ok(bytes)) => bytes,
                other => panic!("{api:?} v{version} was not answered: {other:?}"),
            };
            let header_version = if api == ApiKey::ApiVersions {
                0
            } else {
                api.response_header_version(version)
            };
            let header = ResponseHeader::decode(&mut bytes, header_version).expect("header");
            assert_eq!(header.correlation_id, 1, "{api:?} v{version}");
            if let Some((_, answer)) = legacy {
                assert_eq!(&bytes[..], &answer[..], "{api:?} v{version} response");
                continue;
            }
            ResponseKind::decode(api, &mut bytes, version)
                .unwrap_or_else(|e| panic!("{api:?} v{version} response: {e}"));
        }
    }
    server.shutdown().await;
}
