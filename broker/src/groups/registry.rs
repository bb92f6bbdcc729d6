//! The groups a coordinator holds in memory, by id, each behind its own lock.
//!
//! The registry's lock is held only to find, insert or remove a group; a caller then locks
//! the one group it works on, so a slow group never stalls the others. Loading a group
//! from its record is the caller's business ([`Registry::insert_if_absent`] keeps the first
//! of two racing loads).

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::Mutex;

pub struct Registry<G> {
    groups: Mutex<HashMap<String, Arc<Mutex<G>>>>,
}

impl<G> Default for Registry<G> {
    fn default() -> Self {
        Self {
            groups: Mutex::new(HashMap::new()),
        }
    }
}

impl<G> Registry<G> {
    pub async fn get(&self, id: &str) -> Option<Arc<Mutex<G>>> {
        self.groups.lock().await.get(id).cloned()
    }

    /// The group held under `id`, or `group()` now held there.
    pub async fn get_or_insert_with(&self, id: &str, group: impl FnOnce() -> G) -> Arc<Mutex<G>> {
        self.groups
            .lock()
            .await
            .entry(id.to_string())
            .or_insert_with(|| Arc::new(Mutex::new(group())))
            .clone()
    }

    /// `group` under `id`, unless another is held there already (then that one).
    pub async fn insert_if_absent(&self, id: &str, group: G) -> Arc<Mutex<G>> {
        self.get_or_insert_with(id, || group).await
    }

    pub async fn remove(&self, id: &str) -> Option<Arc<Mutex<G>>> {
        self.groups.lock().await.remove(id)
    }

    pub async fn ids(&self) -> Vec<String> {
        self.groups.lock().await.keys().cloned().collect()
    }

    /// Every group held now, to visit one at a time without the registry's lock.
    pub async fn all(&self) -> Vec<(String, Arc<Mutex<G>>)> {
        self.groups
            .lock()
            .await
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_of_two_loads_is_kept() {
        let r: Registry<u32> = Registry::default();
        let first = r.insert_if_absent("g", 1).await;
        let second = r.insert_if_absent("g", 2).await;
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(*second.lock().await, 1);
        assert_eq!(*r.get_or_insert_with("g", || 3).await.lock().await, 1);
        assert_eq!(r.ids().await, vec!["g".to_string()]);
        assert!(r.remove("g").await.is_some());
        assert!(r.get("g").await.is_none());
        assert!(r.all().await.is_empty());
    }
}
