//! The KIP-848 consumer group protocol (`group.protocol=consumer`): members heartbeat with
//! their subscription; the coordinator computes the target assignment with a server-side
//! assignor (`uniform` or `range`) and moves partitions between members in two steps —
//! the current owner is told to revoke, and only once it no longer reports owning a
//! partition is the partition given to its new owner — so no partition is ever consumed by
//! two members at once.
//!
//! Membership lives in memory: after a coordinator restart members get UNKNOWN_MEMBER_ID
//! and rejoin (committed offsets are durable in the metadata store).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::ConsumerGroupHeartbeatRequest;
use kafka_protocol::ResponseError;
use tokio::sync::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::registry::Registry;
use crate::cluster::topics::Topics;

/// Partitions by topic id.
pub type Partitions = BTreeMap<Uuid, BTreeSet<i32>>;

#[derive(Debug, Clone)]
pub struct ConsumerGroupConfig {
    pub heartbeat_interval_ms: i32,
    pub session_timeout: Duration,
}

impl Default for ConsumerGroupConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: 5000,
            session_timeout: Duration::from_secs(45),
        }
    }
}

pub struct CMember {
    pub id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub epoch: i32,
    previous_epoch: i32,
    pub subscribed: Vec<String>,
    pub regex: Option<String>,
    assignor: Option<String>,
    last_heartbeat: Instant,
    /// What the member was last told it owns.
    pub assigned: Partitions,
    /// What it reported owning in its last full heartbeat.
    owned: Partitions,
    /// Whether the last response carried the current `assigned`.
    sent: bool,
}

pub struct ConsumerGroup {
    pub id: String,
    pub epoch: i32,
    pub assignment_epoch: i32,
    pub assignor: String,
    pub members: BTreeMap<String, CMember>,
    pub target: HashMap<String, Partitions>,
    /// Subscribed topics when the target was computed: id → (name, partitions).
    topology: BTreeMap<Uuid, (String, i32)>,
}

fn set_len(p: &Partitions) -> usize {
    p.values().map(BTreeSet::len).sum()
}

fn minus(a: &Partitions, b: &Partitions) -> Partitions {
    let mut out = Partitions::new();
    for (t, ps) in a {
        let rest: BTreeSet<i32> = match b.get(t) {
            Some(other) => ps.difference(other).copied().collect(),
            None => ps.clone(),
        };
        if !rest.is_empty() {
            out.insert(*t, rest);
        }
    }
    out
}

fn intersect(a: &Partitions, b: &Partitions) -> Partitions {
    let mut out = Partitions::new();
    for (t, ps) in a {
        if let Some(other) = b.get(t) {
            let both: BTreeSet<i32> = ps.intersection(other).copied().collect();
            if !both.is_empty() {
                out.insert(*t, both);
            }
        }
    }
    out
}

fn union(a: &Partitions, b: &Partitions) -> Partitions {
    let mut out = a.clone();
    for (t, ps) in b {
        out.entry(*t).or_default().extend(ps.iter().copied());
    }
    out
}

