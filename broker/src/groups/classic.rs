//! The classic group coordinator: join barrier, leader election, assignment hand-off,
//! heartbeats, session expiry, static members, and the group record saved to the
//! metadata store at every stable point (so a restarted or new coordinator resumes).
//!
//! Each group is a small state machine behind its own lock; JoinGroup and SyncGroup
//! requests park a oneshot sender in their member and are answered when the barrier
//! completes (all known members rejoined, or the rebalance timeout passed).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use icestream_storage::meta::{GroupRecord, StoredMember};
use icestream_storage::{MetaError, MetaStore};
use kafka_protocol::messages::{JoinGroupRequest, SyncGroupRequest};
use kafka_protocol::ResponseError;
use tokio::sync::{oneshot, Mutex};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::registry::Registry;

#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// Kafka's `group.initial.rebalance.delay.ms`: how long a new group waits for more
    /// members before its first rebalance completes.
    pub initial_rebalance_delay: Duration,
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
}

impl Default for GroupConfig {
    fn default() -> Self {
        Self {
            initial_rebalance_delay: Duration::from_millis(3000),
            min_session_timeout_ms: 6000,
            max_session_timeout_ms: 1_800_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Empty => "Empty",
            State::PreparingRebalance => "PreparingRebalance",
            State::CompletingRebalance => "CompletingRebalance",
            State::Stable => "Stable",
            State::Dead => "Dead",
        }
    }
}

struct Member {
    id: String,
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocol_type: String,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    last_heartbeat: Instant,
    join_waiter: Option<oneshot::Sender<JoinOutcome>>,
    sync_waiter: Option<oneshot::Sender<SyncOutcome>>,
}

impl Member {
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

pub struct Group {
    id: String,
    state: State,
    protocol_type: Option<String>,
    protocol: Option<String>,
    generation: i32,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED (KIP-394), not yet joined.
    pending: HashSet<String>,
    /// When the join barrier (or the wait for the leader's SyncGroup) gives up.
    deadline: Option<Instant>,
    /// The initial delay of a new group may be extended up to this point.
    initial_limit: Option<Instant>,
}

/// A snapshot of a group for DescribeGroups.
pub struct GroupView {
    pub state: State,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberView>,
}

pub struct MemberView {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// What a JoinGroup gets: a place in a generation, or an error about `member_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinOutcome {
    Joined(Joined),
    Failed {
        error: ResponseError,
        member_id: String,
    },
}

/// A member's place in a generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: String,
    pub leader: String,
    pub member_id: String,
    /// Every member with its metadata for the chosen protocol: for the leader only (it
    /// assigns), empty for the others.
    pub members: Vec<JoinedMember>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub metadata: Bytes,
}

/// What a SyncGroup gets: the member's assignment, or an error.
pub type SyncOutcome = Result<Synced, ResponseError>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synced {
    pub assignment: Bytes,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
}

fn join_error(error: ResponseError, member_id: &str) -> JoinOutcome {
    JoinOutcome::Failed {
        error,
        member_id: member_id.to_string(),
    }
}

impl Group {
    fn new(id: &str) -> Self {
        Self {
            id: id.to_string(),
            state: State::Empty,
            protocol_type: None,
            protocol: None,
            generation: 0,
            leader: None,
            members: BTreeMap::new(),
            pending: HashSet::new(),
            deadline: None,
            initial_limit: None,
        }
    }

    fn from_record(r: GroupRecord) -> Self {
        let now = Instant::now();
        let members: BTreeMap<String, Member> = r
            .members
            .into_iter()
            .map(|m| {
                (
                    m.member_id.clone(),
                    Member {
                        id: m.member_id,
                        instance_id: m.instance_id,
                        client_id: m.client_id,
                        client_host: m.client_host,
                        session_timeout: Duration::from_millis(m.session_timeout_ms.max(0) as u64),
                        rebalance_timeout: Duration::from_millis(
                            m.rebalance_timeout_ms.max(0) as u64
                        ),
                        protocol_type: r.protocol_type.clone().unwrap_or_default(),
                        protocols: m
                            .protocols
                            .into_iter()
                            .map(|(n, b)| (n, Bytes::from(b)))
                            .collect(),
                        assignment: Bytes::from(m.assignment),
                        // Members get a full session to reach the new coordinator.
                        last_heartbeat: now,
                        join_waiter: None,
                        sync_waiter: None,
                    },
                )
            })
            .collect();
        Self {
            id: r.group_id,
            state: if members.is_empty() {
                State::Empty
            } else {
                State::Stable
            },
            protocol_type: r.protocol_type,
            protocol: r.protocol,
            generation: r.generation,
            leader: r.leader,
            members,
            pending: HashSet::new(),
            deadline: None,
            initial_limit: None,
        }
    }

    fn record(&self, now_ms: i64) -> GroupRecord {
        GroupRecord {
            v: GroupRecord::VERSION,
            group_id: self.id.clone(),
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            generation: self.generation,
            leader: self.leader.clone(),
            members: self
                .members
                .values()
                .map(|m| StoredMember {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    session_timeout_ms: m.session_timeout.as_millis() as i32,
                    rebalance_timeout_ms: m.rebalance_timeout.as_millis() as i32,
                    protocols: m
                        .protocols
                        .iter()
                        .map(|(n, b)| (n.clone(), b.to_vec()))
                        .collect(),
                    assignment: m.assignment.to_vec(),
                })
                .collect(),
            saved_ms: now_ms,
        }
    }

