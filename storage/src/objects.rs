//! Object store access: one resolver from URL to store, with the key prefix applied.
//!
//! - `file://PATH` (absolute or relative to the working directory) or a bare path;
//! - `memory://` (tests, throw-away brokers);
//! - `s3://BUCKET[/PREFIX][?endpoint=…&region=…&access_key_id=…&secret_access_key=…&allow_http=true]`:
//!   any object_store S3 option may be given as a query parameter; the usual `AWS_*`
//!   environment variables are read too. Conditional PUT (If-None-Match) is used for
//!   segment creation, so S3-compatible servers must honour it (S3, SeaweedFS, MinIO do).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};

use crate::direct_fs::DirectFs;

#[derive(Debug, thiserror::Error)]
pub enum ObjectStoreUrlError {
    #[error("unsupported object store url {url:?}: {reason}")]
    Unsupported { url: String, reason: String },
    #[error("object store url {url:?}: {source}")]
    Build {
        url: String,
        #[source]
        source: object_store::Error,
    },
    #[error("creating local object store directory {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// What kind of store a URL named; defaults (such as the flush interval) depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Local,
    Memory,
    S3,
}

/// An object store with the key prefix everything lives under.
#[derive(Debug, Clone)]
pub struct Objects {
    pub store: Arc<dyn ObjectStore>,
    pub prefix: Path,
    pub kind: StoreKind,
    /// The URL with credentials removed, for logs.
    pub display_url: String,
    /// For local stores, the directory (engines read table files from it directly).
    pub local_root: Option<PathBuf>,
    /// URL of the store's root, under which object paths are appended: `file:///DIR`,
    /// `s3://BUCKET`, `memory://`. Table files are named by these URLs for engines.
    pub root_url: String,
    /// The URL the store was opened from (credentials included), to open sibling buckets.
    source_url: String,
    /// Other buckets of the same S3 service, opened on first use.
    siblings: Arc<Mutex<HashMap<String, Objects>>>,
}

impl Objects {
    /// The same store seen through `store` (a wrapper of it, such as a fault-injecting one
    /// in tests): keys, URLs and kind stay those of this store.
    pub fn with_store(self, store: Arc<dyn ObjectStore>) -> Self {
        Self { store, ..self }
    }

