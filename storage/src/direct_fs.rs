//! The local-directory object store, with object creation through `O_DIRECT`.
//!
//! Writing WAL segments through the page cache costs more CPU than everything else the
//! broker does (the kernel copies every byte into freshly allocated cache pages); direct
//! I/O hands the pages to the device instead. Objects are staged in a temporary file
//! (padded to the 4 KiB direct-I/O granularity, then truncated to their length) and
//! linked into place, so readers never see a partial object and `PutMode::Create` keeps
//! its put-if-absent meaning. Filesystems without `O_DIRECT` (tmpfs) get buffered writes.
//!
//! A put returns only once the object survives a power loss, as an object store's PUT
//! does: the file's data and length are synced (`fdatasync`; direct I/O alone leaves them
//! in the device's cache and the inode unwritten), and so is the directory entry that
//! names it (and the entries of directories the put created).
//! Everything but `put_opts` is `LocalFileSystem`'s.

use std::fmt;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{PutMode, PutOptions, PutPayload, PutResult, Result};

const ALIGN: usize = 4096;

#[derive(Debug)]
pub struct DirectFs {
    inner: Arc<LocalFileSystem>,
    root: PathBuf,
    /// Cleared after the first EINVAL: the filesystem does not do direct I/O.
    direct: Arc<AtomicBool>,
}

impl fmt::Display for DirectFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DirectFs({})", self.root.display())
    }
}

impl DirectFs {
    pub fn new(inner: LocalFileSystem, root: PathBuf) -> Self {
        Self {
            inner: Arc::new(inner),
            root,
            direct: Arc::new(AtomicBool::new(true)),
        }
    }
}

fn io_err(path: &std::path::Path, e: std::io::Error) -> object_store::Error {
    object_store::Error::Generic {
        store: "DirectFs",
        source: format!("{}: {e}", path.display()).into(),
    }
}

/// Writes `payload` to `staging`, with O_DIRECT when `direct` says so; returns whether
/// direct I/O was used.
fn write_staged(
    staging: &std::path::Path,
    payload: &PutPayload,
    direct: bool,
) -> std::io::Result<bool> {
    let len = payload.content_length();
    if direct {
        let mut options = OpenOptions::new();
        options
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_DIRECT);
        match options.open(staging) {
            Ok(mut file) => {
                let padded = len.div_ceil(ALIGN).max(1) * ALIGN;
                // An aligned window inside an over-allocated buffer, without unsafe code.
                let mut storage = vec![0u8; padded + ALIGN];
                let offset = (ALIGN - (storage.as_ptr() as usize % ALIGN)) % ALIGN;
                let buf = &mut storage[offset..offset + padded];
                let mut at = 0;
                for part in payload.iter() {
                    buf[at..at + part.len()].copy_from_slice(part);
                    at += part.len();
                }
                file.write_all(buf)?;
                file.set_len(len as u64)?;
                file.sync_data()?;
                return Ok(true);
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            Err(e) => return Err(e),
        }
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(staging)?;
    for part in payload.iter() {
        file.write_all(part)?;
    }
    file.sync_data()?;
    Ok(false)
}

/// Makes a directory's entries durable (a created, linked, renamed or removed name).
fn sync_dir(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Creates `dir` and its missing parents, each one's entry made durable in its parent.
fn create_dirs_durably(dir: &std::path::Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dirs_durably(parent)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        // Another put created it meanwhile, and synced its parent before returning.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e),
    }
    match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent),
        _ => Ok(()),
    }
}

object_store_wrapper!(DirectFs, inner, {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let plain =
            opts.attributes.is_empty() && matches!(opts.mode, PutMode::Create | PutMode::Overwrite);
        if !plain {
            return self.inner.put_opts(location, payload, opts).await;
        }
        let path = self.inner.path_to_filesystem(location)?;
        let direct = self.direct.clone();
        let create = matches!(opts.mode, PutMode::Create);
        let location = location.clone();
        tokio::task::spawn_blocking(move || -> Result<PutResult> {
            let dir = path
                .parent()
                .unwrap_or(std::path::Path::new("/"))
                .to_path_buf();
            create_dirs_durably(&dir).map_err(|e| io_err(&dir, e))?;
            // `#` marks staging files, which LocalFileSystem's listings skip.
            let staging = PathBuf::from(format!(
                "{}#{}",
                path.display(),
                uuid::Uuid::new_v4().simple()
            ));
            let used_direct = write_staged(&staging, &payload, direct.load(Ordering::Relaxed))
                .map_err(|e| {
                    let _ = std::fs::remove_file(&staging);
                    io_err(&staging, e)
                })?;
            if !used_direct {
                direct.store(false, Ordering::Relaxed);
            }
            let placed = if create {
                std::fs::hard_link(&staging, &path).and_then(|()| std::fs::remove_file(&staging))
            } else {
                std::fs::rename(&staging, &path)
            };
            if let Err(e) = placed {
                let _ = std::fs::remove_file(&staging);
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    return Err(object_store::Error::AlreadyExists {
                        path: location.to_string(),
                        source: Box::new(e),
                    });
                }
                return Err(io_err(&path, e));
            }
            // The new name (and the staging name's removal) outlive a power loss.
            sync_dir(&dir).map_err(|e| io_err(&dir, e))?;
            Ok(PutResult {
                e_tag: None,
                version: None,
            })
        })
        .await
        .map_err(|e| object_store::Error::Generic {
            store: "DirectFs",
            source: Box::new(e),
        })?
    }
});

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::{ObjectStore, ObjectStoreExt};

    #[tokio::test]
    async fn creates_exact_objects_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = DirectFs::new(
            LocalFileSystem::new_with_prefix(dir.path()).expect("local"),
            dir.path().to_path_buf(),
        );
        let path = Path::from("wal/a.seg");
        let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let payload = PutPayload::from_iter([
            bytes::Bytes::copy_from_slice(&data[..3]),
            bytes::Bytes::copy_from_slice(&data[3..]),
        ]);
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        store
            .put_opts(&path, payload.clone(), opts.clone())
            .await
            .expect("put");
        let read = store
            .get(&path)
            .await
            .expect("get")
            .bytes()
            .await
            .expect("bytes");
        assert_eq!(read.as_ref(), data.as_slice());
        assert!(matches!(
            store.put_opts(&path, payload, opts).await,
            Err(object_store::Error::AlreadyExists { .. })
        ));
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("wal"))
            .expect("dir")
            .collect();
        assert_eq!(leftovers.len(), 1, "staging files are removed");

        // Missing directories are created (each synced into its parent).
        let deep = Path::from("tables/t/data/b.parquet");
        store
            .put(&deep, PutPayload::from_static(b"rows"))
            .await
            .expect("put into new directories");
        let read = store.get(&deep).await.expect("get").bytes().await;
        assert_eq!(read.expect("bytes").as_ref(), b"rows");
    }
}
