//! `icestream topics …`: topic administration over the Kafka protocol (so it works against
//! any running broker): list topics with how much of each is not in its table yet,
//! describe one (per partition: start, end, the last offset in the table; the configs set on
//! it), create and delete.
//!
//! How fresh a table is comes from ListOffsets' LATEST_TIERED (-5): the table is the tier,
//! so it is the last offset folded into the table.

use std::collections::BTreeMap;

use anyhow::{bail, Context as _};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    DescribeConfigsRequest, DescribeConfigsResponse, MetadataRequest, MetadataResponse,
};
use kafka_protocol::protocol::StrBytes;

use crate::groups_cli::{error_name, list_offsets, name, Client};

/// ListOffsets' LATEST_TIERED_TIMESTAMP: the last offset in the table (-1 before any).
const LATEST_TIERED: i64 = -5;
const EARLIEST: i64 = -2;
const LATEST: i64 = -1;
/// DescribeConfigs resource type and config source of a topic's own settings.
const RESOURCE_TOPIC: i8 = 2;
const SOURCE_TOPIC_CONFIG: i8 = 1;

/// A partition's offsets: the log start, the end (next offset) and the last offset in the
/// table (-1 when none is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOffsets {
    pub start: i64,
    pub end: i64,
    pub last_in_table: i64,
}

impl PartitionOffsets {
    /// Offsets written and not yet in the table (transaction markers included).
    pub fn not_in_table(&self) -> i64 {
        (self.end - self.start.max(self.last_in_table + 1)).max(0)
    }
}

/// Every topic (or the one named) with its partitions, in name order.
async fn topics(
    client: &mut Client,
    only: Option<&str>,
) -> anyhow::Result<BTreeMap<String, Vec<i32>>> {
    let request = MetadataRequest::default()
        .with_topics(only.map(|t| vec![MetadataRequestTopic::default().with_name(Some(name(t)))]))
        .with_allow_auto_topic_creation(false);
    let resp: MetadataResponse = client.call(ApiKey::Metadata, 12, &request).await?;
    let mut out = BTreeMap::new();
    for t in resp.topics {
        let topic = t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default();
        if t.error_code != 0 {
            bail!("topic {topic}: {}", error_name(t.error_code));
        }
        let mut ps: Vec<i32> = t.partitions.iter().map(|p| p.partition_index).collect();
        ps.sort_unstable();
        out.insert(topic, ps);
    }
    Ok(out)
}

/// Start, end and last table offset of each of `parts`.
pub async fn offsets(
    client: &mut Client,
    topic: &str,
    parts: &[i32],
) -> anyhow::Result<BTreeMap<i32, PartitionOffsets>> {
    let starts = list_offsets(client, topic, parts, EARLIEST).await?;
    let ends = list_offsets(client, topic, parts, LATEST).await?;
    let tables = list_offsets(client, topic, parts, LATEST_TIERED).await?;
    Ok(parts
        .iter()
        .map(|p| {
            let at = |m: &BTreeMap<i32, i64>| m.get(p).copied().unwrap_or(-1);
            let o = PartitionOffsets {
                start: at(&starts),
                end: at(&ends),
                last_in_table: at(&tables),
            };
            (*p, o)
        })
        .collect())
}

pub async fn list(bootstrap: &str) -> anyhow::Result<()> {
    let mut client = Client::connect(bootstrap).await?;
    let all = topics(&mut client, None).await?;
    println!(
        "{:<40} {:>10} {:>14} {:>14}",
        "TOPIC", "PARTITIONS", "END", "NOT IN TABLE"
    );
    for (topic, parts) in all {
        let offsets = offsets(&mut client, &topic, &parts).await?;
        let end: i64 = offsets.values().map(|o| o.end).sum();
        let behind: i64 = offsets.values().map(PartitionOffsets::not_in_table).sum();
        println!("{topic:<40} {:>10} {end:>14} {behind:>14}", parts.len());
    }
    Ok(())
}

