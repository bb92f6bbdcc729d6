//! Request dispatch: header peeking, version checks, decoding with `kafka-protocol`, one
//! module per Kafka API, and response encoding.

mod acls;
mod add_offsets_to_txn;
mod add_partitions_to_txn;
mod alter_configs;
mod api_versions;
mod authorize;
mod consumer_group_describe;
mod consumer_group_heartbeat;
mod create_partitions;
mod create_topics;
mod delete_groups;
mod delete_records;
mod delete_topics;
mod describe_cluster;
mod describe_configs;
mod describe_groups;
mod describe_producers;
mod describe_transactions;
mod end_txn;
mod fetch;
mod find_coordinator;
mod heartbeat;
mod init_producer_id;
pub(crate) mod join_group;
mod leave_group;
pub mod legacy;
mod list_groups;
mod list_offsets;
mod list_transactions;
mod metadata;
mod offset_commit;
mod offset_delete;
mod offset_fetch;
mod offset_for_leader_epoch;
mod produce;
mod sasl;
mod scram_credentials;
pub(crate) mod sync_group;
mod txn_offset_commit;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::broker::Broker;
use crate::security::Session;

pub use api_versions::SUPPORTED;

/// A response being computed; `Ok(None)` means the request gets no response (acks=0).
pub type ResponseFuture = Pin<Box<dyn Future<Output = Result<Option<Bytes>, EncodeError>> + Send>>;

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("request frame of {0} bytes is too short for a request header")]
    Short(usize),
    #[error("unknown api key {0}")]
    UnknownApiKey(i16),
    #[error("{api:?} v{version} is not supported (supported: v{min} to v{max})")]
    UnsupportedVersion {
        api: ApiKey,
        version: i16,
        min: i16,
        max: i16,
    },
    #[error("{api:?} before SASL authentication (or after the session expired)")]
    Unauthenticated { api: ApiKey },
    #[error("malformed {api:?} v{version} request: {reason}")]
    Malformed {
        api: ApiKey,
        version: i16,
        reason: String,
    },
}

#[derive(Debug, thiserror::Error)]
#[error("encoding {api:?} v{version} response: {reason}")]
pub struct EncodeError {
    api: ApiKey,
    version: i16,
    reason: String,
}

/// The request's header fields a handler may need.
#[derive(Debug, Clone)]
pub struct Context {
    pub api: ApiKey,
    pub version: i16,
    pub correlation_id: i32,
    pub client_id: Option<StrBytes>,
    pub peer: SocketAddr,
    /// Who sent the request (`User:name`; `User:ANONYMOUS` when not authenticated).
    pub principal: Arc<str>,
    /// The client's address, as ACLs name hosts.
    pub host: Arc<str>,
    /// The listener (security protocol name) the request came on.
    pub listener: &'static str,
    /// Size of the request frame (handlers keeping slices of it decide whether to copy).
    pub frame_bytes: usize,
    /// Earlier requests of this connection not yet answered.
    pub unanswered: usize,
}

impl Context {
    /// Whether the ACLs let the request's principal do `operation` on the resource
    /// (always, with the authorizer off). Refusals are counted.
    pub fn allowed(&self, broker: &Broker, operation: i8, resource_type: i8, name: &str) -> bool {
        let ok = broker.security.authorizer.authorize(
            &self.principal,
            &self.host,
            operation,
            resource_type,
            name,
        );
        if !ok {
            crate::metrics::inc(&crate::metrics::AUTHORIZATION_FAILURES);
            tracing::debug!(principal = %self.principal, host = %self.host, operation, resource_type, name, api = ?self.api, "not authorized");
        }
        ok
    }
}

impl Context {
    /// KIP-430: the operations the caller may perform on a resource, as a bit field (bit
    /// n for operation code n), among those Kafka defines for the resource type. Asking
    /// is not a refusal: nothing is counted or logged.
    pub fn authorized_operations(&self, broker: &Broker, resource_type: i8, name: &str) -> i32 {
        crate::security::acl::supported_operations(resource_type)
            .iter()
            .filter(|&&o| {
                broker.security.authorizer.authorize(
                    &self.principal,
                    &self.host,
                    o,
                    resource_type,
                    name,
                )
            })
            .fold(0, |bits, &o| bits | (1 << o))
    }
}

fn peek_i16(frame: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([frame[at], frame[at + 1]])
}