    /// Opens the store named by `url`.
    pub fn open(url: &str) -> Result<Self, ObjectStoreUrlError> {
        if url == "memory://" || url == "memory:" || url.starts_with("memory://") {
            return Ok(Self::wrap(
                Arc::new(InMemory::new()),
                StoreKind::Memory,
                url,
            ));
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            return Self::open_s3(url, rest);
        }
        let path = url.strip_prefix("file://").unwrap_or(url);
        if path.contains("://") {
            return Err(ObjectStoreUrlError::Unsupported {
                url: url.to_string(),
                reason: "expected file://PATH, s3://BUCKET/PREFIX or memory://".into(),
            });
        }
        let dir = PathBuf::from(path);
        std::fs::create_dir_all(&dir).map_err(|source| ObjectStoreUrlError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        let dir = dir
            .canonicalize()
            .map_err(|source| ObjectStoreUrlError::Io {
                path: dir.display().to_string(),
                source,
            })?;
        let local = LocalFileSystem::new_with_prefix(&dir)
            .map_err(|source| ObjectStoreUrlError::Build {
                url: url.to_string(),
                source,
            })?
            .with_automatic_cleanup(true);
        let store = DirectFs::new(local, dir.clone());
        let mut objects = Self::wrap(Arc::new(store), StoreKind::Local, url);
        objects.root_url = format!("file://{}", dir.display());
        objects.local_root = Some(dir);
        Ok(objects)
    }

    /// Wraps an existing store (tests inject fault-injecting stores this way).
    pub fn wrap(store: Arc<dyn ObjectStore>, kind: StoreKind, url: &str) -> Self {
        Self {
            store,
            prefix: Path::default(),
            kind,
            display_url: url.to_string(),
            local_root: None,
            root_url: "memory://".into(),
            source_url: url.to_string(),
            siblings: Arc::default(),
        }
    }

    fn open_s3(url: &str, rest: &str) -> Result<Self, ObjectStoreUrlError> {
        let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (bucket, prefix) = location.split_once('/').unwrap_or((location, ""));
        if bucket.is_empty() {
            return Err(ObjectStoreUrlError::Unsupported {
                url: url.to_string(),
                reason: "no bucket name".into(),
            });
        }
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: 8,
                retry_timeout: Duration::from_secs(60),
            })
            .with_client_options(
                ClientOptions::new()
                    .with_timeout(Duration::from_secs(30))
                    .with_connect_timeout(Duration::from_secs(5)),
            );
        let mut display = format!("s3://{location}");
        let mut sep = '?';
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, "true"));
            let v = percent_decode(v);
            let key: AmazonS3ConfigKey = k.parse().map_err(|e| ObjectStoreUrlError::Build {
                url: redact_query(url),
                source: e,
            })?;
            if matches!(k, "endpoint" | "aws_endpoint" | "endpoint_url") && v.starts_with("http://")
            {
                builder = builder.with_allow_http(true);
            }
            builder = builder.with_config(key, v);
            if !k.contains("secret") && !k.contains("token") {
                display.push(sep);
                display.push_str(pair);
                sep = '&';
            }
        }
        let store = builder
            .build()
            .map_err(|source| ObjectStoreUrlError::Build {
                url: redact_query(url),
                source,
            })?;
        Ok(Self {
            store: Arc::new(store),
            prefix: Path::from(prefix.trim_matches('/')),
            kind: StoreKind::S3,
            display_url: display,
            local_root: None,
            root_url: format!("s3://{bucket}"),
            source_url: url.to_string(),
            siblings: Arc::default(),
        })
    }

    /// The full path of `key` (relative to the prefix).
    pub fn path(&self, key: &str) -> Path {
        if self.prefix.as_ref().is_empty() {
            Path::from(key)
        } else {
            Path::from(format!("{}/{}", self.prefix.as_ref(), key))
        }
    }
}

impl Objects {
    /// What sizes this store writes best: the local store writes a file whose length is a
    /// multiple of this as whole blocks, without reading its last block back to cut it.
    pub fn size_alignment(&self) -> usize {
        match self.kind {
            StoreKind::Local => crate::direct_fs::ALIGN,
            StoreKind::Memory | StoreKind::S3 => 1,
        }
    }

    /// The URL of `key` (relative to the prefix), as engines and table metadata name it.
    pub fn url(&self, key: &str) -> String {
        format!("{}/{}", self.root_url.trim_end_matches('/'), self.path(key))
    }

    /// Another bucket of the same S3 service (same endpoint, region and credentials), for
    /// catalogs that place tables in buckets of their own.
    pub fn sibling_bucket(&self, bucket: &str) -> Result<Objects, ObjectStoreUrlError> {
        let Some(rest) = self.source_url.strip_prefix("s3://") else {
            return Err(ObjectStoreUrlError::Unsupported {
                url: format!("s3://{bucket}"),
                reason: format!("{} is not an S3 store", self.display_url),
            });
        };
        let query = rest.split_once('?').map(|(_, q)| q).unwrap_or("");
        let url = if query.is_empty() {
            format!("s3://{bucket}")
        } else {
            format!("s3://{bucket}?{query}")
        };
        Self::open(&url)
    }

    /// The store and path of an object URL: in this store, or in another bucket of the same
    /// S3 service (REST catalogs may place tables in buckets of their own).
    pub fn resolve_url(&self, url: &str) -> Option<(Arc<dyn ObjectStore>, Path)> {
        if let Some(path) = self.path_of_url(url) {
            return Some((self.store.clone(), path));
        }
        if self.kind != StoreKind::S3 {
            return None;
        }
        let url = url.replacen("s3a://", "s3://", 1);
        let bucket = url.strip_prefix("s3://")?.split('/').next()?;
        if bucket.is_empty() {
            return None;
        }
        let sibling = {
            let mut siblings = self.siblings.lock().unwrap_or_else(|e| e.into_inner());
            match siblings.get(bucket) {
                Some(o) => o.clone(),
                None => match self.sibling_bucket(bucket) {
                    Ok(o) => {
                        siblings.insert(bucket.to_string(), o.clone());
                        o
                    }
                    Err(e) => {
                        tracing::warn!(bucket, error = %e, "cannot open bucket");
                        return None;
                    }
                },
            }
        };
        let path = sibling.path_of_url(&url)?;
        Some((sibling.store, path))
    }