pub async fn describe(bootstrap: &str, topic: &str) -> anyhow::Result<()> {
    let mut client = Client::connect(bootstrap).await?;
    let parts = topics(&mut client, Some(topic))
        .await?
        .remove(topic)
        .with_context(|| format!("no topic {topic}"))?;
    let offsets = offsets(&mut client, topic, &parts).await?;
    println!("topic {topic}: {} partition(s)", parts.len());
    println!(
        "{:<10} {:>14} {:>14} {:>14} {:>14}",
        "PARTITION", "START", "END", "LAST IN TABLE", "NOT IN TABLE"
    );
    for (p, o) in &offsets {
        let table = if o.last_in_table >= 0 {
            o.last_in_table.to_string()
        } else {
            "-".into()
        };
        println!(
            "{p:<10} {:>14} {:>14} {table:>14} {:>14}",
            o.start,
            o.end,
            o.not_in_table()
        );
    }
    let resp: DescribeConfigsResponse = client
        .call(
            ApiKey::DescribeConfigs,
            4,
            &DescribeConfigsRequest::default().with_resources(vec![
                DescribeConfigsResource::default()
                    .with_resource_type(RESOURCE_TOPIC)
                    .with_resource_name(StrBytes::from_string(topic.to_string())),
            ]),
        )
        .await?;
    for r in resp.results {
        if r.error_code != 0 {
            bail!("describe configs of {topic}: {}", error_name(r.error_code));
        }
        let own: Vec<_> = r
            .configs
            .iter()
            .filter(|c| c.config_source == SOURCE_TOPIC_CONFIG)
            .collect();
        if own.is_empty() {
            println!("configs: defaults");
        } else {
            println!("configs:");
            for c in own {
                let value = if c.is_sensitive {
                    "(sensitive)"
                } else {
                    c.value.as_deref().unwrap_or("")
                };
                println!("  {}={value}", c.name.as_str());
            }
        }
    }
    Ok(())
}

/// `key=value` pairs, as `--config` takes them.
pub fn parse_configs(pairs: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    pairs
        .iter()
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .filter(|(k, _)| !k.is_empty())
                .with_context(|| format!("--config {p}: expected key=value"))
        })
        .collect()
}

pub async fn create(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    configs: &[(String, String)],
) -> anyhow::Result<()> {
    let mut client = Client::connect(bootstrap).await?;
    let request = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(name(topic))
            .with_num_partitions(partitions)
            .with_replication_factor(-1)
            .with_configs(
                configs
                    .iter()
                    .map(|(k, v)| {
                        CreatableTopicConfig::default()
                            .with_name(StrBytes::from_string(k.clone()))
                            .with_value(Some(StrBytes::from_string(v.clone())))
                    })
                    .collect(),
            )])
        .with_timeout_ms(30_000);
    let resp: CreateTopicsResponse = client.call(ApiKey::CreateTopics, 7, &request).await?;
    let t = resp.topics.first().context("no topic in the response")?;
    if t.error_code != 0 {
        let message = t.error_message.as_deref().unwrap_or("");
        bail!("create {topic}: {} {message}", error_name(t.error_code));
    }
    println!("created {topic} ({} partition(s))", t.num_partitions);
    Ok(())
}

pub async fn delete(bootstrap: &str, topic: &str) -> anyhow::Result<()> {
    let mut client = Client::connect(bootstrap).await?;
    let request = DeleteTopicsRequest::default()
        .with_topic_names(vec![name(topic)])
        .with_timeout_ms(30_000);
    let resp: DeleteTopicsResponse = client.call(ApiKey::DeleteTopics, 5, &request).await?;
    let t = resp.responses.first().context("no topic in the response")?;
    if t.error_code != 0 {
        bail!("delete {topic}: {}", error_name(t.error_code));
    }
    println!("deleted {topic}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_in_table_counts_from_the_table_or_the_log_start() {
        let o = |start, end, last_in_table| PartitionOffsets {
            start,
            end,
            last_in_table,
        };
        assert_eq!(o(0, 10, -1).not_in_table(), 10);
        assert_eq!(o(0, 10, 9).not_in_table(), 0);
        assert_eq!(o(0, 10, 6).not_in_table(), 3);
        // Retention moved the start past the table's end.
        assert_eq!(o(8, 10, 4).not_in_table(), 2);
        assert_eq!(o(0, 0, -1).not_in_table(), 0);
    }

    #[test]
    fn configs_are_key_value_pairs() {
        let parsed = parse_configs(&[
            "retention.ms=1000".into(),
            " cleanup.policy = delete".into(),
        ])
        .expect("valid");
        assert_eq!(
            parsed,
            vec![
                ("retention.ms".to_string(), "1000".to_string()),
                ("cleanup.policy".to_string(), "delete".to_string())
            ]
        );
        assert!(parse_configs(&["novalue".into()]).is_err());
        assert!(parse_configs(&["=x".into()]).is_err());
    }
}