/// Decodes one request frame and starts handling it. Work that must happen in arrival
/// order (queueing produced data) is done before this returns; the rest runs when the
/// returned future is polled.
pub async fn dispatch(
    broker: &Arc<Broker>,
    mut frame: Bytes,
    session: &mut Session,
    unanswered: usize,
) -> Result<Option<ResponseFuture>, DispatchError> {
    let peer = session.peer;
    if session.raw_tokens {
        let answer = sasl::raw_token(broker, session, frame).await;
        return Ok(answer.map(|bytes| ready(Ok(Some(bytes)))));
    }
    if frame.len() < 8 {
        return Err(DispatchError::Short(frame.len()));
    }
    let api_key = peek_i16(&frame, 0);
    let version = peek_i16(&frame, 2);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let api = ApiKey::try_from(api_key).map_err(|_| DispatchError::UnknownApiKey(api_key))?;
    let frame_bytes = frame.len();
    // On SASL listeners only the handshake is served until the client authenticates (and
    // again once its session expired: KIP-368 clients re-authenticate in time).
    if !matches!(
        api,
        ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate
    ) && !session.may_serve()
    {
        if session.authenticated {
            crate::metrics::inc(&crate::metrics::AUTHENTICATION_FAILURES);
        }
        return Err(DispatchError::Unauthenticated { api });
    }
    let (min, max) = api_versions::handled(api).ok_or(DispatchError::UnknownApiKey(api_key))?;
    if api == ApiKey::ApiVersions && version > max {
        // KIP-511: answer with v0 and UNSUPPORTED_VERSION so the client can pick a version.
        return Ok(Some(ready(encode(
            api,
            0,
            correlation_id,
            ResponseKind::ApiVersions(api_versions::unsupported_version()),
        ))));
    }
    if version < min || version > max {
        return Err(DispatchError::UnsupportedVersion {
            api,
            version,
            min,
            max,
        });
    }
    let malformed = |reason: String| DispatchError::Malformed {
        api,
        version,
        reason,
    };
    let header = RequestHeader::decode(&mut frame, api.request_header_version(version))
        .map_err(|e| malformed(e.to_string()))?;
    let request = if legacy::is_legacy(api, version) {
        legacy::decode(api, version, frame).map_err(malformed)?
    } else {
        RequestKind::decode(api, &mut frame, version).map_err(|e| malformed(e.to_string()))?
    };
    let ctx = Context {
        api,
        version,
        correlation_id,
        client_id: header.client_id,
        peer,
        principal: session.principal.clone(),
        host: session.host.clone(),
        listener: session.listener.name(),
        frame_bytes,
        unanswered,
    };
    let b = broker.clone();
    if let Some(response) = authorize::refusal(&b, &ctx, &request) {
        return Ok(Some(refuse(&ctx, response)));
    }
    let future: ResponseFuture = match request {
        RequestKind::SaslHandshake(req) => {
            let response = sasl::handshake(&b, session, version, req);
            ready(encode(
                api,
                version,
                correlation_id,
                ResponseKind::SaslHandshake(response),
            ))
        }
        RequestKind::SaslAuthenticate(req) => {
            let response = sasl::authenticate(&b, session, req).await;
            ready(encode(
                api,
                version,
                correlation_id,
                ResponseKind::SaslAuthenticate(response),
            ))
        }
        RequestKind::CreateAcls(req) => respond(ctx.clone(), async move {
            ResponseKind::CreateAcls(acls::create(&b, &ctx, req).await)
        }),
        RequestKind::DescribeAcls(req) => respond(ctx.clone(), async move {
            ResponseKind::DescribeAcls(acls::describe(&b, &ctx, req))
        }),
        RequestKind::DeleteAcls(req) => respond(ctx.clone(), async move {
            ResponseKind::DeleteAcls(acls::delete(&b, &ctx, req).await)
        }),
        RequestKind::DescribeUserScramCredentials(req) => respond(ctx.clone(), async move {
            ResponseKind::DescribeUserScramCredentials(
                scram_credentials::describe(&b, &ctx, req).await,
            )
        }),
        RequestKind::AlterUserScramCredentials(req) => respond(ctx.clone(), async move {
            ResponseKind::AlterUserScramCredentials(scram_credentials::alter(&b, &ctx, req).await)
        }),
        RequestKind::Produce(req) => return Ok(produce::admit(b, ctx, req).await),
        RequestKind::ApiVersions(req) => respond(ctx, async move {
            ResponseKind::ApiVersions(api_versions::handle(&b, req))
        }),
        RequestKind::Metadata(req) => respond(ctx.clone(), async move {
            ResponseKind::Metadata(metadata::handle(&b, &ctx, req).await)
        }),
        RequestKind::Fetch(req) => respond(ctx.clone(), async move {
            ResponseKind::Fetch(fetch::handle(&b, &ctx, req).await)
        }),
        RequestKind::ListOffsets(req) => respond(ctx.clone(), async move {
            ResponseKind::ListOffsets(list_offsets::handle(&b, &ctx, req).await)
        }),
        RequestKind::CreateTopics(req) => respond(ctx.clone(), async move {
            ResponseKind::CreateTopics(create_topics::handle(&b, &ctx, req).await)
        }),
        RequestKind::DeleteTopics(req) => respond(ctx.clone(), async move {
            ResponseKind::DeleteTopics(delete_topics::handle(&b, &ctx, req).await)
        }),
        RequestKind::CreatePartitions(req) => respond(ctx.clone(), async move {
            ResponseKind::CreatePartitions(create_partitions::handle(&b, &ctx, req).await)
        }),
        RequestKind::DescribeConfigs(req) => respond(ctx.clone(), async move {
            ResponseKind::DescribeConfigs(describe_configs::handle(&b, &ctx, req).await)
        }),
        RequestKind::DescribeCluster(req) => respond(ctx.clone(), async move {
            ResponseKind::DescribeCluster(describe_cluster::handle(&b, &ctx, req))
        }),
        RequestKind::InitProducerId(req) => respond(ctx.clone(), async move {
            ResponseKind::InitProducerId(init_producer_id::handle(&b, req).await)
        }),
        RequestKind::FindCoordinator(req) => respond(ctx.clone(), async move {
            ResponseKind::FindCoordinator(find_coordinator::handle(&b, &ctx, req))
        }),
        RequestKind::OffsetForLeaderEpoch(req) => respond(ctx.clone(), async move {
            ResponseKind::OffsetForLeaderEpoch(offset_for_leader_epoch::handle(&b, &ctx, req).await)
        }),
        RequestKind::JoinGroup(req) => respond(ctx.clone(), async move {
            ResponseKind::JoinGroup(join_group::handle(&b, &ctx, req).await)
        }),
        RequestKind::SyncGroup(req) => respond(ctx.clone(), async move {
            ResponseKind::SyncGroup(sync_group::handle(&b, &ctx, req).await)
        }),
        RequestKind::Heartbeat(req) => respond(ctx.clone(), async move {
            ResponseKind::Heartbeat(heartbeat::handle(&b, req).await)
        }),
        RequestKind::LeaveGroup(req) => respond(ctx.clone(), async move {
            ResponseKind::LeaveGroup(leave_group::handle(&b, &ctx, req).await)
        }),
        RequestKind::OffsetCommit(req) => respond(ctx.clone(), async move {
            ResponseKind::OffsetCommit(offset_commit::handle(&b, &ctx, req).await)
        }),
        RequestKind::OffsetFetch(req) => respond(ctx.clone(), async move {
            ResponseKind::OffsetFetch(offset_fetch::handle(&b, &ctx, req).await)
        }),
        RequestKind::ListGroups(req) => respond(ctx.clone(), async move {
            ResponseKind::ListGroups(list_groups::handle(&b, &ctx, req).await)
        }),
        RequestKind::DescribeGroups(req) => respond(ctx.clone(), async move {
            ResponseKind::DescribeGroups(describe_groups::handle(&b, &ctx, req).await)
        }),
        RequestKind::DeleteGroups(req) => respond(ctx.clone(), async move {
            ResponseKind::DeleteGroups(delete_groups::handle(&b, &ctx, req).await)
        }),
        RequestKind::DeleteRecords(req) => respond(ctx.clone(), async move {
            ResponseKind::DeleteRecords(delete_records::handle(&b, &ctx, req).await)
        }),
        RequestKind::OffsetDelete(req) => respond(ctx.clone(), async move {
            ResponseKind::OffsetDelete(offset_delete::handle(&b, req).await)
        }),
        RequestKind::ConsumerGroupHeartbeat(req) => respond(ctx.clone(), async move {
            ResponseKind::ConsumerGroupHeartbeat(
                consumer_group_heartbeat::handle(&b, &ctx, req).await,
            )
        }),
        RequestKind::ConsumerGroupDescribe(req) => respond(ctx.clone(), async move {
            ResponseKind::ConsumerGroupDescribe(
                consumer_group_describe::handle(&b, &ctx, req).await,
            )
        }),
        RequestKind::IncrementalAlterConfigs(req) => respond(ctx.clone(), async move {
            ResponseKind::IncrementalAlterConfigs(alter_configs::incremental(&b, &ctx, req).await)
        }),
        RequestKind::AddPartitionsToTxn(req) => respond(ctx.clone(), async move {
            ResponseKind::AddPartitionsToTxn(add_partitions_to_txn::handle(&b, &ctx, req).await)
        }),
        RequestKind::AddOffsetsToTxn(req) => respond(ctx.clone(), async move {
            ResponseKind::AddOffsetsToTxn(add_offsets_to_txn::handle(&b, req).await)
        }),
        RequestKind::TxnOffsetCommit(req) => respond(ctx.clone(), async move {
            ResponseKind::TxnOffsetCommit(txn_offset_commit::handle(&b, &ctx, req).await)
        }),
        RequestKind::EndTxn(req) => respond(ctx.clone(), async move {
            ResponseKind::EndTxn(end_txn::handle(&b, &ctx, req).await)
        }),
        RequestKind::DescribeTransactions(req) => respond(ctx.clone(), async move {
            ResponseKind::DescribeTransactions(describe_transactions::handle(&b, &ctx, req).await)
        }),
        RequestKind::ListTransactions(req) => respond(ctx.clone(), async move {
            ResponseKind::ListTransactions(list_transactions::handle(&b, &ctx, req).await)
        }),
        RequestKind::DescribeProducers(req) => respond(ctx.clone(), async move {
            ResponseKind::DescribeProducers(describe_producers::handle(&b, &ctx, req).await)
        }),
        RequestKind::AlterConfigs(req) => respond(ctx.clone(), async move {
            ResponseKind::AlterConfigs(alter_configs::alter(&b, &ctx, req).await)
        }),
        other => {
            // `handled` only lets through the APIs matched above.
            return Err(malformed(format!(
                "no handler for {:?}",
                std::mem::discriminant(&other)
            )));
        }
    };
    Ok(Some(future))
}

