//! The key layout of the metadata store. Every key starts with a one-byte tag; integers are
//! big-endian so that keys sort numerically. Offsets are never negative in keys.
//!
//! | tag | key                                   | value                          |
//! |-----|---------------------------------------|--------------------------------|
//! | `t` | topic name                            | topic record (JSON)            |
//! | `i` | topic id                              | topic name                     |
//! | `d` | topic id                              | deleted topic awaiting cleanup |
//! | `p` | topic id, partition                   | partition state                |
//! | `x` | topic id, partition, last offset      | index entry                    |
//! | `q` | topic id, partition, producer id      | producer state                 |
//! | `s` | segment id                            | segment record                 |
//! | `c` | counter name                          | i64                            |
//! | `z` | transactional id                      | transaction record (JSON)      |
//! | `v` | transactional id                      | (empty) the transaction is ongoing or decided but not complete |
//! | `a` | topic id, partition, abort marker offset | aborted transaction         |
//! | `y` | producer id, group (u16 length + id), topic id, partition | offset committed in a transaction, until it ends |
//! | `l` | lease name                            | lease holder and expiry (JSON) |
//! | `k` | topic id                              | compaction round intent (JSON) |
//! | `g` | group id                              | consumer group record (JSON)   |
//! | `b` | node id                               | broker registration (JSON)     |
//! | `o` | group (u16 length + id), topic id, partition | committed offset        |
//! | `r` | topic id                              | file rewrite intent (JSON)     |
//! | `Ri` | schema id (u32)                      | registered schema (JSON)       |
//! | `Rf` | schema fingerprint                   | schema id                      |
//! | `Rv` | subject (u16 length + name), version (u32) | subject version (JSON)   |
//! | `Rc`, `Rm` | subject (empty: global)        | compatibility level, mode      |
//! | `Su` | user (u16 length + name), mechanism  | SCRAM credential (JSON)        |
//! | `Sa` | ACL binding (JSON)                   | (empty)                        |

use uuid::Uuid;

pub const TOPIC: u8 = b't';
pub const TOPIC_ID: u8 = b'i';
pub const DELETED_TOPIC: u8 = b'd';
pub const PARTITION: u8 = b'p';
pub const INDEX: u8 = b'x';
pub const PRODUCER: u8 = b'q';
pub const SEGMENT: u8 = b's';
pub const COUNTER: u8 = b'c';
pub const TRANSACTIONAL_ID: u8 = b'z';
pub const ABORTED: u8 = b'a';
pub const ACTIVE_TXN: u8 = b'v';
pub const TXN_OFFSET: u8 = b'y';
pub const REGISTRY: u8 = b'R';
pub const SECURITY: u8 = b'S';

fn with_id(tag: u8, id: Uuid, extra: usize) -> Vec<u8> {
    let mut k = Vec::with_capacity(17 + extra);
    k.push(tag);
    k.extend_from_slice(id.as_bytes());
    k
}

pub fn topic(name: &str) -> Vec<u8> {
    let mut k = vec![TOPIC];
    k.extend_from_slice(name.as_bytes());
    k
}

pub fn topic_id(id: Uuid) -> Vec<u8> {
    with_id(TOPIC_ID, id, 0)
}

pub fn deleted_topic(id: Uuid) -> Vec<u8> {
    with_id(DELETED_TOPIC, id, 0)
}

pub fn partition(id: Uuid, partition: i32) -> Vec<u8> {
    let mut k = with_id(PARTITION, id, 4);
    k.extend_from_slice(&(partition as u32).to_be_bytes());
    k
}

/// Prefix of all partition states of a topic.
pub fn partitions_of(id: Uuid) -> Vec<u8> {
    with_id(PARTITION, id, 0)
}

/// Prefix of a partition's index entries.
pub fn index_prefix(id: Uuid, partition: i32) -> Vec<u8> {
    let mut k = with_id(INDEX, id, 12);
    k.extend_from_slice(&(partition as u32).to_be_bytes());
    k
}

/// Prefix of all index entries of a topic.
pub fn index_of_topic(id: Uuid) -> Vec<u8> {
    with_id(INDEX, id, 0)
}

pub fn index(id: Uuid, partition: i32, last_offset: i64) -> Vec<u8> {
    let mut k = index_prefix(id, partition);
    k.extend_from_slice(&(last_offset.max(0) as u64).to_be_bytes());
    k
}