    /// The object path a URL names, if it is inside this store.
    pub fn path_of_url(&self, url: &str) -> Option<Path> {
        let root = self.root_url.trim_end_matches('/');
        let rest = url.strip_prefix(root)?.strip_prefix('/')?;
        Path::parse(rest).ok()
    }
}

fn redact_query(url: &str) -> String {
    url.split_once('?')
        .map(|(base, _)| format!("{base}?…"))
        .unwrap_or_else(|| url.to_string())
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_urls() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("file://{}", dir.path().join("objects").display());
        let local = Objects::open(&url).expect("file store");
        assert_eq!(local.kind, StoreKind::Local);
        assert!(dir.path().join("objects").is_dir());
        assert_eq!(
            Objects::open("memory://").expect("memory").kind,
            StoreKind::Memory
        );
        let s3 = Objects::open(
            "s3://bucket/some/prefix?endpoint=http://127.0.0.1:1&region=us-east-1&access_key_id=a&secret_access_key=b",
        )
        .expect("s3");
        assert_eq!(s3.kind, StoreKind::S3);
        assert_eq!(s3.path("wal/x.seg").as_ref(), "some/prefix/wal/x.seg");
        assert!(!s3.display_url.contains("secret"));
        assert_eq!(
            s3.url("warehouse/t/x.parquet"),
            "s3://bucket/some/prefix/warehouse/t/x.parquet"
        );
        assert_eq!(
            s3.path_of_url("s3://bucket/some/prefix/a/b")
                .map(|p| p.to_string()),
            Some("some/prefix/a/b".to_string())
        );
        assert!(s3.path_of_url("s3://other/a").is_none());
        let u = local.url("warehouse/x");
        assert!(u.starts_with("file:///"), "{u}");
        assert_eq!(
            local.path_of_url(&u).map(|p| p.to_string()),
            Some("warehouse/x".into())
        );
        assert!(Objects::open("gs://bucket").is_err());
        assert!(Objects::open("s3://bucket?no_such_option=1").is_err());
    }

    #[test]
    fn decodes_percent_escapes() {
        assert_eq!(percent_decode("a%2Fb"), "a/b");
        assert_eq!(percent_decode("100%"), "100%");
    }
}

#[cfg(test)]
mod sibling_tests {
    use super::*;

    #[test]
    fn resolves_urls_in_sibling_buckets() {
        let s3 = Objects::open(
            "s3://icestream/t3?endpoint=http://127.0.0.1:1&region=us-east-1&access_key_id=a&secret_access_key=b",
        )
        .expect("s3");
        let (_, path) = s3
            .resolve_url("s3://tables/kafka/t/data/partition=0/x.parquet")
            .expect("sibling bucket");
        assert_eq!(path.as_ref(), "kafka/t/data/partition=0/x.parquet");
        let (_, own) = s3
            .resolve_url("s3://icestream/t3/wal/a.seg")
            .expect("own bucket");
        assert_eq!(own.as_ref(), "t3/wal/a.seg");
        let real = Objects::open(
            "s3://icestream/t3?endpoint=http://127.0.0.1:8333&region=us-east-1&access_key_id=any&secret_access_key=any",
        )
        .expect("s3");
        assert!(real
            .resolve_url("s3://tables/kafka/rest1/data/partition=0/30d02724-01a20a25-1267-7521-9897-e4bec38f3f50-00000.parquet")
            .is_some());
        assert!(Objects::open("memory://")
            .expect("memory")
            .resolve_url("s3://tables/x")
            .is_none());
    }
}