/// Server-side assignors. Input: members with the topics they subscribe to, partition
/// counts, current ownership (for stickiness).
pub fn assign(
    assignor: &str,
    members: &BTreeMap<String, BTreeSet<Uuid>>,
    topology: &BTreeMap<Uuid, i32>,
    current: &HashMap<String, Partitions>,
) -> HashMap<String, Partitions> {
    let mut out: HashMap<String, Partitions> = members
        .keys()
        .map(|m| (m.clone(), Partitions::new()))
        .collect();
    for (topic, count) in topology {
        let subscribers: Vec<&String> = members
            .iter()
            .filter(|(_, ts)| ts.contains(topic))
            .map(|(m, _)| m)
            .collect();
        if subscribers.is_empty() {
            continue;
        }
        let n = subscribers.len() as i32;
        if assignor == "range" {
            let per = count / n;
            let extra = count % n;
            let mut next = 0;
            for (i, m) in subscribers.iter().enumerate() {
                let take = per + i32::from((i as i32) < extra);
                let ps: BTreeSet<i32> = (next..next + take).collect();
                next += take;
                if !ps.is_empty() {
                    out.entry((*m).clone()).or_default().insert(*topic, ps);
                }
            }
            continue;
        }
        // uniform: per topic, keep current owners up to their quota, then fill.
        let quota_base = count / n;
        let extra = count % n;
        let mut quota: HashMap<&String, i32> = subscribers
            .iter()
            .enumerate()
            .map(|(i, m)| (*m, quota_base + i32::from((i as i32) < extra)))
            .collect();
        let mut free: Vec<i32> = Vec::new();
        let mut taken: BTreeSet<i32> = BTreeSet::new();
        for p in 0..*count {
            let owner = subscribers.iter().find(|m| {
                current
                    .get(**m)
                    .and_then(|c| c.get(topic))
                    .is_some_and(|ps| ps.contains(&p))
            });
            match owner {
                Some(m) if quota.get(*m).copied().unwrap_or(0) > 0 && !taken.contains(&p) => {
                    if let Some(q) = quota.get_mut(*m) {
                        *q -= 1;
                    }
                    taken.insert(p);
                    out.entry((*m).clone())
                        .or_default()
                        .entry(*topic)
                        .or_default()
                        .insert(p);
                }
                _ => free.push(p),
            }
        }
        for p in free {
            if let Some(m) = subscribers
                .iter()
                .filter(|m| quota.get(**m).copied().unwrap_or(0) > 0)
                .max_by_key(|m| {
                    (
                        quota.get(**m).copied().unwrap_or(0),
                        std::cmp::Reverse((**m).clone()),
                    )
                })
            {
                if let Some(q) = quota.get_mut(*m) {
                    *q -= 1;
                }
                out.entry((*m).clone())
                    .or_default()
                    .entry(*topic)
                    .or_default()
                    .insert(p);
            }
        }
    }
    out
}

fn from_wire(
    tps: &[kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions],
) -> Partitions {
    let mut out = Partitions::new();
    for tp in tps {
        out.entry(tp.topic_id)
            .or_default()
            .extend(tp.partitions.iter().copied());
    }
    out
}

/// What a ConsumerGroupHeartbeat gets: the member's place, or an error with a message.
pub type HeartbeatOutcome = Result<Heartbeat, (ResponseError, &'static str)>;

/// A member's place in its group after a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    pub member_id: String,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: i32,
    /// The partitions the member holds now, when they changed since it was last told (or
    /// it (re)joined); `None`: unchanged.
    pub assignment: Option<Partitions>,
}

fn error(code: ResponseError, message: &'static str) -> HeartbeatOutcome {
    Err((code, message))
}

pub struct ConsumerGroups {
    config: ConsumerGroupConfig,
    groups: Registry<ConsumerGroup>,
}

impl ConsumerGroups {
    pub fn new(config: ConsumerGroupConfig) -> Self {
        Self {
            config,
            groups: Registry::default(),
        }
    }

    pub async fn get(&self, id: &str) -> Option<Arc<Mutex<ConsumerGroup>>> {
        self.groups.get(id).await
    }

    /// Drops a group's state (another broker coordinates it now).
    pub async fn forget(&self, id: &str) {
        self.groups.remove(id).await;
    }

    pub async fn ids(&self) -> Vec<String> {
        self.groups.ids().await
    }

    /// Validates an OffsetCommit from a member of a consumer group (`None`: not a consumer
    /// group, use the classic rules).
    pub async fn check_commit(
        &self,
        group: &str,
        member: &str,
        epoch: i32,
    ) -> Option<Result<(), ResponseError>> {
        let g = self.get(group).await?;
        let g = g.lock().await;
        if member.is_empty() && epoch < 0 && g.members.is_empty() {
            return Some(Ok(()));
        }
        let Some(m) = g.members.get(member) else {
            return Some(Err(ResponseError::UnknownMemberId));
        };
        Some(if epoch > m.epoch {
            Err(ResponseError::FencedMemberEpoch)
        } else if epoch < m.epoch && epoch != m.previous_epoch {
            Err(ResponseError::StaleMemberEpoch)
        } else {
            Ok(())
        })
    }

