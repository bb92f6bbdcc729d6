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
//! A put marked [`WrittenBeforeRead`] (a WAL segment, read only once a commit names it)
//! skips the staging file: it is created under its own name, which spares an inode's
//! link and unlink and a staging name in the directory on the produce path. On ext4 and
//! XFS it also skips the directory's sync: there the `fdatasync` of a file created since
//! its last sync makes its name durable too (ext4 and XFS log the new entry in the same
//! journal transaction as the inode, and a sync commits every transaction up to the
//! file's last one; ext4 without a journal syncs a new file's parent itself), and the
//! directory sync cost as much as the rest of the put, with a tail five times as long.
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
use object_store::{
    MultipartUpload, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
    UploadPart,
};

/// Direct writes are made of whole blocks of this size; an object of another length is
/// cut to it afterwards, which makes the filesystem read the last block back.
pub const ALIGN: usize = 4096;
/// Largest single direct write (and the memory a put uses besides its payload).
const CHUNK: usize = 4 << 20;

#[derive(Debug, Clone)]
pub struct DirectFs {
    inner: Arc<LocalFileSystem>,
    root: PathBuf,
    /// Cleared after the first EINVAL: the filesystem does not do direct I/O.
    direct: Arc<AtomicBool>,
    /// The filesystem makes a new file's name durable with the file's own `fdatasync`.
    names_synced_with_data: bool,
}

impl fmt::Display for DirectFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DirectFs({})", self.root.display())
    }
}

/// Put option (an extension of [`PutOptions`]) for an object created with
/// [`PutMode::Create`] that nothing reads, or lists for reading, before its put has
/// returned: the local store then writes it in place instead of staging it. A put that
/// fails or is cut short by a crash can leave a partial object under the name, so the
/// writer must own the name's clean-up (WAL segments: the orphan collector deletes
/// segments that were never committed).
#[derive(Debug, Clone, Copy)]
pub struct WrittenBeforeRead;

impl DirectFs {
    pub fn new(inner: LocalFileSystem, root: PathBuf) -> Self {
        let filesystem = std::fs::read_to_string("/proc/self/mountinfo")
            .ok()
            .and_then(|mounts| filesystem_of(&mounts, &root));
        let names_synced_with_data = matches!(filesystem.as_deref(), Some("ext4" | "xfs"));
        tracing::info!(
            root = %root.display(),
            filesystem = filesystem.as_deref().unwrap_or("unknown"),
            names_synced_with_data,
            "local object store"
        );
        Self {
            inner: Arc::new(inner),
            root,
            direct: Arc::new(AtomicBool::new(true)),
            names_synced_with_data,
        }
    }
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\134` for a backslash, ...).
fn unescape_mount_path(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(d) if bytes[i] == b'\\' => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            _ => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The type of the filesystem `path` (absolute, symlinks resolved) is on, from the text of
/// `/proc/self/mountinfo`: the last-mounted of the deepest mount points that contain it.
fn filesystem_of(mountinfo: &str, path: &std::path::Path) -> Option<String> {
    let mut best: Option<(usize, String)> = None;
    for line in mountinfo.lines() {
        let Some((mount, tail)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mount_point) = mount.split(' ').nth(4) else {
            continue;
        };
        let Some(fs_type) = tail.split(' ').next() else {
            continue;
        };
        let mount_point = PathBuf::from(unescape_mount_path(mount_point));
        if !path.starts_with(&mount_point) {
            continue;
        }
        let depth = mount_point.components().count();
        if best.as_ref().is_none_or(|(d, _)| depth >= *d) {
            best = Some((depth, fs_type.to_string()));
        }
    }
    best.map(|(_, fs_type)| fs_type)
}

/// The name of the object a staging file was written for, if `name` is a staging file's
/// (`<object>#<hex>`): a put writes one and links it into place, so only a put a crash
/// interrupted leaves one behind. No object icestream writes has a `#` in its name.
pub fn staged_for(name: &str) -> Option<&str> {
    let (object, suffix) = name.rsplit_once('#')?;
    let hex = !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_hexdigit());
    (hex && !object.is_empty()).then_some(object)
}

