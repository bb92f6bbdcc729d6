//! The conformance suite every metadata backend must pass. Instantiate it for a backend
//! with [`crate::kv_conformance_tests!`], giving an expression that yields
//! `(guard, store)`: the guard keeps the backend's resources alive for the test.

use std::sync::Arc;

use bytes::Bytes;

use super::{KvError, KvStore, KvStoreExt, KvTxn};

fn b(s: &[u8]) -> Bytes {
    Bytes::copy_from_slice(s)
}

async fn put(store: &dyn KvStore, pairs: &[(&[u8], &[u8])]) {
    let mut t = store.begin().await.expect("begin");
    for (k, v) in pairs {
        t.set(k, v);
    }
    t.commit().await.expect("commit");
}

pub async fn read_your_writes(store: &dyn KvStore) {
    let mut t = store.begin().await.expect("begin");
    assert_eq!(t.get(b"ryw/a").await.expect("get"), None);
    t.set(b"ryw/a", b"1");
    assert_eq!(t.get(b"ryw/a").await.expect("get"), Some(b(b"1")));
    t.clear(b"ryw/a");
    assert_eq!(t.get(b"ryw/a").await.expect("get"), None);
    t.set(b"ryw/a", b"2");
    t.commit().await.expect("commit");
    let mut r = store.begin_read().await.expect("read");
    assert_eq!(r.get(b"ryw/a").await.expect("get"), Some(b(b"2")));
    let many = r
        .get_many(&[b"ryw/a".to_vec(), b"ryw/none".to_vec()])
        .await
        .expect("get_many");
    assert_eq!(many, vec![Some(b(b"2")), None]);
}

pub async fn ranges(store: &dyn KvStore) {
    put(
        store,
        &[
            (b"rng/a", b"1"),
            (b"rng/b", b"2"),
            (b"rng/c", b"3"),
            (b"rng/d", b"4"),
            (b"rng0", b"outside"),
            (b"rng/\xff\x00", b"binary"),
        ],
    )
    .await;
    let mut t = store.begin().await.expect("begin");
    let all = t
        .get_range(b"rng/", b"rng0", 0, false)
        .await
        .expect("range");
    let keys: Vec<_> = all.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(
        keys,
        vec![
            b(b"rng/a"),
            b(b"rng/b"),
            b(b"rng/c"),
            b(b"rng/d"),
            b(b"rng/\xff\x00")
        ]
    );
    let last2 = t
        .get_range(b"rng/", b"rng/z", 2, true)
        .await
        .expect("range");
    assert_eq!(last2, vec![(b(b"rng/d"), b(b"4")), (b(b"rng/c"), b(b"3"))]);
    // Buffered writes merge into range reads, in order and under the limit.
    t.clear(b"rng/a");
    t.set(b"rng/bb", b"22");
    let first3 = t
        .get_range(b"rng/", b"rng/z", 3, false)
        .await
        .expect("range");
    assert_eq!(
        first3,
        vec![
            (b(b"rng/b"), b(b"2")),
            (b(b"rng/bb"), b(b"22")),
            (b(b"rng/c"), b(b"3"))
        ]
    );
    t.clear_range(b"rng/b", b"rng/d");
    t.set(b"rng/c2", b"new");
    let after = t
        .get_range(b"rng/", b"rng/z", 0, false)
        .await
        .expect("range");
    assert_eq!(
        after,
        vec![(b(b"rng/c2"), b(b"new")), (b(b"rng/d"), b(b"4"))]
    );
    t.commit().await.expect("commit");
    let mut r = store.begin_read().await.expect("read");
    let committed = r
        .get_range(b"rng/", b"rng/z", 0, false)
        .await
        .expect("range");
    assert_eq!(
        committed,
        vec![(b(b"rng/c2"), b(b"new")), (b(b"rng/d"), b(b"4"))]
    );
    assert!(r
        .get_range(b"rng/z", b"rng/a", 0, false)
        .await
        .expect("empty range")
        .is_empty());
}

pub async fn abort_on_drop(store: &dyn KvStore) {
    {
        let mut t = store.begin().await.expect("begin");
        t.set(b"abort/a", b"x");
    }
    let mut r = store.begin_read().await.expect("read");
    assert_eq!(r.get(b"abort/a").await.expect("get"), None);
}

pub async fn read_only_refuses_writes(store: &dyn KvStore) {
    let mut t = store.begin_read().await.expect("read");
    t.set(b"ro/a", b"x");
    assert!(matches!(t.commit().await, Err(KvError::ReadOnly)));
    let mut r = store.begin_read().await.expect("read");
    assert_eq!(r.get(b"ro/a").await.expect("get"), None);
}