    pub async fn heartbeat(
        &self,
        req: ConsumerGroupHeartbeatRequest,
        version: i16,
        topics: &Topics,
        client_id: String,
        client_host: String,
    ) -> HeartbeatOutcome {
        let group_id = req.group_id.0.to_string();
        if group_id.is_empty() {
            return error(ResponseError::InvalidGroupId, "the group id is empty");
        }
        if let Some(a) = &req.server_assignor {
            if !matches!(a.as_str(), "uniform" | "range") {
                return error(
                    ResponseError::UnsupportedAssignor,
                    "server assignors are uniform and range",
                );
            }
        }
        let group = self
            .groups
            .get_or_insert_with(&group_id, || ConsumerGroup {
                id: group_id.clone(),
                epoch: 0,
                assignment_epoch: 0,
                assignor: "uniform".into(),
                members: BTreeMap::new(),
                target: HashMap::new(),
                topology: BTreeMap::new(),
            })
            .await;
        let mut g = group.lock().await;
        let mut member_id = req.member_id.to_string();
        let epoch = req.member_epoch;
        let mut changed = false;
        if epoch == -1 || epoch == -2 {
            // Leaving (-2: a static member leaving temporarily; treated as leaving here).
            if g.members.remove(&member_id).is_some() {
                g.target.remove(&member_id);
                g.epoch += 1;
                changed = true;
            }
            if changed {
                self.recompute(&mut g, topics).await;
            }
            return Ok(Heartbeat {
                member_id,
                member_epoch: epoch,
                heartbeat_interval_ms: self.config.heartbeat_interval_ms,
                assignment: None,
            });
        }
        if epoch == 0 {
            if member_id.is_empty() {
                if version >= 1 {
                    return error(ResponseError::InvalidRequest, "member id must be set (v1+)");
                }
                member_id = Uuid::new_v4().to_string();
            }
            if let Some(instance) = &req.instance_id {
                // A static member's new incarnation replaces the old one.
                let old: Option<String> = g
                    .members
                    .values()
                    .find(|m| {
                        m.instance_id.as_deref() == Some(instance.as_str()) && m.id != member_id
                    })
                    .map(|m| m.id.clone());
                if let Some(old) = old {
                    g.members.remove(&old);
                    g.target.remove(&old);
                }
            }
            if !g.members.contains_key(&member_id) {
                g.members.insert(
                    member_id.clone(),
                    CMember {
                        id: member_id.clone(),
                        instance_id: req.instance_id.as_ref().map(|s| s.to_string()),
                        rack_id: req.rack_id.as_ref().map(|s| s.to_string()),
                        client_id: client_id.clone(),
                        client_host: client_host.clone(),
                        epoch: 0,
                        previous_epoch: -1,
                        subscribed: Vec::new(),
                        regex: None,
                        assignor: None,
                        last_heartbeat: Instant::now(),
                        assigned: Partitions::new(),
                        owned: Partitions::new(),
                        sent: false,
                    },
                );
                g.epoch += 1;
                changed = true;
            } else if let Some(m) = g.members.get_mut(&member_id) {
                // A member rejoining with epoch 0 lost its state: start over.
                m.epoch = 0;
                m.assigned = Partitions::new();
                m.sent = false;
            }
        }
        let current_epoch = match g.members.get(&member_id) {
            None => return error(ResponseError::UnknownMemberId, "unknown member"),
            Some(m) => m.epoch,
        };
        if epoch != 0 && epoch != current_epoch {
            let previous = g.members.get(&member_id).map(|m| m.previous_epoch);
            if previous != Some(epoch) {
                return error(
                    ResponseError::FencedMemberEpoch,
                    "the member epoch is fenced",
                );
            }
        }
        // Apply what the member sent (null fields mean unchanged).
        if let Some(m) = g.members.get_mut(&member_id) {
            m.last_heartbeat = Instant::now();
            if let Some(names) = &req.subscribed_topic_names {
                let mut names: Vec<String> = names.iter().map(|n| n.0.to_string()).collect();
                names.sort();
                if names != m.subscribed {
                    m.subscribed = names;
                    changed = true;
                }
            }
            if let Some(regex) = &req.subscribed_topic_regex {
                let r = (!regex.is_empty()).then(|| regex.to_string());
                if r != m.regex {
                    m.regex = r;
                    changed = true;
                }
            }
            if let Some(a) = &req.server_assignor {
                m.assignor = Some(a.to_string());
            }
            if let Some(tps) = &req.topic_partitions {
                m.owned = from_wire(tps);
            }
            m.client_id = client_id;
            m.client_host = client_host;
        }
        if changed {
            g.epoch += 1;
        }
        let topology = self.topology(&g, topics).await;
        if changed || topology != g.topology || g.assignment_epoch != g.epoch {
            g.topology = topology;
            self.compute_target(&mut g);
        }
        self.reconcile(&mut g, &member_id);
        let m = match g.members.get_mut(&member_id) {
            Some(m) => m,
            None => return error(ResponseError::UnknownMemberId, "unknown member"),
        };
        let assignment = (!m.sent || epoch == 0).then(|| m.assigned.clone());
        m.sent = true;
        Ok(Heartbeat {
            member_id,
            member_epoch: m.epoch,
            heartbeat_interval_ms: self.config.heartbeat_interval_ms,
            assignment,
        })
    }