fn io_err(path: &std::path::Path, e: std::io::Error) -> object_store::Error {
    object_store::Error::Generic {
        store: "DirectFs",
        source: format!("{}: {e}", path.display()).into(),
    }
}

thread_local! {
    /// The buffer direct writes are aligned in, kept by each (blocking-pool) thread that
    /// puts objects: allocating it afresh for every put made the kernel fault in and zero
    /// a page for every 4 KiB written, which cost as much as the copy itself.
    static WINDOW: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Writes `payload` (`len` bytes) to `file`, opened with O_DIRECT, through one aligned
/// window of at most CHUNK bytes inside `storage` (over-allocated, so no unsafe code, and
/// filled by appending within its capacity, so the window stays put): a large object
/// costs no second copy of itself in memory. The file is left padded to the alignment.
fn write_direct(
    file: &mut std::fs::File,
    payload: &PutPayload,
    len: usize,
    storage: &mut Vec<u8>,
) -> std::io::Result<()> {
    let window = len.div_ceil(ALIGN).clamp(1, CHUNK / ALIGN) * ALIGN;
    storage.clear();
    storage.reserve(window + ALIGN);
    let offset = (ALIGN - (storage.as_ptr() as usize % ALIGN)) % ALIGN;
    storage.resize(offset, 0);
    for part in payload.iter() {
        let mut rest = &part[..];
        while !rest.is_empty() {
            let take = (window - (storage.len() - offset)).min(rest.len());
            storage.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if storage.len() - offset == window {
                file.write_all(&storage[offset..])?;
                storage.truncate(offset);
            }
        }
    }
    let tail = storage.len() - offset;
    if tail > 0 {
        storage.resize(offset + tail.div_ceil(ALIGN) * ALIGN, 0);
        file.write_all(&storage[offset..])?;
    }
    Ok(())
}

/// Writes `payload` to the new file `path` (a staging file, or the object itself), with
/// O_DIRECT when `direct` says so, and syncs it; returns whether direct I/O was used.
fn write_new(path: &std::path::Path, payload: &PutPayload, direct: bool) -> std::io::Result<bool> {
    let len = payload.content_length();
    if direct {
        let mut options = OpenOptions::new();
        options
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_DIRECT);
        match options.open(path) {
            Ok(mut file) => {
                WINDOW.with(|cell| -> std::io::Result<()> {
                    let mut storage = cell.borrow_mut();
                    write_direct(&mut file, payload, len, &mut storage)
                })?;
                if !len.is_multiple_of(ALIGN) {
                    file.set_len(len as u64)?;
                }
                file.sync_data()?;
                return Ok(true);
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            Err(e) => return Err(e),
        }
    }
    let mut file = OpenOptions::new().write(true).create_new(true).open(path)?;
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

/// Runs `create` (which creates a file in `dir`); when `dir` does not exist, creates it
/// and its missing parents durably and runs `create` again. Directories are created once
/// and files all the time, so a put does not look for its directory first.
fn in_dir<T>(
    dir: &std::path::Path,
    mut create: impl FnMut() -> std::io::Result<T>,
) -> std::io::Result<T> {
    match create() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            create_dirs_durably(dir)?;
            create()
        }
        other => other,
    }
}

