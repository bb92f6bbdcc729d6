//! `icestream groups …`: consumer group administration over the Kafka protocol (so it works
//! against any running broker): list groups, describe one with its committed offsets and
//! lag, and reset a group's offsets to the earliest, the latest, an offset, or a time.

use std::collections::BTreeMap;

use anyhow::{bail, Context as _};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::{
    ApiKey, DescribeGroupsRequest, DescribeGroupsResponse, GroupId, ListGroupsRequest,
    ListGroupsResponse, ListOffsetsRequest, ListOffsetsResponse, MetadataRequest, MetadataResponse,
    OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse,
    RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Where to reset a group's offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    Earliest,
    Latest,
    Offset(i64),
    /// The first offset whose timestamp is at or after this time (ms since the epoch).
    Timestamp(i64),
}

/// A minimal Kafka client: one connection, one request at a time.
pub struct Client {
    stream: TcpStream,
    correlation: i32,
}

impl Client {
    pub async fn connect(bootstrap: &str) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(bootstrap)
            .await
            .with_context(|| format!("connecting to {bootstrap}"))?;
        Ok(Self {
            stream,
            correlation: 0,
        })
    }

    pub async fn call<Q: Encodable, R: Decodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        request: &Q,
    ) -> anyhow::Result<R> {
        self.correlation += 1;
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str("icestream-admin")))
            .encode(&mut buf, api.request_header_version(version))?;
        request.encode(&mut buf, version)?;
        let size = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&size.to_be_bytes());
        self.stream.write_all(&buf).await?;
        let size = self.stream.read_i32().await? as usize;
        let mut body = vec![0u8; size];
        self.stream.read_exact(&mut body).await?;
        let mut body = Bytes::from(body);
        let header = ResponseHeader::decode(&mut body, api.response_header_version(version))?;
        if header.correlation_id != self.correlation {
            bail!(
                "response to another request (correlation id {})",
                header.correlation_id
            );
        }
        R::decode(&mut body, version)
    }
}

pub(crate) fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

pub(crate) fn error_name(code: i16) -> String {
    kafka_protocol::ResponseError::try_from_code(code)
        .map(|e| format!("{e:?}"))
        .unwrap_or_else(|| "NONE".into())
}

async fn partitions(client: &mut Client, topic: &str) -> anyhow::Result<Vec<i32>> {
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    let resp: MetadataResponse = client
        .call(
            ApiKey::Metadata,
            12,
            &MetadataRequest::default()
                .with_topics(Some(vec![
                    MetadataRequestTopic::default().with_name(Some(name(topic)))
                ]))
                .with_allow_auto_topic_creation(false),
        )
        .await?;
    let t = resp
        .topics
        .first()
        .context("no topic in the metadata response")?;
    if t.error_code != 0 {
        bail!("topic {topic}: {}", error_name(t.error_code));
    }
    let mut ps: Vec<i32> = t.partitions.iter().map(|p| p.partition_index).collect();
    ps.sort_unstable();
    Ok(ps)
}

pub(crate) async fn list_offsets(
    client: &mut Client,
    topic: &str,
    parts: &[i32],
    timestamp: i64,
) -> anyhow::Result<BTreeMap<i32, i64>> {
    let resp: ListOffsetsResponse = client
        .call(
            ApiKey::ListOffsets,
            7,
            &ListOffsetsRequest::default()
                .with_replica_id(kafka_protocol::messages::BrokerId(-1))
                .with_topics(vec![ListOffsetsTopic::default()
                    .with_name(name(topic))
                    .with_partitions(
                        parts
                            .iter()
                            .map(|p| {
                                ListOffsetsPartition::default()
                                    .with_partition_index(*p)
                                    .with_timestamp(timestamp)
                            })
                            .collect(),
                    )]),
        )
        .await?;
    let mut out = BTreeMap::new();
    for t in resp.topics {
        for p in t.partitions {
            if p.error_code != 0 {
                bail!(
                    "list offsets of {topic}/{}: {}",
                    p.partition_index,
                    error_name(p.error_code)
                );
            }
            out.insert(p.partition_index, p.offset);
        }
    }
    Ok(out)
}

async fn committed(
    client: &mut Client,
    group: &str,
    topic: &str,
    parts: &[i32],
) -> anyhow::Result<BTreeMap<i32, i64>> {
    let resp: OffsetFetchResponse = client
        .call(
            ApiKey::OffsetFetch,
            7,
            &OffsetFetchRequest::default()
                .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
                .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                    .with_name(name(topic))
                    .with_partition_indexes(parts.to_vec())])),
        )
        .await?;
    if resp.error_code != 0 {
        bail!("offset fetch: {}", error_name(resp.error_code));
    }
    Ok(resp
        .topics
        .into_iter()
        .flat_map(|t| t.partitions)
        .map(|p| (p.partition_index, p.committed_offset))
        .collect())
}

async fn group_state(client: &mut Client, group: &str) -> anyhow::Result<(String, usize)> {
    let resp: DescribeGroupsResponse = client
        .call(
            ApiKey::DescribeGroups,
            5,
            &DescribeGroupsRequest::default()
                .with_groups(vec![GroupId(StrBytes::from_string(group.to_string()))]),
        )
        .await?;
    let g = resp.groups.first().context("no group in the response")?;
    if g.error_code != 0 {
        bail!("describe group {group}: {}", error_name(g.error_code));
    }
    Ok((g.group_state.to_string(), g.members.len()))
}

