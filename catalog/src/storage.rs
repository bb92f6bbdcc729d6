//! iceberg-rust's `Storage` over icestream's object store, so table files live in the same
//! store as the WAL (a local directory or S3) with one storage stack.
//!
//! Locations are URLs under the store's root (`file:///DIR/...`, `s3://BUCKET/...`);
//! anything outside that root is refused.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use iceberg::io::{
    FileMetadata, FileRead, FileWrite, InputFile, OutputFile, Storage, StorageConfig,
    StorageFactory,
};
use iceberg::{Error, ErrorKind, Result};
use icestream_storage::Objects;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

fn unexpected(context: String, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::new(ErrorKind::Unexpected, context).with_source(e)
}

/// Storage for one object store. Not meant to be serialized: a deserialized instance has
/// no store and fails every call.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ObjectStorage {
    root_url: String,
    #[serde(skip)]
    objects: Option<Objects>,
}

impl ObjectStorage {
    pub fn new(objects: Objects) -> Self {
        Self {
            root_url: objects.root_url.clone(),
            objects: Some(objects),
        }
    }

    fn resolve(&self, location: &str) -> Result<(Arc<dyn ObjectStore>, Path)> {
        let objects = self.objects.as_ref().ok_or_else(|| {
            Error::new(
                ErrorKind::Unexpected,
                "object storage was deserialized without a store",
            )
        })?;
        objects.resolve_url(location).ok_or_else(|| {
            Error::new(
                ErrorKind::DataInvalid,
                format!("{location} is outside the object store {}", self.root_url),
            )
        })
    }
}

#[async_trait]
#[typetag::serde]
impl Storage for ObjectStorage {
    async fn exists(&self, path: &str) -> Result<bool> {
        let (store, p) = self.resolve(path)?;
        match store.head(&p).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(unexpected(format!("head {path}"), e)),
        }
    }

    async fn metadata(&self, path: &str) -> Result<FileMetadata> {
        let (store, p) = self.resolve(path)?;
        let meta = store
            .head(&p)
            .await
            .map_err(|e| unexpected(format!("head {path}"), e))?;
        Ok(FileMetadata { size: meta.size })
    }

    async fn read(&self, path: &str) -> Result<Bytes> {
        let (store, p) = self.resolve(path)?;
        store
            .get(&p)
            .await
            .map_err(|e| unexpected(format!("get {path}"), e))?
            .bytes()
            .await
            .map_err(|e| unexpected(format!("read {path}"), e))
    }

    async fn reader(&self, path: &str) -> Result<Box<dyn FileRead>> {
        let (store, p) = self.resolve(path)?;
        Ok(Box::new(ObjectRead { store, path: p }))
    }

    async fn write(&self, path: &str, bs: Bytes) -> Result<()> {
        let (store, p) = self.resolve(path)?;
        store
            .put(&p, bs.into())
            .await
            .map(|_| ())
            .map_err(|e| unexpected(format!("put {path}"), e))
    }

    async fn writer(&self, path: &str) -> Result<Box<dyn FileWrite>> {
        let (store, p) = self.resolve(path)?;
        Ok(Box::new(ObjectWrite {
            writer: Some(BufWriter::new(store, p)),
            path: path.to_string(),
        }))
    }

    async fn delete(&self, path: &str) -> Result<()> {
        let (store, p) = self.resolve(path)?;
        match store.delete(&p).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(unexpected(format!("delete {path}"), e)),
        }
    }

    async fn delete_prefix(&self, path: &str) -> Result<()> {
        let (store, p) = self.resolve(path)?;
        let locations = store.list(Some(&p)).map_ok(|m| m.location).boxed();
        store
            .delete_stream(locations)
            .try_collect::<Vec<_>>()
            .await
            .map(|_| ())
            .map_err(|e| unexpected(format!("delete prefix {path}"), e))
    }

    async fn delete_stream(&self, mut paths: BoxStream<'static, String>) -> Result<()> {
        while let Some(path) = paths.next().await {
            self.delete(&path).await?;
        }
        Ok(())
    }

    fn new_input(&self, path: &str) -> Result<InputFile> {
        Ok(InputFile::new(Arc::new(self.clone()), path.to_string()))
    }

    fn new_output(&self, path: &str) -> Result<OutputFile> {
        Ok(OutputFile::new(Arc::new(self.clone()), path.to_string()))
    }
}

struct ObjectRead {
    store: Arc<dyn ObjectStore>,
    path: Path,
}

#[async_trait]
impl FileRead for ObjectRead {
    async fn read(&self, range: Range<u64>) -> Result<Bytes> {
        self.store
            .get_range(&self.path, range)
            .await
            .map_err(|e| unexpected(format!("get range of {}", self.path), e))
    }
}

struct ObjectWrite {
    writer: Option<BufWriter>,
    path: String,
}

#[async_trait]
impl FileWrite for ObjectWrite {
    async fn write(&mut self, bs: Bytes) -> Result<()> {
        let w = self
            .writer
            .as_mut()
            .ok_or_else(|| Error::new(ErrorKind::Unexpected, "write after close"))?;
        w.write_all(&bs)
            .await
            .map_err(|e| unexpected(format!("write {}", self.path), e))
    }

    async fn close(&mut self) -> Result<()> {
        let mut w = self
            .writer
            .take()
            .ok_or_else(|| Error::new(ErrorKind::Unexpected, "file closed twice"))?;
        w.shutdown()
            .await
            .map_err(|e| unexpected(format!("close {}", self.path), e))
    }
}

/// The factory catalogs are given: every FileIO they build uses the one object store.
#[derive(Debug, Serialize, Deserialize)]
pub struct ObjectStorageFactory {
    storage: ObjectStorage,
}

impl ObjectStorageFactory {
    pub fn new(objects: Objects) -> Self {
        Self {
            storage: ObjectStorage::new(objects),
        }
    }
}

#[typetag::serde]
impl StorageFactory for ObjectStorageFactory {
    fn build(&self, _config: &StorageConfig) -> Result<Arc<dyn Storage>> {
        Ok(Arc::new(self.storage.clone()))
    }
}