impl DirectFs {
    /// Writes `payload` as the object at `location` durably: through a staging file, or
    /// (`in_place`, only with `create`) under its own name.
    async fn put_durably(
        &self,
        location: &Path,
        payload: PutPayload,
        create: bool,
        in_place: bool,
    ) -> Result<PutResult> {
        let path = self.inner.path_to_filesystem(location)?;
        let direct = self.direct.clone();
        let names_synced_with_data = self.names_synced_with_data;
        let location = location.clone();
        tokio::task::spawn_blocking(move || -> Result<PutResult> {
            let dir = path
                .parent()
                .unwrap_or(std::path::Path::new("/"))
                .to_path_buf();
            if create && in_place {
                let written = in_dir(&dir, || {
                    write_new(&path, &payload, direct.load(Ordering::Relaxed))
                });
                match written {
                    Ok(used_direct) => {
                        if !used_direct {
                            direct.store(false, Ordering::Relaxed);
                        }
                    }
                    // The name is another put's: leave its object alone.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        return Err(object_store::Error::AlreadyExists {
                            path: location.to_string(),
                            source: Box::new(e),
                        });
                    }
                    Err(e) => {
                        let _ = std::fs::remove_file(&path);
                        return Err(io_err(&path, e));
                    }
                }
                if !names_synced_with_data {
                    sync_dir(&dir).map_err(|e| io_err(&dir, e))?;
                }
                return Ok(PutResult {
                    e_tag: None,
                    version: None,
                });
            }
            // `#<hex>` marks staging files. LocalFileSystem's listings skip only `#<digits>`
            // names, so these are listed while they exist; no key a reader parses has a `#`.
            let staging = PathBuf::from(format!(
                "{}#{}",
                path.display(),
                uuid::Uuid::new_v4().simple()
            ));
            let used_direct = in_dir(&dir, || {
                write_new(&staging, &payload, direct.load(Ordering::Relaxed))
            })
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
}

/// A multipart upload to the local directory: the parts are gathered in memory and written
/// as one object, durably, when the upload completes (`LocalFileSystem`'s own uploads never
/// sync, so a table file could be lost to a power loss after its snapshot was committed).
/// Uploads here are the compactor's data files, at most about a target file size.
struct DirectUpload {
    fs: DirectFs,
    location: Path,
    parts: Vec<PutPayload>,
}

impl fmt::Debug for DirectUpload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirectUpload")
            .field("location", &self.location)
            .field("parts", &self.parts.len())
            .finish()
    }
}