/// The last offset encoded in an index key.
pub fn index_last_offset(key: &[u8]) -> Option<i64> {
    let tail: [u8; 8] = key.get(key.len().checked_sub(8)?..)?.try_into().ok()?;
    Some(u64::from_be_bytes(tail) as i64)
}

pub fn producer(id: Uuid, partition: i32, producer_id: i64) -> Vec<u8> {
    let mut k = with_id(PRODUCER, id, 12);
    k.extend_from_slice(&(partition as u32).to_be_bytes());
    k.extend_from_slice(&(producer_id as u64).to_be_bytes());
    k
}

/// Prefix of the producer states of a partition.
pub fn producers_of_partition(id: Uuid, partition: i32) -> Vec<u8> {
    let mut k = with_id(PRODUCER, id, 4);
    k.extend_from_slice(&(partition as u32).to_be_bytes());
    k
}

/// Prefix of all producer states of a topic.
pub fn producers_of_topic(id: Uuid) -> Vec<u8> {
    with_id(PRODUCER, id, 0)
}

pub fn segment(id: Uuid) -> Vec<u8> {
    with_id(SEGMENT, id, 0)
}

pub fn counter(name: &str) -> Vec<u8> {
    let mut k = vec![COUNTER];
    k.extend_from_slice(name.as_bytes());
    k
}

pub fn transactional_id(id: &str) -> Vec<u8> {
    let mut k = vec![TRANSACTIONAL_ID];
    k.extend_from_slice(id.as_bytes());
    k
}

/// Prefix of every transaction record.
pub fn transactional_ids() -> Vec<u8> {
    vec![TRANSACTIONAL_ID]
}

/// Marks a transactional id whose transaction is ongoing or not complete yet.
pub fn active_txn(id: &str) -> Vec<u8> {
    let mut k = vec![ACTIVE_TXN];
    k.extend_from_slice(id.as_bytes());
    k
}

/// Prefix of the active-transaction marks.
pub fn active_txns() -> Vec<u8> {
    vec![ACTIVE_TXN]
}

/// Prefix of a partition's aborted transactions.
pub fn aborted_prefix(id: Uuid, partition: i32) -> Vec<u8> {
    let mut k = with_id(ABORTED, id, 12);
    k.extend_from_slice(&(partition as u32).to_be_bytes());
    k
}

/// Prefix of all aborted transactions of a topic.
pub fn aborted_of_topic(id: Uuid) -> Vec<u8> {
    with_id(ABORTED, id, 0)
}

pub fn aborted(id: Uuid, partition: i32, marker_offset: i64) -> Vec<u8> {
    let mut k = aborted_prefix(id, partition);
    k.extend_from_slice(&(marker_offset.max(0) as u64).to_be_bytes());
    k
}

/// Prefix of a producer's transactional offsets for a group.
pub fn txn_offsets(producer_id: i64, group: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(11 + group.len() + 20);
    k.push(TXN_OFFSET);
    k.extend_from_slice(&(producer_id as u64).to_be_bytes());
    k.extend_from_slice(&(group.len() as u16).to_be_bytes());
    k.extend_from_slice(group.as_bytes());
    k
}

pub fn txn_offset(producer_id: i64, group: &str, topic_id: Uuid, partition: i32) -> Vec<u8> {
    let mut k = txn_offsets(producer_id, group);
    k.extend_from_slice(topic_id.as_bytes());
    k.extend_from_slice(&(partition as u32).to_be_bytes());
    k
}

/// The topic id and partition at the end of a transactional offset key.
pub fn txn_offset_partition(key: &[u8]) -> Option<(Uuid, i32)> {
    let tail = key.get(key.len().checked_sub(20)?..)?;
    let id = Uuid::from_bytes(tail.get(..16)?.try_into().ok()?);
    let p = u32::from_be_bytes(tail.get(16..20)?.try_into().ok()?) as i32;
    Some((id, p))
}

/// The uuid that follows the tag byte of a key.
pub fn uuid_after_tag(key: &[u8]) -> Option<Uuid> {
    let bytes: [u8; 16] = key.get(1..17)?.try_into().ok()?;
    Some(Uuid::from_bytes(bytes))
}