pub async fn list(bootstrap: &str) -> anyhow::Result<()> {
    let mut client = Client::connect(bootstrap).await?;
    let resp: ListGroupsResponse = client
        .call(ApiKey::ListGroups, 4, &ListGroupsRequest::default())
        .await?;
    println!("{:<40} {:<20} STATE", "GROUP", "PROTOCOL TYPE");
    for g in resp.groups {
        println!(
            "{:<40} {:<20} {}",
            g.group_id.0.as_str(),
            g.protocol_type.as_str(),
            g.group_state.as_str()
        );
    }
    Ok(())
}

pub async fn describe(bootstrap: &str, group: &str, topic: &str) -> anyhow::Result<()> {
    let mut client = Client::connect(bootstrap).await?;
    let (state, members) = group_state(&mut client, group).await?;
    println!("group {group}: {state}, {members} member(s)");
    let parts = partitions(&mut client, topic).await?;
    let offsets = committed(&mut client, group, topic, &parts).await?;
    let ends = list_offsets(&mut client, topic, &parts, -1).await?;
    println!(
        "{:<10} {:>14} {:>14} {:>10}",
        "PARTITION", "COMMITTED", "END", "LAG"
    );
    for p in parts {
        let c = offsets.get(&p).copied().unwrap_or(-1);
        let e = ends.get(&p).copied().unwrap_or(-1);
        let lag = if c >= 0 {
            (e - c).to_string()
        } else {
            "-".into()
        };
        println!("{p:<10} {c:>14} {e:>14} {lag:>10}");
    }
    Ok(())
}

/// Computes (and with `execute`, commits) new offsets for `group` on `topic`. The group
/// must have no active members, as with Kafka's tool.
pub async fn reset(
    bootstrap: &str,
    group: &str,
    topic: &str,
    to: ResetTo,
    execute: bool,
) -> anyhow::Result<BTreeMap<i32, i64>> {
    let mut client = Client::connect(bootstrap).await?;
    let (state, members) = group_state(&mut client, group).await?;
    if members > 0 {
        bail!("group {group} is {state} with {members} active member(s): stop its consumers first");
    }
    let parts = partitions(&mut client, topic).await?;
    let earliest = list_offsets(&mut client, topic, &parts, -2).await?;
    let latest = list_offsets(&mut client, topic, &parts, -1).await?;
    let mut target = BTreeMap::new();
    for p in &parts {
        let (lo, hi) = (earliest[p], latest[p]);
        let offset = match to {
            ResetTo::Earliest => lo,
            ResetTo::Latest => hi,
            ResetTo::Offset(o) => o.clamp(lo, hi),
            ResetTo::Timestamp(_) => hi,
        };
        target.insert(*p, offset);
    }
    if let ResetTo::Timestamp(ts) = to {
        for (p, o) in list_offsets(&mut client, topic, &parts, ts).await? {
            // No record at or after the time: the end of the partition.
            if o >= 0 {
                target.insert(p, o);
            }
        }
    }
    if execute {
        let resp: OffsetCommitResponse = client
            .call(
                ApiKey::OffsetCommit,
                8,
                &OffsetCommitRequest::default()
                    .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
                    .with_generation_id_or_member_epoch(-1)
                    .with_member_id(StrBytes::new())
                    .with_topics(vec![OffsetCommitRequestTopic::default()
                        .with_name(name(topic))
                        .with_partitions(
                            target
                                .iter()
                                .map(|(p, o)| {
                                    OffsetCommitRequestPartition::default()
                                        .with_partition_index(*p)
                                        .with_committed_offset(*o)
                                        .with_committed_leader_epoch(-1)
                                })
                                .collect(),
                        )]),
            )
            .await?;
        for t in resp.topics {
            for p in t.partitions {
                if p.error_code != 0 {
                    bail!(
                        "committing {topic}/{}: {}",
                        p.partition_index,
                        error_name(p.error_code)
                    );
                }
            }
        }
    }
    println!(
        "{} offsets of group {group} on {topic}:",
        if execute {
            "new"
        } else {
            "planned (dry run; add --execute)"
        }
    );
    println!("{:<10} {:>14}", "PARTITION", "OFFSET");
    for (p, o) in &target {
        println!("{p:<10} {o:>14}");
    }
    Ok(target)
}

/// Parses `--to-datetime`: milliseconds since the epoch, or RFC 3339 (`2024-05-01T12:00:00Z`).
pub fn parse_time(s: &str) -> anyhow::Result<i64> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    let err = || {
        anyhow::anyhow!(
            "{s:?} is neither milliseconds since the epoch nor YYYY-MM-DDTHH:MM:SS[.mmm]Z"
        )
    };
    let s = s.strip_suffix('Z').ok_or_else(err)?;
    let (date, time) = s.split_once('T').ok_or_else(err)?;
    let d: Vec<i64> = date
        .split('-')
        .map(|v| v.parse().map_err(|_| err()))
        .collect::<Result<_, _>>()?;
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<i64> = hms
        .split(':')
        .map(|v| v.parse().map_err(|_| err()))
        .collect::<Result<_, _>>()?;
    if d.len() != 3 || t.len() != 3 {
        return Err(err());
    }
    let ms_frac: i64 = format!("{frac:0<3}")[..3].parse().map_err(|_| err())?;
    // Days since the epoch (proleptic Gregorian, Howard Hinnant's algorithm).
    let (y, m, day) = (d[0], d[1], d[2]);
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok(((days * 24 + t[0]) * 60 + t[1]) * 60_000 + t[2] * 1000 + ms_frac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_times() {
        assert_eq!(parse_time("1700000000000").expect("ms"), 1_700_000_000_000);
        assert_eq!(parse_time("1970-01-01T00:00:00Z").expect("epoch"), 0);
        assert_eq!(
            parse_time("2023-11-14T22:13:20.5Z").expect("rfc3339"),
            1_700_000_000_500
        );
        assert!(parse_time("yesterday").is_err());
    }
}