#[async_trait::async_trait]
impl MultipartUpload for DirectUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.parts.push(data);
        Box::pin(futures::future::ready(Ok(())))
    }

    async fn complete(&mut self) -> Result<PutResult> {
        let parts = std::mem::take(&mut self.parts);
        let payload: PutPayload = parts.iter().flat_map(|p| p.iter().cloned()).collect();
        self.fs
            .put_durably(&self.location, payload, false, false)
            .await
    }

    async fn abort(&mut self) -> Result<()> {
        self.parts.clear();
        Ok(())
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
        let in_place = opts.extensions.get::<WrittenBeforeRead>().is_some();
        self.put_durably(
            location,
            payload,
            matches!(opts.mode, PutMode::Create),
            in_place,
        )
        .await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        if !opts.attributes.is_empty() {
            return self.inner.put_multipart_opts(location, opts).await;
        }
        Ok(Box::new(DirectUpload {
            fs: self.clone(),
            location: location.clone(),
            parts: Vec::new(),
        }))
    }
});

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::{ObjectStore, ObjectStoreExt};

    #[test]
    fn the_filesystem_of_a_path_is_its_deepest_latest_mount() {
        let mountinfo = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
30 27 0:30 / /data rw - xfs /dev/vdb rw
31 30 0:31 / /data/fast\\040lane rw - tmpfs tmpfs rw
32 27 0:32 / /data rw - ext4 /dev/vdc rw
";
        let of = |path: &str| filesystem_of(mountinfo, std::path::Path::new(path));
        assert_eq!(of("/work/data").as_deref(), Some("ext4"));
        // Mounted over /data after the xfs mount, so it hides it.
        assert_eq!(of("/data/objects").as_deref(), Some("ext4"));
        assert_eq!(of("/data/fast lane/objects").as_deref(), Some("tmpfs"));
        // A mount point contains whole components only.
        assert_eq!(of("/database").as_deref(), Some("ext4"));
        assert_eq!(filesystem_of("", std::path::Path::new("/x")), None);
        assert_eq!(unescape_mount_path("a\\134b\\12"), "a\\b\\12");
    }

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

    /// A put marked written-before-read creates the object under its own name: the bytes
    /// are exact, a second put of the name is refused and leaves the first object whole.
    #[tokio::test]
    async fn objects_written_in_place_are_exact_and_created_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = DirectFs::new(
            LocalFileSystem::new_with_prefix(dir.path()).expect("local"),
            dir.path().to_path_buf(),
        );
        let path = Path::from("wal/00/seg.wal");
        let data: Vec<u8> = (0..(ALIGN * 3 + 17) as u32).map(|i| i as u8).collect();
        let mut opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        opts.extensions.insert(WrittenBeforeRead);
        let payload = PutPayload::from_iter(data.chunks(1000).map(bytes::Bytes::copy_from_slice));
        store
            .put_opts(&path, payload, opts.clone())
            .await
            .expect("put");
        let names: Vec<_> = std::fs::read_dir(dir.path().join("wal/00"))
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("seg.wal")]);
        assert!(matches!(
            store
                .put_opts(&path, PutPayload::from_static(b"other"), opts)
                .await,
            Err(object_store::Error::AlreadyExists { .. })
        ));
        let read = store.get(&path).await.expect("get").bytes().await;
        assert_eq!(read.expect("bytes").as_ref(), data.as_slice());
    }

    /// One thread's window serves put after put: a small object after a large one holds
    /// only its own bytes, and an object in many parts is written in order.
    #[test]
    fn a_reused_window_writes_each_object_exactly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut storage = Vec::new();
        let big: Vec<u8> = (0..(CHUNK + 5_000) as u32)
            .map(|i| (i % 253) as u8)
            .collect();
        let sizes = [CHUNK + 5_000, 10, ALIGN, 3 * ALIGN + 1, 1];
        for (n, &size) in sizes.iter().enumerate() {
            let data = &big[..size];
            let parts =
                PutPayload::from_iter(data.chunks(777).map(|c| bytes::Bytes::from(c.to_vec())));
            let path = dir.path().join(format!("o{n}"));
            let mut options = OpenOptions::new();
            options.write(true).create_new(true);
            // Buffered here when the test directory is on tmpfs; the bytes are the same.
            let mut file = options
                .clone()
                .custom_flags(libc::O_DIRECT)
                .open(&path)
                .or_else(|_| options.open(&path))
                .expect("open");
            write_direct(&mut file, &parts, size, &mut storage).expect("write");
            file.set_len(size as u64).expect("truncate");
            assert_eq!(std::fs::read(&path).expect("read"), data, "object {n}");
        }
    }

    #[tokio::test]
    async fn large_and_multipart_objects_are_exact() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = DirectFs::new(
            LocalFileSystem::new_with_prefix(dir.path()).expect("local"),
            dir.path().to_path_buf(),
        );
        // Longer than one direct write, not a multiple of the alignment.
        let data: Vec<u8> = (0..(CHUNK * 2 + 12_345) as u32)
            .map(|i| (i % 251) as u8)
            .collect();
        let big = Path::from("wal/big.seg");
        store
            .put(&big, PutPayload::from(data.clone()))
            .await
            .expect("put");
        let read = store.get(&big).await.expect("get").bytes().await;
        assert_eq!(read.expect("bytes").as_ref(), data.as_slice());

        // A multipart upload (as the table writer makes for large data files) in uneven
        // parts becomes one object only when it completes.
        let path = Path::from("tables/t/data/f.parquet");
        let mut upload = store.put_multipart(&path).await.expect("upload");
        for part in [&data[..1000], &data[1000..CHUNK + 7], &data[CHUNK + 7..]] {
            upload
                .put_part(PutPayload::from(part.to_vec()))
                .await
                .expect("part");
        }
        assert!(
            store.head(&path).await.is_err(),
            "not visible before completion"
        );
        upload.complete().await.expect("complete");
        let read = store.get(&path).await.expect("get").bytes().await;
        assert_eq!(read.expect("bytes").as_ref(), data.as_slice());
        let names: Vec<_> = std::fs::read_dir(dir.path().join("tables/t/data"))
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("f.parquet")]);

        let mut aborted = store
            .put_multipart(&Path::from("tables/t/data/g.parquet"))
            .await
            .expect("upload");
        aborted
            .put_part(PutPayload::from_static(b"rows"))
            .await
            .expect("part");
        aborted.abort().await.expect("abort");
        assert!(store
            .head(&Path::from("tables/t/data/g.parquet"))
            .await
            .is_err());
    }
}