    /// Subscribed topics (names or regex) resolved to ids with their partition counts.
    async fn topology(&self, g: &ConsumerGroup, topics: &Topics) -> BTreeMap<Uuid, (String, i32)> {
        let mut names: BTreeSet<String> = g
            .members
            .values()
            .flat_map(|m| m.subscribed.iter().cloned())
            .collect();
        let regexes: Vec<regex::Regex> = g
            .members
            .values()
            .filter_map(|m| m.regex.as_deref())
            .filter_map(|r| regex::Regex::new(&format!("^(?:{r})$")).ok())
            .collect();
        if !regexes.is_empty() {
            if let Ok(all) = topics.list().await {
                for t in all {
                    if regexes.iter().any(|r| r.is_match(&t.name)) {
                        names.insert(t.name.clone());
                    }
                }
            }
        }
        let mut out = BTreeMap::new();
        for n in names {
            if let Ok(Some(t)) = topics.get(&n).await {
                out.insert(t.id, (n, t.partitions));
            }
        }
        out
    }

    async fn recompute(&self, g: &mut ConsumerGroup, topics: &Topics) {
        g.topology = self.topology(g, topics).await;
        self.compute_target(g);
    }

    fn compute_target(&self, g: &mut ConsumerGroup) {
        let assignor = g
            .members
            .values()
            .find_map(|m| m.assignor.clone())
            .unwrap_or_else(|| "uniform".into());
        // The topic ids each member subscribes to, by name or regex.
        let members: BTreeMap<String, BTreeSet<Uuid>> = g
            .members
            .values()
            .map(|m| {
                let regex = m
                    .regex
                    .as_deref()
                    .and_then(|r| regex::Regex::new(&format!("^(?:{r})$")).ok());
                let ids = g
                    .topology
                    .iter()
                    .filter(|(_, (name, _))| {
                        m.subscribed.contains(name)
                            || regex.as_ref().is_some_and(|r| r.is_match(name))
                    })
                    .map(|(id, _)| *id)
                    .collect();
                (m.id.clone(), ids)
            })
            .collect();
        let counts: BTreeMap<Uuid, i32> = g.topology.iter().map(|(id, (_, c))| (*id, *c)).collect();
        let current: HashMap<String, Partitions> = g
            .members
            .values()
            .map(|m| (m.id.clone(), m.assigned.clone()))
            .collect();
        g.target = assign(&assignor, &members, &counts, &current);
        g.assignor = assignor;
        g.assignment_epoch = g.epoch;
    }