pub fn schema(id: i32) -> Vec<u8> {
    let mut k = vec![REGISTRY, b'i'];
    k.extend_from_slice(&(id as u32).to_be_bytes());
    k
}

pub fn schema_fingerprint(fingerprint: &[u8]) -> Vec<u8> {
    let mut k = vec![REGISTRY, b'f'];
    k.extend_from_slice(fingerprint);
    k
}

/// Prefix of every subject version.
pub fn all_subject_versions() -> Vec<u8> {
    vec![REGISTRY, b'v']
}

/// Prefix of a subject's versions.
pub fn subject_versions(subject: &str) -> Vec<u8> {
    let mut k = all_subject_versions();
    k.extend_from_slice(&(subject.len().min(u16::MAX as usize) as u16).to_be_bytes());
    k.extend_from_slice(subject.as_bytes());
    k
}

pub fn subject_version(subject: &str, version: i32) -> Vec<u8> {
    let mut k = subject_versions(subject);
    k.extend_from_slice(&(version as u32).to_be_bytes());
    k
}

/// The subject of a subject version key.
pub fn subject_of_version(key: &[u8]) -> Option<String> {
    let rest = key.strip_prefix(&[REGISTRY, b'v'][..])?;
    let len = u16::from_be_bytes([*rest.first()?, *rest.get(1)?]) as usize;
    let name = rest.get(2..2 + len)?;
    Some(String::from_utf8_lossy(name).into_owned())
}

pub fn registry_setting(kind: u8, subject: &str) -> Vec<u8> {
    let mut k = vec![REGISTRY, kind];
    k.extend_from_slice(subject.as_bytes());
    k
}

/// A user's SCRAM credential for one mechanism.
pub fn scram_credential(user: &str, mechanism: &str) -> Vec<u8> {
    let mut k = scram_users_of(user);
    k.extend_from_slice(mechanism.as_bytes());
    k
}

/// Every credential of a user.
pub fn scram_users_of(user: &str) -> Vec<u8> {
    let mut k = vec![SECURITY, b'u'];
    k.extend_from_slice(&(user.len() as u16).to_be_bytes());
    k.extend_from_slice(user.as_bytes());
    k
}

/// Every SCRAM credential.
pub fn scram_credentials() -> Vec<u8> {
    vec![SECURITY, b'u']
}

/// The user and mechanism of a credential key.
pub fn scram_credential_of(key: &[u8]) -> Option<(String, String)> {
    let rest = key.strip_prefix(&[SECURITY, b'u'][..])?;
    let len = u16::from_be_bytes([*rest.first()?, *rest.get(1)?]) as usize;
    let user = rest.get(2..2 + len)?;
    let mechanism = rest.get(2 + len..)?;
    Some((
        String::from_utf8_lossy(user).into_owned(),
        String::from_utf8_lossy(mechanism).into_owned(),
    ))
}

/// An ACL binding (its JSON is the key: one key per distinct binding).
pub fn acl(binding_json: &[u8]) -> Vec<u8> {
    let mut k = acls();
    k.extend_from_slice(binding_json);
    k
}

/// Every ACL binding.
pub fn acls() -> Vec<u8> {
    vec![SECURITY, b'a']
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_distinct() {
        let mut tags = vec![
            TOPIC,
            TOPIC_ID,
            DELETED_TOPIC,
            PARTITION,
            INDEX,
            PRODUCER,
            SEGMENT,
            COUNTER,
            TRANSACTIONAL_ID,
            ABORTED,
            ACTIVE_TXN,
            TXN_OFFSET,
            REGISTRY,
            SECURITY,
        ];
        // Tags of other modules (leases, intents, groups, brokers, offsets, rewrites).
        tags.extend_from_slice(b"lkgbor");
        let n = tags.len();
        tags.sort_unstable();
        tags.dedup();
        assert_eq!(tags.len(), n);
    }

    #[test]
    fn index_keys_sort_by_offset() {
        let id = Uuid::new_v4();
        let a = index(id, 1, 9);
        let b = index(id, 1, 10);
        let c = index(id, 1, 1 << 40);
        assert!(a < b && b < c);
        assert!(index(id, 1, i64::MAX) < index(id, 2, 0));
        assert_eq!(index_last_offset(&c), Some(1 << 40));
        assert!(a.starts_with(&index_prefix(id, 1)));
        assert_eq!(uuid_after_tag(&a), Some(id));
    }
}
