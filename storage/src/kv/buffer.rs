//! The write buffer that gives a backend transaction read-your-writes semantics: writes are
//! kept here until commit and merged over what the backend's snapshot returns.

use std::collections::BTreeMap;
use std::ops::Bound;

use bytes::Bytes;

use super::KeyValue;

/// Buffered writes of one transaction. Cleared ranges are applied before point writes at
/// commit; `clear_range` drops the point writes it covers, so that order is always right.
#[derive(Debug, Default, Clone)]
pub struct WriteBuffer {
    writes: BTreeMap<Vec<u8>, Option<Bytes>>,
    cleared: Vec<(Vec<u8>, Vec<u8>)>,
}

/// What the buffer knows about one key.
pub enum Buffered {
    /// Written (or cleared, `None`) by this transaction.
    Written(Option<Bytes>),
    /// Not touched: read it from the snapshot.
    Untouched,
}

impl WriteBuffer {
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.cleared.is_empty()
    }

    pub fn set(&mut self, key: &[u8], value: &[u8]) {
        self.writes
            .insert(key.to_vec(), Some(Bytes::copy_from_slice(value)));
    }

    pub fn clear(&mut self, key: &[u8]) {
        self.writes.insert(key.to_vec(), None);
    }

    pub fn clear_range(&mut self, begin: &[u8], end: &[u8]) {
        if begin >= end {
            return;
        }
        let covered: Vec<Vec<u8>> = self
            .writes
            .range::<[u8], _>((Bound::Included(begin), Bound::Excluded(end)))
            .map(|(k, _)| k.clone())
            .collect();
        for k in covered {
            self.writes.remove(&k);
        }
        self.cleared.push((begin.to_vec(), end.to_vec()));
    }

    fn in_cleared_range(&self, key: &[u8]) -> bool {
        self.cleared
            .iter()
            .any(|(b, e)| key >= b.as_slice() && key < e.as_slice())
    }

    pub fn lookup(&self, key: &[u8]) -> Buffered {
        if let Some(v) = self.writes.get(key) {
            return Buffered::Written(v.clone());
        }
        if self.in_cleared_range(key) {
            return Buffered::Written(None);
        }
        Buffered::Untouched
    }

    /// How many rows to read from the snapshot so that the merged range read can still
    /// return `limit` rows: `None` means read without limit.
    pub fn snapshot_limit(&self, begin: &[u8], end: &[u8], limit: usize) -> Option<usize> {
        if limit == 0 {
            return None;
        }
        if self
            .cleared
            .iter()
            .any(|(b, e)| b.as_slice() < end && e.as_slice() > begin)
        {
            return None;
        }
        let hidden = self
            .writes
            .range::<[u8], _>((Bound::Included(begin), Bound::Excluded(end)))
            .filter(|(_, v)| v.is_none())
            .count();
        Some(limit + hidden)
    }

    /// Merges snapshot rows of `[begin, end)` (in the requested order) with buffered writes.
    pub fn merge_range(
        &self,
        snapshot: Vec<KeyValue>,
        begin: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Vec<KeyValue> {
        let mut merged: BTreeMap<Vec<u8>, Bytes> = BTreeMap::new();
        for (k, v) in snapshot {
            if !self.in_cleared_range(&k) {
                merged.insert(k.to_vec(), v);
            }
        }
        for (k, v) in self
            .writes
            .range::<[u8], _>((Bound::Included(begin), Bound::Excluded(end)))
        {
            match v {
                Some(v) => merged.insert(k.clone(), v.clone()),
                None => merged.remove(k),
            };
        }
        let take = if limit == 0 { usize::MAX } else { limit };
        let rows = merged.into_iter().map(|(k, v)| (Bytes::from(k), v));
        if reverse {
            rows.rev().take(take).collect()
        } else {
            rows.take(take).collect()
        }
    }

    /// Adds the effect of `later`, a transaction committed after the ones this buffer
    /// holds: applying the result equals applying this buffer, then `later`.
    pub fn absorb(&mut self, later: &WriteBuffer) {
        for (begin, end) in &later.cleared {
            self.clear_range(begin, end);
        }
        for (k, v) in &later.writes {
            self.writes.insert(k.clone(), v.clone());
        }
    }

    /// The cleared ranges, to apply first at commit.
    pub fn cleared_ranges(&self) -> &[(Vec<u8>, Vec<u8>)] {
        &self.cleared
    }

    /// The point writes (`None` = clear), to apply after the cleared ranges.
    pub fn writes(&self) -> impl Iterator<Item = (&Vec<u8>, &Option<Bytes>)> {
        self.writes.iter()
    }

    /// Number of point writes (sets and clears).
    pub fn write_count(&self) -> usize {
        self.writes.len()
    }

    /// Number of bytes buffered, for size limits.
    pub fn size(&self) -> usize {
        self.writes
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, |v| v.len()))
            .sum::<usize>()
            + self
                .cleared
                .iter()
                .map(|(b, e)| b.len() + e.len())
                .sum::<usize>()
    }
}