    fn rebalance_timeout(&self) -> Duration {
        self.members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or(Duration::from_secs(60))
    }

    /// Starts (or continues) a rebalance: members must rejoin before the deadline.
    fn prepare_rebalance(&mut self, config: &GroupConfig) {
        // Members waiting for a SyncGroup answer must rejoin.
        for m in self.members.values_mut() {
            if let Some(w) = m.sync_waiter.take() {
                let _ = w.send(Err(ResponseError::RebalanceInProgress));
            }
        }
        let now = Instant::now();
        if self.state == State::Empty {
            // A new group waits a little for more members (group.initial.rebalance.delay.ms).
            self.deadline = Some(now + config.initial_rebalance_delay);
            self.initial_limit = Some(now + self.rebalance_timeout());
        } else if self.state != State::PreparingRebalance {
            self.deadline = Some(now + self.rebalance_timeout());
            self.initial_limit = None;
        }
        self.state = State::PreparingRebalance;
    }

    /// True when every member has rejoined, so the barrier need not wait for the deadline
    /// (except during a new group's initial delay).
    fn all_joined(&self) -> bool {
        self.initial_limit.is_none() && self.members.values().all(|m| m.join_waiter.is_some())
    }

    /// Removes the members whose session lapsed (those parked in a JoinGroup are waiting
    /// on the group, not silent); whether any was.
    fn expire_sessions(&mut self, now: Instant, config: &GroupConfig) -> bool {
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| m.join_waiter.is_none() && now > m.last_heartbeat + m.session_timeout)
            .map(|m| m.id.clone())
            .collect();
        for id in &expired {
            tracing::info!(group = %self.id, member = %id, "group.session_expired");
            self.remove_member(id, config);
        }
        !expired.is_empty()
    }

    /// Whether a request naming this static instance comes from a member id the instance
    /// no longer has (a newer incarnation took its place): Kafka's FENCED_INSTANCE_ID.
    fn fenced(&self, instance_id: Option<&str>, member_id: &str) -> bool {
        instance_id.is_some_and(|instance| {
            self.members
                .values()
                .any(|m| m.instance_id.as_deref() == Some(instance) && m.id != member_id)
        })
    }

    /// Kafka's protocol vote: each member's most preferred protocol among those all
    /// members support; the one with the most votes.
    fn select_protocol(&self) -> String {
        let mut candidates: Option<HashSet<String>> = None;
        for m in self.members.values() {
            let names: HashSet<String> = m.protocols.iter().map(|(n, _)| n.clone()).collect();
            candidates = Some(match candidates {
                None => names,
                Some(c) => c.intersection(&names).cloned().collect(),
            });
        }
        let candidates = candidates.unwrap_or_default();
        let mut votes: BTreeMap<String, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some((n, _)) = m.protocols.iter().find(|(n, _)| candidates.contains(n)) {
                *votes.entry(n.clone()).or_default() += 1;
            }
        }
        votes
            .into_iter()
            .max_by_key(|(_, v)| *v)
            .map(|(n, _)| n)
            .unwrap_or_default()
    }

    /// Completes the join barrier: drops members that did not rejoin, picks the protocol
    /// and the leader, bumps the generation and answers every waiting JoinGroup.
    fn complete_join(&mut self) {
        let gone: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| m.join_waiter.is_none())
            .map(|(k, _)| k.clone())
            .collect();
        for id in gone {
            self.members.remove(&id);
        }
        self.deadline = None;
        self.initial_limit = None;
        self.generation += 1;
        if self.members.is_empty() {
            self.state = State::Empty;
            self.protocol = None;
            self.leader = None;
            return;
        }
        let protocol = self.select_protocol();
        self.protocol = Some(protocol.clone());
        if self
            .leader
            .as_ref()
            .is_none_or(|l| !self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        let leader = self.leader.clone().unwrap_or_default();
        self.state = State::CompletingRebalance;
        self.deadline = Some(Instant::now() + self.rebalance_timeout());
        let all: Vec<JoinedMember> = self
            .members
            .values()
            .map(|m| JoinedMember {
                member_id: m.id.clone(),
                instance_id: m.instance_id.clone(),
                metadata: m.metadata_for(&protocol),
            })
            .collect();
        let generation = self.generation;
        let protocol_type = self.protocol_type.clone();
        for m in self.members.values_mut() {
            m.last_heartbeat = Instant::now();
            if let Some(w) = m.join_waiter.take() {
                let _ = w.send(JoinOutcome::Joined(Joined {
                    generation,
                    protocol_type: protocol_type.clone(),
                    protocol: protocol.clone(),
                    leader: leader.clone(),
                    member_id: m.id.clone(),
                    members: if m.id == leader {
                        all.clone()
                    } else {
                        Vec::new()
                    },
                }));
            }
        }
    }

    fn remove_member(&mut self, id: &str, config: &GroupConfig) {
        if let Some(m) = self.members.remove(id) {
            if let Some(w) = m.join_waiter {
                let _ = w.send(join_error(ResponseError::UnknownMemberId, id));
            }
            if let Some(w) = m.sync_waiter {
                let _ = w.send(Err(ResponseError::UnknownMemberId));
            }
        }
        if self.leader.as_deref() == Some(id) {
            self.leader = None;
        }
        match self.state {
            State::Empty | State::Dead => {}
            _ if self.members.is_empty() => {
                self.state = State::Empty;
                self.generation += 1;
                self.deadline = None;
                self.protocol = None;
            }
            State::PreparingRebalance => {
                if self.all_joined() {
                    self.complete_join();
                }
            }
            _ => self.prepare_rebalance(config),
        }
    }

    pub fn view(&self) -> GroupView {
        let protocol = self.protocol.clone().unwrap_or_default();
        GroupView {
            state: self.state,
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            members: self
                .members
                .values()
                .map(|m| MemberView {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: m.metadata_for(&protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
            protocol,
        }
    }
}

/// Where a JoinGroup comes from.
pub struct ClientInfo {
    pub client_id: String,
    pub client_host: String,
}

pub struct Coordinator {
    meta: MetaStore,
    config: GroupConfig,
    groups: Registry<Group>,
}

impl Coordinator {
    pub fn new(meta: MetaStore, config: GroupConfig) -> Self {
        Self {
            meta,
            config,
            groups: Registry::default(),
        }
    }

    /// The group, loaded from its record on first use.
    async fn group(&self, id: &str) -> Result<Arc<Mutex<Group>>, MetaError> {
        if let Some(g) = self.groups.get(id).await {
            return Ok(g);
        }
        let loaded = match self.meta.load_group(id).await? {
            Some(r) => Group::from_record(r),
            None => Group::new(id),
        };
        Ok(self.groups.insert_if_absent(id, loaded).await)
    }

    /// Drops a group's in-memory state (another broker coordinates it now); parked
    /// requests are answered with NOT_COORDINATOR.
    pub async fn forget(&self, id: &str) {
        let Some(group) = self.groups.remove(id).await else {
            return;
        };
        let mut g = group.lock().await;
        for m in g.members.values_mut() {
            if let Some(w) = m.join_waiter.take() {
                let _ = w.send(join_error(ResponseError::NotCoordinator, &m.id));
            }
            if let Some(w) = m.sync_waiter.take() {
                let _ = w.send(Err(ResponseError::NotCoordinator));
            }
        }
    }

    /// The group if it exists in memory or as a record.
    pub async fn existing(&self, id: &str) -> Result<Option<Arc<Mutex<Group>>>, MetaError> {
        if let Some(g) = self.groups.get(id).await {
            return Ok(Some(g));
        }
        if self.meta.load_group(id).await?.is_some() {
            return self.group(id).await.map(Some);
        }
        Ok(None)
    }

    async fn save(&self, group: &Group) {
        if let Err(e) = self
            .meta
            .save_group(&group.record(self.meta.now_ms()))
            .await
        {
            tracing::warn!(group = %group.id, error = %e, "saving the group record failed");
        }
    }

    /// JoinGroup at request `version` (it decides the member-id handshake, v4+, and
    /// whether the request carries a rebalance timeout, v1+).
    pub async fn join(
        &self,
        req: JoinGroupRequest,
        version: i16,
        client: ClientInfo,
    ) -> JoinOutcome {
        let group_id = req.group_id.0.to_string();
        let member_id = req.member_id.to_string();
        if group_id.is_empty() {
            return join_error(ResponseError::InvalidGroupId, &member_id);
        }
        if req.session_timeout_ms < self.config.min_session_timeout_ms
            || req.session_timeout_ms > self.config.max_session_timeout_ms
        {
            return join_error(ResponseError::InvalidSessionTimeout, &member_id);
        }
        if req.protocol_type.is_empty() || req.protocols.is_empty() {
            return join_error(ResponseError::InconsistentGroupProtocol, &member_id);
        }
        let group = match self.group(&group_id).await {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!(group = %group_id, error = %e, "loading group failed");
                return join_error(ResponseError::CoordinatorNotAvailable, &member_id);
            }
        };
        let rx = {
            let mut g = group.lock().await;
            if g.state == State::Dead {
                return join_error(ResponseError::CoordinatorNotAvailable, &member_id);
            }
            // A session that lapsed since the last timer tick ends before this join is
            // weighed, as Kafka's session deadlines are exact: a static member coming back
            // after its session expired joins as a new member (a rebalance), not in its
            // old place.
            g.expire_sessions(Instant::now(), &self.config);
            let protocol_type = req.protocol_type.to_string();
            let protocols: Vec<(String, Bytes)> = req
                .protocols
                .iter()
                .map(|p| (p.name.to_string(), p.metadata.clone()))
                .collect();
            if !g.members.is_empty() {
                let same_type = g.protocol_type.as_deref() == Some(protocol_type.as_str());
                let shared = g.members.values().all(|m| {
                    m.protocols
                        .iter()
                        .any(|(n, _)| protocols.iter().any(|(p, _)| p == n))
                });
                if !same_type || !shared {
                    return join_error(ResponseError::InconsistentGroupProtocol, &member_id);
                }
            }
            let instance_id = req.group_instance_id.as_ref().map(|i| i.to_string());
            let mut id = member_id.clone();
            // The leader before a static member came back under a new member id.
            let mut replaced_static: Option<String> = None;
            if id.is_empty() {
                id = format!("{}-{}", client.client_id, uuid::Uuid::new_v4());
                if let Some(instance) = &instance_id {
                    // A static member coming back fences its previous incarnation.
                    let old: Option<String> = g
                        .members
                        .values()
                        .find(|m| m.instance_id.as_ref() == Some(instance))
                        .map(|m| m.id.clone());
                    if let Some(old) = old {
                        if let Some(mut m) = g.members.remove(&old) {
                            if let Some(w) = m.join_waiter.take() {
                                let _ = w.send(join_error(ResponseError::FencedInstanceId, &old));
                            }
                            if let Some(w) = m.sync_waiter.take() {
                                let _ = w.send(Err(ResponseError::FencedInstanceId));
                            }
                            replaced_static = Some(g.leader.clone().unwrap_or_default());
                            m.id = id.clone();
                            if g.leader.as_deref() == Some(old.as_str()) {
                                g.leader = Some(id.clone());
                            }
                            g.members.insert(id.clone(), m);
                        }
                    }
                } else if version >= 4 {
                    // KIP-394: the member must come back with the id we give it.
                    g.pending.insert(id.clone());
                    return join_error(ResponseError::MemberIdRequired, &id);
                }
            } else if g.fenced(instance_id.as_deref(), &id) {
                return join_error(ResponseError::FencedInstanceId, &id);
            } else if !g.members.contains_key(&id) && !g.pending.contains(&id) {
                return join_error(ResponseError::UnknownMemberId, &id);
            }
            g.pending.remove(&id);
            let (tx, rx) = oneshot::channel();
            let session_timeout = Duration::from_millis(req.session_timeout_ms as u64);
            let rebalance_timeout = Duration::from_millis(if version >= 1 {
                req.rebalance_timeout_ms.max(0) as u64
            } else {
                req.session_timeout_ms as u64
            });
            let existing_same = g.members.get(&id).is_some_and(|m| m.protocols == protocols);
            let member = g.members.entry(id.clone()).or_insert_with(|| Member {
                id: id.clone(),
                instance_id: instance_id.clone(),
                client_id: client.client_id.clone(),
                client_host: client.client_host.clone(),
                session_timeout,
                rebalance_timeout,
                protocol_type: protocol_type.clone(),
                protocols: protocols.clone(),
                assignment: Bytes::new(),
                last_heartbeat: Instant::now(),
                join_waiter: None,
                sync_waiter: None,
            });
            member.session_timeout = session_timeout;
            member.rebalance_timeout = rebalance_timeout;
            member.protocols = protocols;
            member.protocol_type = protocol_type.clone();
            member.last_heartbeat = Instant::now();
            if let Some(old) = member.join_waiter.replace(tx) {
                let _ = old.send(join_error(ResponseError::UnknownMemberId, &id));
            }
            if g.members.len() == 1 {
                g.protocol_type = Some(protocol_type);
            }
            let static_keeps_protocol = replaced_static.is_some()
                && g.protocol.as_deref() == Some(g.select_protocol().as_str());
            match g.state {
                State::Stable
                    if static_keeps_protocol
                        || (existing_same && g.leader.as_deref() != Some(id.as_str())) =>
                {
                    // A follower rejoining unchanged gets the current generation, without
                    // a rebalance (as Kafka does). So does a static member coming back
                    // under a new member id while the group's protocol stays: it is told
                    // the leader from before it came back, so it never assigns (even when
                    // it is the leader), and SyncGroup gives it its assignment.
                    let generation = g.generation;
                    let protocol = g.protocol.clone().unwrap_or_default();
                    let leader = replaced_static
                        .clone()
                        .unwrap_or_else(|| g.leader.clone().unwrap_or_default());
                    let protocol_type = g.protocol_type.clone();
                    if let Some(w) = g.members.get_mut(&id).and_then(|m| m.join_waiter.take()) {
                        let _ = w.send(JoinOutcome::Joined(Joined {
                            generation,
                            protocol_type,
                            protocol,
                            leader,
                            member_id: id.clone(),
                            members: Vec::new(),
                        }));
                    }
                }
                State::PreparingRebalance => {
                    if let Some(limit) = g.initial_limit {
                        // New members extend a new group's initial delay.
                        let next =
                            (Instant::now() + self.config.initial_rebalance_delay).min(limit);
                        g.deadline = Some(next);
                    }
                }
                _ => g.prepare_rebalance(&self.config),
            }
            if g.all_joined() {
                g.complete_join();
            }
            if replaced_static.is_some() && g.state == State::Stable {
                // The record holds the static member under its new id.
                self.save(&g).await;
            }
            rx
        };
        rx.await
            .unwrap_or_else(|_| join_error(ResponseError::RebalanceInProgress, &member_id))
    }

    /// SyncGroup at request `version` (v5+ checks the protocol type and name it names).
    pub async fn sync(&self, req: SyncGroupRequest, version: i16) -> SyncOutcome {
        let group_id = req.group_id.0.to_string();
        let member_id = req.member_id.to_string();
        let group = match self.existing(&group_id).await {
            Ok(Some(g)) => g,
            Ok(None) => return Err(ResponseError::UnknownMemberId),
            Err(_) => return Err(ResponseError::CoordinatorNotAvailable),
        };
        let (rx, to_save) = {
            let mut g = group.lock().await;
            if g.fenced(req.group_instance_id.as_deref(), &member_id) {
                return Err(ResponseError::FencedInstanceId);
            }
            if !g.members.contains_key(&member_id) {
                return Err(ResponseError::UnknownMemberId);
            }
            if req.generation_id != g.generation {
                return Err(ResponseError::IllegalGeneration);
            }
            if version >= 5 {
                let type_ok = req
                    .protocol_type
                    .as_ref()
                    .is_none_or(|t| Some(t.as_str()) == g.protocol_type.as_deref());
                let name_ok = req
                    .protocol_name
                    .as_ref()
                    .is_none_or(|n| Some(n.as_str()) == g.protocol.as_deref());
                if !type_ok || !name_ok {
                    return Err(ResponseError::InconsistentGroupProtocol);
                }
            }
            let respond = |g: &Group, m: &str| {
                Ok(Synced {
                    assignment: g
                        .members
                        .get(m)
                        .map(|m| m.assignment.clone())
                        .unwrap_or_default(),
                    protocol_type: g.protocol_type.clone(),
                    protocol: g.protocol.clone(),
                })
            };
            match g.state {
                State::Empty | State::Dead => return Err(ResponseError::UnknownMemberId),
                State::PreparingRebalance => return Err(ResponseError::RebalanceInProgress),
                State::Stable => return respond(&g, &member_id),
                State::CompletingRebalance => {}
            }
            if g.leader.as_deref() == Some(member_id.as_str()) {
                let mut assignments: HashMap<String, Bytes> = req
                    .assignments
                    .into_iter()
                    .map(|a| (a.member_id.to_string(), a.assignment))
                    .collect();
                for m in g.members.values_mut() {
                    m.assignment = assignments.remove(&m.id).unwrap_or_default();
                }
                g.state = State::Stable;
                g.deadline = None;
                let waiting: Vec<String> = g
                    .members
                    .values()
                    .filter(|m| m.sync_waiter.is_some())
                    .map(|m| m.id.clone())
                    .collect();
                for id in waiting {
                    let r = respond(&g, &id);
                    if let Some(w) = g.members.get_mut(&id).and_then(|m| m.sync_waiter.take()) {
                        let _ = w.send(r);
                    }
                }
                let r = respond(&g, &member_id);
                (None, Some((g.record(self.meta.now_ms()), r)))
            } else {
                let (tx, rx) = oneshot::channel();
                if let Some(m) = g.members.get_mut(&member_id) {
                    m.last_heartbeat = Instant::now();
                    m.sync_waiter = Some(tx);
                }
                (Some(rx), None)
            }
        };
        if let Some((record, response)) = to_save {
            if let Err(e) = self.meta.save_group(&record).await {
                tracing::warn!(group = %group_id, error = %e, "saving the group record failed");
            }
            return response;
        }
        match rx {
            Some(rx) => rx.await.unwrap_or(Err(ResponseError::RebalanceInProgress)),
            None => Err(ResponseError::UnknownServerError),
        }
    }

    /// A member's heartbeat; `Ok` or the error to answer.
    pub async fn heartbeat(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), ResponseError> {
        let group = match self.existing(group_id).await {
            Ok(Some(g)) => g,
            Ok(None) => return Err(ResponseError::UnknownMemberId),
            Err(_) => return Err(ResponseError::CoordinatorNotAvailable),
        };
        let mut g = group.lock().await;
        if g.fenced(instance_id, member_id) {
            return Err(ResponseError::FencedInstanceId);
        }
        let state = g.state;
        let current = g.generation;
        let Some(m) = g.members.get_mut(member_id) else {
            return Err(ResponseError::UnknownMemberId);
        };
        m.last_heartbeat = Instant::now();
        if generation != current {
            return Err(ResponseError::IllegalGeneration);
        }
        match state {
            State::PreparingRebalance => Err(ResponseError::RebalanceInProgress),
            State::Empty | State::Dead => Err(ResponseError::UnknownMemberId),
            State::CompletingRebalance | State::Stable => Ok(()),
        }
    }

    /// Removes members; each is identified by member id, or by instance id for static
    /// members. Returns the error of each.
    pub async fn leave(
        &self,
        group_id: &str,
        members: Vec<(String, Option<String>)>,
    ) -> Result<Vec<Option<ResponseError>>, ResponseError> {
        let group = match self.existing(group_id).await {
            Ok(Some(g)) => g,
            Ok(None) => return Err(ResponseError::UnknownMemberId),
            Err(_) => return Err(ResponseError::CoordinatorNotAvailable),
        };
        let mut g = group.lock().await;
        let mut results = Vec::with_capacity(members.len());
        for (member_id, instance_id) in members {
            if !member_id.is_empty() && g.fenced(instance_id.as_deref(), &member_id) {
                results.push(Some(ResponseError::FencedInstanceId));
                continue;
            }
            let id = match &instance_id {
                Some(instance) => g
                    .members
                    .values()
                    .find(|m| m.instance_id.as_ref() == Some(instance))
                    .map(|m| m.id.clone()),
                None => g
                    .members
                    .contains_key(&member_id)
                    .then_some(member_id.clone()),
            };
            match id {
                Some(id) => {
                    g.remove_member(&id, &self.config);
                    results.push(None);
                }
                None => results.push(Some(ResponseError::UnknownMemberId)),
            }
        }
        self.save(&g).await;
        Ok(results)
    }

    /// Checks that an OffsetCommit may be applied (Kafka's rules for classic groups).
    pub async fn check_commit(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), ResponseError> {
        let group = match self.existing(group_id).await {
            Ok(Some(g)) => g,
            Ok(None) if generation < 0 => return Ok(()),
            Ok(None) => return Err(ResponseError::IllegalGeneration),
            Err(_) => return Err(ResponseError::CoordinatorNotAvailable),
        };
        let mut g = group.lock().await;
        if g.fenced(instance_id, member_id) {
            return Err(ResponseError::FencedInstanceId);
        }
        if generation < 0 && g.state == State::Empty {
            return Ok(());
        }
        // Kafka's order: the member, then its generation, then the barrier (a member of
        // an older generation is told ILLEGAL_GENERATION even while the group completes a
        // rebalance).
        let current = g.generation;
        let state = g.state;
        let Some(m) = g.members.get_mut(member_id) else {
            return Err(ResponseError::UnknownMemberId);
        };
        if generation != current {
            return Err(ResponseError::IllegalGeneration);
        }
        if state == State::CompletingRebalance {
            return Err(ResponseError::RebalanceInProgress);
        }
        m.last_heartbeat = Instant::now();
        Ok(())
    }

    pub async fn view(&self, group_id: &str) -> Result<Option<GroupView>, MetaError> {
        match self.existing(group_id).await? {
            Some(g) => {
                let mut g = g.lock().await;
                g.expire_sessions(Instant::now(), &self.config);
                Ok(Some(g.view()))
            }
            None => Ok(None),
        }
    }

    /// (group, protocol type, state) of every group this coordinator knows.
    pub async fn list(&self) -> Result<Vec<(String, String, State)>, MetaError> {
        let mut out = BTreeMap::new();
        for id in self.meta.group_ids().await? {
            out.insert(id, (String::new(), State::Empty));
        }
        for (id, g) in self.groups.all().await {
            let g = g.lock().await;
            if g.state == State::Dead {
                out.remove(&id);
                continue;
            }
            out.insert(id, (g.protocol_type.clone().unwrap_or_default(), g.state));
        }
        Ok(out.into_iter().map(|(k, (t, s))| (k, t, s)).collect())
    }

    /// Deletes an empty group and its offsets.
    pub async fn delete(&self, group_id: &str) -> Result<(), ResponseError> {
        let group = match self.existing(group_id).await {
            Ok(g) => g,
            Err(_) => return Err(ResponseError::CoordinatorNotAvailable),
        };
        let has_offsets = match self.meta.fetch_offsets(group_id, None).await {
            Ok(o) => !o.is_empty(),
            Err(_) => return Err(ResponseError::CoordinatorNotAvailable),
        };
        if let Some(g) = &group {
            let mut g = g.lock().await;
            // A session that lapsed since the last timer tick ends now, not up to a tick
            // later: a group whose members all went silent is empty on time.
            g.expire_sessions(Instant::now(), &self.config);
            if !g.members.is_empty() {
                return Err(ResponseError::NonEmptyGroup);
            }
            g.state = State::Dead;
        } else if !has_offsets {
            return Err(ResponseError::GroupIdNotFound);
        }
        if let Err(e) = self.meta.delete_group(group_id).await {
            tracing::warn!(group = %group_id, error = %e, "deleting group failed");
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        self.groups.remove(group_id).await;
        Ok(())
    }

    /// Groups with members right now (their offsets never expire).
    pub async fn active(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (id, g) in self.groups.all().await {
            if !g.lock().await.members.is_empty() {
                out.push(id);
            }
        }
        out
    }

    /// Topics the members of a group subscribe to (consumer protocol), for OffsetDelete.
    pub async fn subscribed_topics(&self, group_id: &str) -> HashSet<String> {
        let mut topics = HashSet::new();
        if let Ok(Some(view)) = self.view(group_id).await {
            for m in view.members {
                topics.extend(subscription_topics(&m.metadata));
            }
        }
        topics
    }

    /// Expires sessions and completes barriers whose deadline passed; runs until
    /// `shutdown`.
    pub async fn run_timers(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = shutdown.cancelled() => return,
            }
            for (_, group) in self.groups.all().await {
                let mut g = group.lock().await;
                let now = Instant::now();
                let mut changed = g.expire_sessions(now, &self.config);
                if g.deadline.is_some_and(|d| now >= d) {
                    match g.state {
                        State::PreparingRebalance => g.complete_join(),
                        State::CompletingRebalance => {
                            // The leader never sent the assignment: start over.
                            tracing::info!(group = %g.id, "group.sync_timeout");
                            g.prepare_rebalance(&self.config);
                        }
                        _ => g.deadline = None,
                    }
                    changed = true;
                }
                if changed && matches!(g.state, State::Empty | State::Stable) {
                    self.save(&g).await;
                }
            }
        }
    }
}

