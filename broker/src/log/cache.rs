//! A byte-bounded cache of record batch data, evicting the oldest insertions first: a
//! log's hot data is its newest.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::Mutex;

use bytes::Bytes;

/// What a cached value weighs against the capacity.
pub trait Weighed: Clone {
    fn weight(&self) -> usize;
}

impl Weighed for Bytes {
    fn weight(&self) -> usize {
        self.len()
    }
}

pub struct ByteCache<K, V = Bytes> {
    inner: Mutex<Inner<K, V>>,
    capacity: usize,
}

struct Inner<K, V> {
    map: HashMap<K, V>,
    order: VecDeque<K>,
    size: usize,
}

impl<K: Hash + Eq + Clone, V: Weighed> ByteCache<K, V> {
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                order: VecDeque::new(),
                size: 0,
            }),
            capacity,
        }
    }

    pub fn get(&self, key: &K) -> Option<V> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.map.get(key).cloned()
    }

    /// Inserts `value`, evicting the oldest entries to stay within capacity. Values larger
    /// than a quarter of the capacity are not cached.
    pub fn insert(&self, key: K, value: V) {
        let weight = value.weight();
        if weight > self.capacity / 4 {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = inner.map.insert(key.clone(), value) {
            inner.size -= old.weight();
        } else {
            inner.order.push_back(key);
        }
        inner.size += weight;
        while inner.size > self.capacity {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            if let Some(v) = inner.map.remove(&oldest) {
                inner.size -= v.weight();
            }
        }
    }

    #[cfg(test)]
    pub fn size(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_within_capacity() {
        let cache: ByteCache<u32> = ByteCache::new(100);
        for i in 0..10u32 {
            cache.insert(i, Bytes::from(vec![0u8; 20]));
        }
        assert!(cache.size() <= 100);
        assert!(cache.get(&0).is_none());
        assert!(cache.get(&9).is_some());
        cache.insert(100, Bytes::from(vec![0u8; 26]));
        assert!(cache.get(&100).is_none(), "too large to cache");
    }
}