pub async fn snapshot_isolation(store: &dyn KvStore) {
    put(store, &[(b"snap/a", b"old")]).await;
    let mut r = store.begin_read().await.expect("read");
    assert_eq!(r.get(b"snap/a").await.expect("get"), Some(b(b"old")));
    put(store, &[(b"snap/a", b"new")]).await;
    assert_eq!(r.get(b"snap/a").await.expect("get"), Some(b(b"old")));
    let mut r2 = store.begin_read().await.expect("read");
    assert_eq!(r2.get(b"snap/a").await.expect("get"), Some(b(b"new")));
}

async fn increment(t: &mut dyn KvTxn, key: &[u8]) -> Result<u64, KvError> {
    let current = t
        .get(key)
        .await?
        .map(|v| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&v);
            u64::from_be_bytes(a)
        })
        .unwrap_or(0);
    t.set(key, &(current + 1).to_be_bytes());
    Ok(current + 1)
}

/// Concurrent read-modify-write transactions lose no update (serializable + retry).
pub async fn serializable_increments(store: Arc<dyn KvStore>) {
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                for _ in 0..25 {
                    store
                        .transact::<_, KvError, _>(|t| Box::pin(increment(t, b"ser/counter")))
                        .await
                        .expect("transact");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("join");
    }
    let mut r = store.begin_read().await.expect("read");
    let v = r.get(b"ser/counter").await.expect("get").expect("counter");
    assert_eq!(v.as_ref(), &200u64.to_be_bytes());
}

/// Write skew is prevented: two transactions that each read what the other writes
/// cannot both commit as if they ran side by side.
pub async fn conflicting_commit_aborts(store: &dyn KvStore) {
    put(store, &[(b"skew/x", b"0"), (b"skew/y", b"0")]).await;
    // Each writes (what it read + 1) into the key the other reads.
    async fn step(store: &dyn KvStore, read: &[u8], write: &[u8]) -> Result<(), KvError> {
        let mut t = store.begin().await?;
        let seen = t.get(read).await?.map(|v| v.to_vec()).unwrap_or_default();
        let n: u8 = String::from_utf8_lossy(&seen).parse().unwrap_or(0);
        tokio::task::yield_now().await;
        t.set(write, (n + 1).to_string().as_bytes());
        t.commit().await
    }
    let (r1, r2) = tokio::join!(
        step(store, b"skew/x", b"skew/y"),
        step(store, b"skew/y", b"skew/x")
    );
    let mut r = store.begin_read().await.expect("read");
    let x = r.get(b"skew/x").await.expect("get").expect("x");
    let y = r.get(b"skew/y").await.expect("get").expect("y");
    if r1.is_ok() && r2.is_ok() {
        // A serial order gives (x, y) = (2, 1) or (1, 2), never (1, 1).
        assert_ne!(
            (x.as_ref(), y.as_ref()),
            (&b"1"[..], &b"1"[..]),
            "write skew"
        );
    }
    for e in [r1, r2].into_iter().filter_map(|r| r.err()) {
        assert!(e.is_retryable(), "a conflict must be retryable: {e}");
    }
}

#[macro_export]
macro_rules! kv_conformance_tests {
    ($make:expr) => {
        mod conformance {
            #[allow(unused_imports)]
            use super::*;
            use std::sync::Arc;
            use $crate::kv::testsuite as suite;

            #[tokio::test]
            async fn read_your_writes() {
                let (_guard, store) = $make;
                suite::read_your_writes(&store).await;
            }

            #[tokio::test]
            async fn ranges() {
                let (_guard, store) = $make;
                suite::ranges(&store).await;
            }

            #[tokio::test]
            async fn abort_on_drop() {
                let (_guard, store) = $make;
                suite::abort_on_drop(&store).await;
            }

            #[tokio::test]
            async fn read_only_refuses_writes() {
                let (_guard, store) = $make;
                suite::read_only_refuses_writes(&store).await;
            }

            #[tokio::test]
            async fn snapshot_isolation() {
                let (_guard, store) = $make;
                suite::snapshot_isolation(&store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn serializable_increments() {
                let (_guard, store) = $make;
                suite::serializable_increments(Arc::new(store)).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn conflicting_commit_aborts() {
                let (_guard, store) = $make;
                suite::conflicting_commit_aborts(&store).await;
            }
        }
    };
}