    /// Moves `member` towards its target: revoke first, then take partitions nobody else
    /// holds.
    fn reconcile(&self, g: &mut ConsumerGroup, member: &str) {
        let target = g.target.get(member).cloned().unwrap_or_default();
        let held_by_others: Partitions = g
            .members
            .values()
            .filter(|m| m.id != member)
            .fold(Partitions::new(), |acc, m| {
                union(&acc, &union(&m.assigned, &m.owned))
            });
        let assignment_epoch = g.assignment_epoch;
        let Some(m) = g.members.get_mut(member) else {
            return;
        };
        let to_revoke = minus(&m.assigned, &target);
        if set_len(&to_revoke) > 0 {
            let kept = intersect(&m.assigned, &target);
            if m.assigned != kept {
                m.assigned = kept;
                m.sent = false;
            }
            // The epoch advances once the member no longer owns what it must give up.
            if set_len(&intersect(&m.owned, &to_revoke)) > 0 {
                return;
            }
        }
        let free = minus(&minus(&target, &m.assigned), &held_by_others);
        let next = union(&intersect(&m.assigned, &target), &free);
        if next != m.assigned {
            m.assigned = next;
            m.sent = false;
        }
        if m.epoch != assignment_epoch {
            m.previous_epoch = m.epoch;
            m.epoch = assignment_epoch;
            m.sent = false;
        }
    }

    /// Expires members that stopped heartbeating; runs until `shutdown`.
    pub async fn run_timers(self: Arc<Self>, topics: Arc<Topics>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = shutdown.cancelled() => return,
            }
            for (_, group) in self.groups.all().await {
                let mut g = group.lock().await;
                let now = Instant::now();
                let expired: Vec<String> = g
                    .members
                    .values()
                    .filter(|m| now > m.last_heartbeat + self.config.session_timeout)
                    .map(|m| m.id.clone())
                    .collect();
                if expired.is_empty() {
                    continue;
                }
                for id in &expired {
                    tracing::info!(group = %g.id, member = %id, "consumer_group.session_expired");
                    g.members.remove(id);
                    g.target.remove(id);
                }
                g.epoch += 1;
                self.recompute(&mut g, &topics).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topo(counts: &[(u128, i32)]) -> BTreeMap<Uuid, i32> {
        counts
            .iter()
            .map(|(t, c)| (Uuid::from_u128(*t), *c))
            .collect()
    }

    #[test]
    fn uniform_is_balanced_and_sticky() {
        let t = topo(&[(1, 6)]);
        let all: BTreeSet<Uuid> = t.keys().copied().collect();
        let two: BTreeMap<String, BTreeSet<Uuid>> = [
            ("a".to_string(), all.clone()),
            ("b".to_string(), all.clone()),
        ]
        .into();
        let first = assign("uniform", &two, &t, &HashMap::new());
        assert_eq!(set_len(&first["a"]), 3);
        assert_eq!(set_len(&first["b"]), 3);
        let three: BTreeMap<String, BTreeSet<Uuid>> = [
            ("a".to_string(), all.clone()),
            ("b".to_string(), all.clone()),
            ("c".to_string(), all),
        ]
        .into();
        let second = assign("uniform", &three, &t, &first);
        for m in ["a", "b", "c"] {
            assert_eq!(set_len(&second[m]), 2);
        }
        // a and b keep partitions they had.
        assert!(set_len(&intersect(&second["a"], &first["a"])) == 2);
        assert!(set_len(&intersect(&second["b"], &first["b"])) == 2);
    }

    #[test]
    fn range_gives_contiguous_ranges() {
        let t = topo(&[(1, 5)]);
        let all: BTreeSet<Uuid> = t.keys().copied().collect();
        let two: BTreeMap<String, BTreeSet<Uuid>> =
            [("a".to_string(), all.clone()), ("b".to_string(), all)].into();
        let r = assign("range", &two, &t, &HashMap::new());
        let id = Uuid::from_u128(1);
        assert_eq!(r["a"][&id], [0, 1, 2].into_iter().collect());
        assert_eq!(r["b"][&id], [3, 4].into_iter().collect());
    }
}
