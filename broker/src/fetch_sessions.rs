//! Incremental fetch sessions (KIP-227). A consumer of many partitions sends its whole
//! partition list once (a full fetch request with epoch 0); the broker keeps it in a
//! session and answers with the session's id. Later requests (epoch 1, 2, ...) name only
//! the partitions whose fetch position changed, and those the consumer no longer wants; the
//! response carries only the partitions with something new: records, a moved high
//! watermark, last stable offset or log start, or an error.
//!
//! This module is the session cache: it never reads the log and never builds a response.
//! `api/fetch.rs` asks it what a request covers (`begin`), reads those partitions, and hands
//! back what it found (`open` for a full request, `finish` for an incremental one).
//!
//! The cache is bounded twice, as memory must be whatever clients do: at most `slots`
//! sessions, and at most `max_partitions` cached partitions over all of them. When it is
//! full, a new session takes the place of one idle for two minutes, or else of the smallest
//! session if that is smaller than the new one (as Kafka's `FetchSessionCache` does);
//! otherwise it is not created, and its consumer goes on with full requests.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_protocol::ResponseError;
use tokio::time::Instant;

use crate::metrics;

/// A session idle this long may be evicted by any new one (Kafka's
/// `min.incremental.fetch.session.eviction.ms`).
pub const EVICTION_IDLE: Duration = Duration::from_secs(120);

/// The epoch of a full request that opens a new session.
const INITIAL_EPOCH: i32 = 0;
/// The epoch of a full request that wants no session.
const FINAL_EPOCH: i32 = -1;

/// How a session names topics: by name (Fetch v7–v12) or by id (v13+). A session keeps the
/// kind it was opened with.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TopicKey {
    Name(Arc<str>),
    Id(uuid::Uuid),
}

/// One partition a fetch reads, with the client's position in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Want {
    pub topic: TopicKey,
    pub partition: i32,
    pub fetch_offset: i64,
    pub max_bytes: i32,
}

/// What a response told the client about a partition, or what the session last told it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    pub high_watermark: i64,
    pub last_stable: i64,
    pub log_start: i64,
}

impl Seen {
    /// Nothing told yet: the first answer always differs.
    const NONE: Seen = Seen {
        high_watermark: -1,
        last_stable: -1,
        log_start: -1,
    };
}

/// What reading one partition produced, for deciding whether an incremental response
/// carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub seen: Seen,
    /// The partition returned records.
    pub records: bool,
    /// The partition is answered with an error (always carried, and carried again once
    /// the error is gone).
    pub error: bool,
    /// The client is sent to another replica (always carried).
    pub redirect: bool,
}

/// What a fetch request covers.
#[derive(Debug, PartialEq, Eq)]
pub enum Begin {
    /// No session: read and answer every partition of the request.
    Sessionless(Vec<Want>),
    /// A full request that asks for a session: read and answer every partition, then
    /// `open` a session with what was answered.
    Full(Vec<Want>),
    /// An incremental request of session `id`: read the session's partitions (`seen`
    /// says what the client was last told of each: a partition still there need not be
    /// read), then `finish` with the epoch and slots given here to learn which of them to
    /// answer.
    Incremental {
        id: i32,
        epoch: i32,
        wants: Vec<Want>,
        seen: Vec<Seen>,
        slots: Vec<u32>,
    },
    /// The request is answered with this error alone.
    Refused(ResponseError),
}

struct Entry {
    want: Want,
    seen: Seen,
}

struct Session {
    /// The epoch the next request must carry.
    epoch: i32,
    uses_ids: bool,
    /// The partitions, in slots that stay put until one is forgotten.
    entries: Vec<Entry>,
    index: HashMap<(TopicKey, i32), u32>,
    /// The slots in the order they are read: partitions that returned records move to
    /// the end, so that under `max_bytes` the others come first next time.
    order: Vec<u32>,
    last_used: Instant,
}

impl Session {
    fn new(uses_ids: bool, entries: Vec<Entry>, now: Instant) -> Self {
        let mut session = Session {
            epoch: next_epoch(INITIAL_EPOCH),
            uses_ids,
            entries,
            index: HashMap::new(),
            order: Vec::new(),
            last_used: now,
        };
        session.compact(|_| true);
        session
    }