/// `Some(NOT_COORDINATOR)` when another broker coordinates `group` (whose local state, if
/// any, is dropped: the coordinator moved).
pub async fn not_coordinator(
    broker: &Broker,
    group: &str,
) -> Option<kafka_protocol::ResponseError> {
    if broker.cluster.is_coordinator(group) {
        return None;
    }
    broker.groups.forget(group).await;
    broker.consumer_groups.forget(group).await;
    Some(kafka_protocol::ResponseError::NotCoordinator)
}

/// A response decided before any work: an authorization refusal.
fn refuse(ctx: &Context, response: ResponseKind) -> ResponseFuture {
    ready(encode(ctx.api, ctx.version, ctx.correlation_id, response))
}

fn ready(r: Result<Option<Bytes>, EncodeError>) -> ResponseFuture {
    Box::pin(async move { r })
}

fn respond(
    ctx: Context,
    body: impl Future<Output = ResponseKind> + Send + 'static,
) -> ResponseFuture {
    Box::pin(async move {
        let response = body.await;
        encode(ctx.api, ctx.version, ctx.correlation_id, response)
    })
}

/// Encodes header and body with the 4-byte size prefix.
pub fn encode(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    response: ResponseKind,
) -> Result<Option<Bytes>, EncodeError> {
    let err = |reason: String| EncodeError {
        api,
        version,
        reason,
    };
    // ApiVersions responses always use header v0, so clients can parse them whatever
    // version they asked for.
    let header_version = if api == ApiKey::ApiVersions {
        0
    } else {
        api.response_header_version(version)
    };
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0);
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut buf, header_version)
        .map_err(|e| err(e.to_string()))?;
    if legacy::is_legacy(api, version) {
        legacy::encode(&response, version, &mut buf).map_err(err)?;
    } else {
        response
            .encode(&mut buf, version)
            .map_err(|e| err(e.to_string()))?;
    }
    let size = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    Ok(Some(buf.freeze()))
}