/// Topics in a consumer-protocol subscription (version, topics, ...).
pub fn subscription_topics(metadata: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut b = metadata;
    let take = |b: &mut &[u8], n: usize| -> Option<Vec<u8>> {
        if b.len() < n {
            return None;
        }
        let (head, tail) = b.split_at(n);
        *b = tail;
        Some(head.to_vec())
    };
    if take(&mut b, 2).is_none() {
        return out;
    }
    let Some(count) = take(&mut b, 4) else {
        return out;
    };
    let count = i32::from_be_bytes([count[0], count[1], count[2], count[3]]);
    for _ in 0..count.max(0) {
        let Some(len) = take(&mut b, 2) else { break };
        let len = i16::from_be_bytes([len[0], len[1]]);
        let Some(name) = take(&mut b, len.max(0) as usize) else {
            break;
        };
        out.push(String::from_utf8_lossy(&name).into_owned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{JoinGroupResponse, SyncGroupResponse};
    use kafka_protocol::protocol::StrBytes;

    fn s(v: &str) -> StrBytes {
        StrBytes::from_string(v.to_string())
    }

    /// JoinGroup as a client sees it: the outcome as its response at `version`.
    async fn join(
        c: &Coordinator,
        req: JoinGroupRequest,
        version: i16,
        client: ClientInfo,
    ) -> JoinGroupResponse {
        crate::api::join_group::response(c.join(req, version, client).await, version)
    }

    async fn sync(c: &Coordinator, req: SyncGroupRequest, version: i16) -> SyncGroupResponse {
        crate::api::sync_group::response(c.sync(req, version).await, version)
    }

    #[test]
    fn parses_subscriptions() {
        let mut m = vec![0u8, 1, 0, 0, 0, 2];
        for t in ["orders", "pay"] {
            m.extend_from_slice(&(t.len() as i16).to_be_bytes());
            m.extend_from_slice(t.as_bytes());
        }
        m.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(subscription_topics(&m), vec!["orders", "pay"]);
        assert!(subscription_topics(&[1]).is_empty());
    }

    use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
    use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
    use kafka_protocol::messages::GroupId;

    async fn coordinator() -> (Arc<Coordinator>, tempfile::TempDir) {
        coordinator_with(GroupConfig {
            initial_rebalance_delay: Duration::ZERO,
            ..GroupConfig::default()
        })
        .await
    }

    async fn coordinator_with(config: GroupConfig) -> (Arc<Coordinator>, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let kv = icestream_storage::kv::open("embedded", dir.path())
            .await
            .expect("kv");
        let meta = MetaStore::new(kv, Arc::new(icestream_storage::SystemClock));
        let c = Arc::new(Coordinator::new(meta, config));
        tokio::spawn(c.clone().run_timers(CancellationToken::new()));
        (c, dir)
    }

    fn join_request(member: &str, instance: &str, owned: &[u8]) -> JoinGroupRequest {
        JoinGroupRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_session_timeout_ms(6_000)
            .with_rebalance_timeout_ms(10_000)
            .with_member_id(s(member))
            .with_group_instance_id(Some(s(instance)))
            .with_protocol_type(s("consumer"))
            .with_protocols(vec![JoinGroupRequestProtocol::default()
                .with_name(s("range"))
                .with_metadata(Bytes::copy_from_slice(owned))])
    }

    fn client() -> ClientInfo {
        ClientInfo {
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
        }
    }

    fn sync_request(member: &str, generation: i32, assign: &[(&str, &str)]) -> SyncGroupRequest {
        SyncGroupRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_member_id(s(member))
            .with_generation_id(generation)
            .with_assignments(
                assign
                    .iter()
                    .map(|(m, a)| {
                        SyncGroupRequestAssignment::default()
                            .with_member_id(s(m))
                            .with_assignment(Bytes::copy_from_slice(a.as_bytes()))
                    })
                    .collect(),
            )
    }

    /// A static member that restarts (new member id, different owned partitions in its
    /// metadata) takes its old place without a rebalance: the other member's generation
    /// stays valid and the restarted one gets its assignment back, leader or not.
    #[tokio::test]
    async fn static_member_restart_keeps_the_generation() {
        let (c, _dir) = coordinator().await;
        let (ja, jb) = tokio::join!(
            join(&c, join_request("", "a", b"p0"), 7, client()),
            join(&c, join_request("", "b", b"p1"), 7, client())
        );
        assert_eq!(ja.error_code, 0);
        assert_eq!(jb.error_code, 0);
        let generation = ja.generation_id;
        let (leader, follower) = if ja.leader == ja.member_id {
            (ja, jb)
        } else {
            (jb, ja)
        };
        let (lm, fm) = (leader.member_id.to_string(), follower.member_id.to_string());
        let assignments = [(lm.as_str(), "for-leader"), (fm.as_str(), "for-follower")];
        let (sl, sf) = tokio::join!(
            sync(&c, sync_request(&lm, generation, &assignments), 5),
            sync(&c, sync_request(&fm, generation, &[]), 5)
        );
        assert_eq!(&sl.assignment[..], b"for-leader");
        assert_eq!(&sf.assignment[..], b"for-follower");

        // The follower restarts, then the leader.
        let mut ids = [fm, lm];
        let expected = ["for-follower", "for-leader"];
        for k in 0..2 {
            let old_id = ids[k].clone();
            let view = c.view("g").await.expect("view").expect("group");
            let instance = view
                .members
                .iter()
                .find(|m| m.member_id == old_id)
                .and_then(|m| m.instance_id.clone())
                .expect("static member");
            let again = join(&c, join_request("", &instance, b""), 7, client()).await;
            assert_eq!(again.error_code, 0);
            assert_eq!(again.generation_id, generation, "no new generation");
            assert_ne!(again.member_id.to_string(), old_id, "a new member id");
            assert_ne!(again.leader, again.member_id, "never told to assign");
            assert!(again.members.is_empty());
            let synced = sync(&c, sync_request(&again.member_id, generation, &[]), 5).await;
            assert_eq!(synced.error_code, 0);
            assert_eq!(&synced.assignment[..], expected[k].as_bytes());
            ids[k] = again.member_id.to_string();
            assert_eq!(
                c.heartbeat("g", generation, &ids[1 - k], None).await,
                Ok(())
            );
            assert_eq!(
                c.heartbeat("g", generation, &old_id, Some(&instance)).await,
                Err(ResponseError::FencedInstanceId)
            );
        }
    }

    /// A new group's join barrier waits `group.initial.rebalance.delay` for more members,
    /// each newcomer extending it, then answers every member at once with one generation.
    /// (Time is paused: the clock moves only when every task waits.)
    #[tokio::test(start_paused = true)]
    async fn the_join_barrier_waits_out_the_initial_delay() {
        let (c, _dir) = coordinator_with(GroupConfig {
            initial_rebalance_delay: Duration::from_secs(3),
            ..GroupConfig::default()
        })
        .await;
        let join = |instance: &'static str| {
            let c = c.clone();
            tokio::spawn(
                async move { join(&c, join_request("", instance, b""), 7, client()).await },
            )
        };
        let first = join("a");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(!first.is_finished(), "inside the initial delay");
        let second = join("b");
        // 4.5 s after the first join: the second one moved the deadline to 5 s.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(
            !first.is_finished() && !second.is_finished(),
            "delay extended"
        );
        let started = Instant::now();
        let (a, b) = (first.await.expect("join a"), second.await.expect("join b"));
        assert!(
            started.elapsed() <= Duration::from_millis(700),
            "answered at the deadline"
        );
        assert_eq!((a.error_code, b.error_code), (0, 0));
        assert_eq!(a.generation_id, b.generation_id);
        assert_eq!(a.leader, b.leader);
        let leader = if a.leader == a.member_id { &a } else { &b };
        assert_eq!(leader.members.len(), 2, "the leader assigns for both");
    }

    /// A static member away for less than its session timeout takes its place back
    /// without a rebalance; once it stays away longer, it is removed and the group
    /// rebalances. (Time is paused.)
    #[tokio::test(start_paused = true)]
    async fn a_static_member_keeps_its_place_only_within_its_session() {
        let (c, _dir) = coordinator().await;
        let (ja, jb) = tokio::join!(
            join(&c, join_request("", "a", b""), 7, client()),
            join(&c, join_request("", "b", b""), 7, client())
        );
        let generation = ja.generation_id;
        let (a, b) = (ja.member_id.to_string(), jb.member_id.to_string());
        let assignment = [(a.as_str(), "pa"), (b.as_str(), "pb")];
        let leader_sync = |m: &str| {
            if ja.leader == ja.member_id {
                m == a
            } else {
                m == b
            }
        };
        let (sa, sb) = tokio::join!(
            sync(
                &c,
                sync_request(
                    &a,
                    generation,
                    if leader_sync(&a) { &assignment } else { &[] }
                ),
                5
            ),
            sync(
                &c,
                sync_request(
                    &b,
                    generation,
                    if leader_sync(&b) { &assignment } else { &[] }
                ),
                5
            )
        );
        assert_eq!((sa.error_code, sb.error_code), (0, 0));
        // a is silent for 4 s of its 6 s session while b heartbeats.
        for _ in 0..2 {
            tokio::time::sleep(Duration::from_secs(2)).await;
            assert_eq!(c.heartbeat("g", generation, &b, None).await, Ok(()));
        }
        let back = join(&c, join_request("", "a", b""), 7, client()).await;
        assert_eq!(back.error_code, 0);
        assert_eq!(back.generation_id, generation, "no rebalance");
        let a = back.member_id.to_string();
        let synced = sync(&c, sync_request(&a, generation, &[]), 5).await;
        assert_eq!(&synced.assignment[..], b"pa");
        // Now a stays away past its session: it is removed, b must rejoin.
        let mut rebalancing = false;
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_secs(2)).await;
            match c.heartbeat("g", generation, &b, None).await {
                Ok(()) => {}
                Err(ResponseError::RebalanceInProgress) => {
                    rebalancing = true;
                    break;
                }
                Err(e) => panic!("heartbeat: {e:?}"),
            }
        }
        assert!(rebalancing, "a's lapsed session started a rebalance");
        let view = c.view("g").await.expect("view").expect("group");
        assert!(
            view.members.iter().all(|m| m.member_id != a),
            "a was removed"
        );
    }

    /// Static members that close do not leave; once their session lapses the group is
    /// empty and DeleteGroups succeeds at once, not a timer tick later (librdkafka's 0081
    /// deletes such groups exactly one session after closing them).
    #[tokio::test]
    async fn a_lapsed_session_empties_the_group_on_time() {
        let (c, _dir) = coordinator_with(GroupConfig {
            initial_rebalance_delay: Duration::ZERO,
            min_session_timeout_ms: 100,
            ..GroupConfig::default()
        })
        .await;
        let joined = join(
            &c,
            join_request("", "a", b"").with_session_timeout_ms(300),
            7,
            client(),
        )
        .await;
        assert_eq!(joined.error_code, 0);
        let member = joined.member_id.to_string();
        let assignment = [(member.as_str(), "all")];
        let synced = sync(
            &c,
            sync_request(&member, joined.generation_id, &assignment),
            5,
        )
        .await;
        assert_eq!(synced.error_code, 0);
        assert_eq!(c.delete("g").await, Err(ResponseError::NonEmptyGroup));
        tokio::time::sleep(Duration::from_millis(310)).await;
        assert_eq!(c.delete("g").await, Ok(()));
    }
}