    /// Keeps the entries `keep` accepts (and the first of two for one partition), in
    /// read order, in fresh slots.
    fn compact(&mut self, keep: impl Fn(&Entry) -> bool) {
        let mut slots: Vec<Option<Entry>> = std::mem::take(&mut self.entries)
            .into_iter()
            .map(Some)
            .collect();
        let order = if self.order.len() == slots.len() {
            std::mem::take(&mut self.order)
        } else {
            (0..slots.len() as u32).collect()
        };
        self.index.clear();
        for slot in order {
            let Some(entry) = slots.get_mut(slot as usize).and_then(Option::take) else {
                continue;
            };
            let key = (entry.want.topic.clone(), entry.want.partition);
            if keep(&entry) && !self.index.contains_key(&key) {
                self.index.insert(key, self.entries.len() as u32);
                self.entries.push(entry);
            }
        }
        self.order = (0..self.entries.len() as u32).collect();
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[derive(Default)]
struct Cache {
    sessions: HashMap<i32, Session>,
    /// Cached partitions over all sessions.
    partitions: usize,
}

impl Cache {
    fn remove(&mut self, id: i32) -> Option<Session> {
        let session = self.sessions.remove(&id)?;
        self.partitions -= session.len();
        metrics::gauge_add(&metrics::FETCH_SESSIONS, -1);
        metrics::gauge_add(&metrics::FETCH_SESSION_PARTITIONS, -(session.len() as i64));
        Some(session)
    }
}

pub struct FetchSessions {
    slots: usize,
    max_partitions: usize,
    cache: Mutex<Cache>,
}

impl FetchSessions {
    /// A cache of at most `slots` sessions (0: no sessions) holding at most
    /// `max_partitions` partitions together.
    pub fn new(slots: usize, max_partitions: usize) -> Self {
        FetchSessions {
            slots,
            max_partitions,
            cache: Mutex::new(Cache::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sessions cached and partitions in them.
    pub fn len(&self) -> (usize, usize) {
        let cache = self.lock();
        (cache.sessions.len(), cache.partitions)
    }

    /// Decides what a request covers (Kafka's `FetchManager.newContext`). A full request
    /// (epoch 0 or -1) closes the session it names; epoch 0 asks for a new one. An
    /// incremental request must name a cached session and carry its next epoch; its
    /// partitions are added to the session or update their positions there, and
    /// `forgotten` leave it.
    pub fn begin(
        &self,
        session_id: i32,
        epoch: i32,
        uses_ids: bool,
        wants: Vec<Want>,
        forgotten: &[(TopicKey, i32)],
        now: Instant,
    ) -> Begin {
        if epoch == INITIAL_EPOCH || epoch == FINAL_EPOCH {
            if session_id != 0 {
                self.lock().remove(session_id);
            }
            return if epoch == INITIAL_EPOCH && self.slots > 0 {
                Begin::Full(wants)
            } else {
                Begin::Sessionless(wants)
            };
        }
        if epoch < FINAL_EPOCH {
            return Begin::Refused(ResponseError::InvalidFetchSessionEpoch);
        }
        let mut cache = self.lock();
        let cache = &mut *cache;
        let Some(session) = cache.sessions.get_mut(&session_id) else {
            return Begin::Refused(ResponseError::FetchSessionIdNotFound);
        };
        if session.epoch != epoch {
            return Begin::Refused(ResponseError::InvalidFetchSessionEpoch);
        }
        if session.uses_ids != uses_ids {
            return Begin::Refused(ResponseError::FetchSessionTopicIdError);
        }
        let before = session.len();
        let gone: HashSet<(TopicKey, i32)> = forgotten.iter().cloned().collect();
        if gone.iter().any(|key| session.index.contains_key(key)) {
            session.compact(|e| !gone.contains(&(e.want.topic.clone(), e.want.partition)));
        }
        for want in wants {
            let key = (want.topic.clone(), want.partition);
            match session.index.get(&key) {
                Some(&slot) => session.entries[slot as usize].want = want,
                None => {
                    let slot = session.entries.len() as u32;
                    session.index.insert(key, slot);
                    session.order.push(slot);
                    session.entries.push(Entry {
                        want,
                        seen: Seen::NONE,
                    });
                }
            }
        }
        let after = session.len();
        session.epoch = next_epoch(epoch);
        session.last_used = now;
        let next = session.epoch;
        let slots = session.order.clone();
        let (read, seen) = slots
            .iter()
            .map(|&slot| {
                let e = &session.entries[slot as usize];
                (e.want.clone(), e.seen)
            })
            .unzip();
        cache.partitions = cache.partitions - before + after;
        metrics::gauge_add(
            &metrics::FETCH_SESSION_PARTITIONS,
            after as i64 - before as i64,
        );
        if cache.partitions > self.max_partitions {
            // The session grew past what the cache holds: drop it; the client starts
            // again with a full request, which gets a session only if there is room.
            cache.remove(session_id);
            return Begin::Refused(ResponseError::FetchSessionIdNotFound);
        }
        if after == 0 {
            cache.remove(session_id);
            return Begin::Sessionless(Vec::new());
        }
        metrics::inc(&metrics::FETCH_INCREMENTAL_REQUESTS);
        Begin::Incremental {
            id: session_id,
            epoch: next,
            wants: read,
            seen,
            slots,
        }
    }

    /// Opens a session holding `answered` (each partition of a full request with what its
    /// response said), evicting another if the cache is full and one may go. Returns the
    /// new session's id, or 0 when there is no room (the client then keeps sending full
    /// requests).
    pub fn open(&self, uses_ids: bool, answered: Vec<(Want, Seen)>, now: Instant) -> i32 {
        let n = answered.len();
        if self.slots == 0 || n == 0 || n > self.max_partitions {
            return 0;
        }
        let mut cache = self.lock();
        while cache.sessions.len() >= self.slots || cache.partitions + n > self.max_partitions {
            let stale = cache
                .sessions
                .iter()
                .filter(|(_, s)| now.saturating_duration_since(s.last_used) >= EVICTION_IDLE)
                .min_by_key(|(_, s)| s.last_used)
                .map(|(id, _)| *id);
            let smaller = || {
                cache
                    .sessions
                    .iter()
                    .filter(|(_, s)| s.len() < n)
                    .min_by_key(|(_, s)| (s.len(), s.last_used))
                    .map(|(id, _)| *id)
            };
            match stale.or_else(smaller) {
                Some(id) => {
                    cache.remove(id);
                    metrics::inc(&metrics::FETCH_SESSION_EVICTIONS);
                }
                None => return 0,
            }
        }
        let id = loop {
            let id = rand::random::<i32>() & i32::MAX;
            if id != 0 && !cache.sessions.contains_key(&id) {
                break id;
            }
        };
        // A request naming a partition twice leaves it once in the session.
        let entries = answered
            .into_iter()
            .map(|(want, seen)| Entry { want, seen })
            .collect();
        let session = Session::new(uses_ids, entries, now);
        let n = session.len();
        cache.partitions += n;
        cache.sessions.insert(id, session);
        metrics::gauge_add(&metrics::FETCH_SESSIONS, 1);
        metrics::gauge_add(&metrics::FETCH_SESSION_PARTITIONS, n as i64);
        id
    }

    /// Records what an incremental request's reads found (`outcomes[i]` for `slots[i]`
    /// as `begin` returned them) and says which partitions the response carries: those
    /// with records, errors or a redirect, and those whose high watermark, last stable
    /// offset or log start moved since the session last told the client. Partitions that
    /// returned records move to the end of the read order. Refused if another request of
    /// the session came in between (the slots would be stale), or the session is gone.
    pub fn finish(
        &self,
        id: i32,
        epoch: i32,
        slots: &[u32],
        outcomes: &[Outcome],
    ) -> Result<Vec<bool>, ResponseError> {
        let mut cache = self.lock();
        let Some(session) = cache.sessions.get_mut(&id) else {
            return Err(ResponseError::FetchSessionIdNotFound);
        };
        if session.epoch != epoch || slots.len() != session.order.len() {
            return Err(ResponseError::InvalidFetchSessionEpoch);
        }
        let mut carried = Vec::with_capacity(outcomes.len());
        let mut moved = false;
        for (&slot, outcome) in slots.iter().zip(outcomes) {
            let Some(entry) = session.entries.get_mut(slot as usize) else {
                carried.push(false);
                continue;
            };
            let changed = entry.seen != outcome.seen;
            entry.seen = if outcome.error {
                Seen::NONE
            } else {
                outcome.seen
            };
            carried.push(outcome.records || outcome.error || outcome.redirect || changed);
            moved |= outcome.records;
        }
        if moved {
            let with = |records: bool| {
                slots
                    .iter()
                    .zip(outcomes)
                    .filter(move |(_, o)| o.records == records)
                    .map(|(&slot, _)| slot)
            };
            session.order = with(false).chain(with(true)).collect();
        }
        Ok(carried)
    }
}

/// Kafka's `FetchMetadata.nextEpoch`: 1, 2, ... wrapping from `i32::MAX` to 1.
fn next_epoch(epoch: i32) -> i32 {
    if epoch < 0 {
        FINAL_EPOCH
    } else if epoch == i32::MAX {
        1
    } else {
        epoch + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str) -> TopicKey {
        TopicKey::Name(Arc::from(name))
    }

    fn want(t: &str, partition: i32, fetch_offset: i64) -> Want {
        Want {
            topic: topic(t),
            partition,
            fetch_offset,
            max_bytes: 1 << 20,
        }
    }

    fn seen(hw: i64) -> Seen {
        Seen {
            high_watermark: hw,
            last_stable: hw,
            log_start: 0,
        }
    }

    fn quiet(hw: i64) -> Outcome {
        Outcome {
            seen: seen(hw),
            records: false,
            error: false,
            redirect: false,
        }
    }

    fn open(cache: &FetchSessions, wants: &[Want], now: Instant) -> i32 {
        let answered = wants.iter().map(|w| (w.clone(), seen(10))).collect();
        cache.open(false, answered, now)
    }

    fn incremental(
        cache: &FetchSessions,
        id: i32,
        epoch: i32,
        wants: Vec<Want>,
        forgotten: &[(TopicKey, i32)],
    ) -> (i32, Vec<Want>, Vec<u32>) {
        match cache.begin(id, epoch, false, wants, forgotten, Instant::now()) {
            Begin::Incremental {
                id: got,
                epoch,
                wants,
                slots,
                ..
            } => {
                assert_eq!(got, id);
                (epoch, wants, slots)
            }
            other => panic!("expected an incremental fetch, got {other:?}"),
        }
    }

    #[test]
    fn epochs_are_kafkas() {
        assert_eq!(next_epoch(0), 1);
        assert_eq!(next_epoch(7), 8);
        assert_eq!(next_epoch(i32::MAX), 1);
        assert_eq!(next_epoch(-1), -1);
    }

    #[test]
    fn a_full_request_opens_a_session_and_incremental_ones_carry_only_changes() {
        let cache = FetchSessions::new(10, 1000);
        let wants = vec![want("a", 0, 5), want("a", 1, 7), want("b", 0, 0)];
        assert_eq!(
            cache.begin(0, 0, false, wants.clone(), &[], Instant::now()),
            Begin::Full(wants.clone())
        );
        let id = open(&cache, &wants, Instant::now());
        assert!(id > 0);
        assert_eq!(cache.len(), (1, 3));

        // Epoch 1 with no partitions: the session's three are read at their positions.
        let (epoch, read, slots) = incremental(&cache, id, 1, vec![], &[]);
        assert_eq!(epoch, 2);
        assert_eq!(read, wants);
        // Only a/1 has records; b/0's high watermark moved; a/0 is unchanged.
        let outcomes = [
            quiet(10),
            Outcome {
                records: true,
                seen: seen(12),
                ..quiet(12)
            },
            quiet(11),
        ];
        assert_eq!(
            cache.finish(id, epoch, &slots, &outcomes),
            Ok(vec![false, true, true])
        );

        // The client moved a/1 to 12 and forgets b/0; a/1 had records, so it is read last.
        let (epoch, read, slots) =
            incremental(&cache, id, 2, vec![want("a", 1, 12)], &[(topic("b"), 0)]);
        assert_eq!(read, vec![want("a", 0, 5), want("a", 1, 12)]);
        assert_eq!(cache.len(), (1, 2));
        // Nothing changed: nothing is carried.
        assert_eq!(
            cache.finish(id, epoch, &slots, &[quiet(10), quiet(12)]),
            Ok(vec![false, false])
        );
    }

    #[test]
    fn wrong_epochs_unknown_ids_and_mixed_topic_naming_are_refused() {
        let cache = FetchSessions::new(10, 1000);
        let id = open(&cache, &[want("a", 0, 0)], Instant::now());
        let refused = |id, epoch, uses_ids| match cache.begin(
            id,
            epoch,
            uses_ids,
            vec![],
            &[],
            Instant::now(),
        ) {
            Begin::Refused(e) => Some(e),
            _ => None,
        };
        assert_eq!(
            refused(id, 2, false),
            Some(ResponseError::InvalidFetchSessionEpoch)
        );
        assert_eq!(
            refused(id + 1, 1, false),
            Some(ResponseError::FetchSessionIdNotFound)
        );
        assert_eq!(
            refused(id, 1, true),
            Some(ResponseError::FetchSessionTopicIdError)
        );
        assert_eq!(
            refused(id, -2, false),
            Some(ResponseError::InvalidFetchSessionEpoch)
        );
        // A request that raced another of the same session is refused at the end.
        let (epoch, _, slots) = incremental(&cache, id, 1, vec![], &[]);
        let _ = incremental(&cache, id, 2, vec![], &[]);
        assert_eq!(
            cache.finish(id, epoch, &slots, &[quiet(10)]),
            Err(ResponseError::InvalidFetchSessionEpoch)
        );
    }

    #[test]
    fn full_requests_close_the_session_they_name() {
        let cache = FetchSessions::new(10, 1000);
        let id = open(&cache, &[want("a", 0, 0)], Instant::now());
        assert_eq!(
            cache.begin(id, -1, false, vec![want("a", 0, 3)], &[], Instant::now()),
            Begin::Sessionless(vec![want("a", 0, 3)])
        );
        assert_eq!(cache.len(), (0, 0));
        let id = open(&cache, &[want("a", 0, 0)], Instant::now());
        assert!(matches!(
            cache.begin(id, 0, false, vec![], &[], Instant::now()),
            Begin::Full(_)
        ));
        assert_eq!(cache.len(), (0, 0));
        // Forgetting every partition ends the session too.
        let id = open(&cache, &[want("a", 0, 0)], Instant::now());
        assert_eq!(
            cache.begin(id, 1, false, vec![], &[(topic("a"), 0)], Instant::now()),
            Begin::Sessionless(vec![])
        );
        assert_eq!(cache.len(), (0, 0));
    }

    #[test]
    fn errors_are_carried_and_carried_again_when_they_clear() {
        let cache = FetchSessions::new(10, 1000);
        let id = open(&cache, &[want("a", 0, 0)], Instant::now());
        let (epoch, _, slots) = incremental(&cache, id, 1, vec![], &[]);
        let error = Outcome {
            error: true,
            ..quiet(10)
        };
        assert_eq!(cache.finish(id, epoch, &slots, &[error]), Ok(vec![true]));
        let (epoch, _, slots) = incremental(&cache, id, 2, vec![], &[]);
        assert_eq!(
            cache.finish(id, epoch, &slots, &[quiet(10)]),
            Ok(vec![true])
        );
        let (epoch, _, slots) = incremental(&cache, id, 3, vec![], &[]);
        assert_eq!(
            cache.finish(id, epoch, &slots, &[quiet(10)]),
            Ok(vec![false])
        );
    }

    #[test]
    fn the_cache_is_bounded_in_sessions_and_partitions() {
        let t0 = Instant::now();
        let cache = FetchSessions::new(2, 10);
        let small = open(&cache, &[want("a", 0, 0)], t0);
        let big = open(&cache, &[want("b", 0, 0), want("b", 1, 0)], t0);
        assert_eq!(cache.len(), (2, 3));
        // Full: a session of one partition cannot push out either.
        assert_eq!(open(&cache, &[want("c", 0, 0)], t0), 0);
        // A bigger one takes the smallest's place.
        let c: Vec<Want> = (0..3).map(|p| want("c", p, 0)).collect();
        let bigger = open(&cache, &c, t0);
        assert!(bigger > 0);
        assert!(matches!(
            cache.begin(small, 1, false, vec![], &[], t0),
            Begin::Refused(ResponseError::FetchSessionIdNotFound)
        ));
        assert_eq!(cache.len(), (2, 5));
        // Too many partitions for the whole cache: no session.
        let huge: Vec<Want> = (0..11).map(|p| want("d", p, 0)).collect();
        assert_eq!(open(&cache, &huge, t0), 0);
        // After two idle minutes, any session may be replaced, the oldest first.
        let later = t0 + EVICTION_IDLE;
        let (_, _) = match cache.begin(bigger, 1, false, vec![], &[], later) {
            Begin::Incremental { id, epoch, .. } => (id, epoch),
            other => panic!("{other:?}"),
        };
        let fresh = open(&cache, &[want("e", 0, 0)], later);
        assert!(fresh > 0);
        assert!(matches!(
            cache.begin(big, 1, false, vec![], &[], later),
            Begin::Refused(ResponseError::FetchSessionIdNotFound)
        ));
        assert_eq!(cache.len(), (2, 4));
        // Growing a session past the partition bound drops it.
        let more: Vec<Want> = (0..7).map(|p| want("f", p, 0)).collect();
        assert!(matches!(
            cache.begin(fresh, 1, false, more, &[], later),
            Begin::Refused(ResponseError::FetchSessionIdNotFound)
        ));
        assert_eq!(cache.len(), (1, 3));
        // No slots: no sessions at all.
        let off = FetchSessions::new(0, 10);
        assert_eq!(
            off.begin(0, 0, false, vec![want("a", 0, 0)], &[], t0),
            Begin::Sessionless(vec![want("a", 0, 0)])
        );
    }
}
