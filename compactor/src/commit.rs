//! Committing a snapshot exactly once. A commit is computed from a base table and pinned
//! to it; when another commit of this compactor landed first (a round while a rewrite was
//! being written, or the other way round) and does not conflict, the change is rebuilt on
//! top of the newer table and committed again. Whatever the catalog answered, a commit is
//! done only when a fresh load of the table holds its snapshot.

use iceberg::table::Table;
use iceberg::Catalog;
use icestream_catalog::commit::{commit_files, CommitStats, FileChange, ManifestMerge};
use icestream_catalog::table::{has_commit, write_version_hint};
use icestream_catalog::CatalogError;

use crate::CompactError;

/// How many times a change is rebuilt on a newer table before the attempt is given up.
const REBASES: usize = 3;

/// Commits the change `make` builds from a base table (tagged `commit_id` in its summary),
/// starting from `base`. After a failed attempt the table is reloaded: if it holds the
/// commit, it is done; if it moved on and `may_rebase` accepts the newer table, the change
/// is rebuilt on it. Returns the table holding the commit.
pub(crate) async fn commit_change<M, R, Fut>(
    catalog: &dyn Catalog,
    base: &Table,
    commit_id: &str,
    failpoint: &str,
    merge: &ManifestMerge,
    make: M,
    may_rebase: R,
) -> Result<(Table, CommitStats), CompactError>
where
    M: Fn(&Table) -> FileChange,
    R: Fn(Table) -> Fut,
    Fut: std::future::Future<Output = Result<bool, CompactError>>,
{
    let mut base = base.clone();
    let mut attempt = 0;
    loop {
        let outcome = commit_files(catalog, &base, make(&base), merge).await;
        crate::failpoint(failpoint);
        let current = catalog.load_table(base.identifier()).await?;
        if has_commit(&current, commit_id) {
            if let Err(e) = write_version_hint(&current).await {
                tracing::warn!(table = %current.identifier(), error = %e, "writing version-hint.text");
            }
            let stats = outcome.map(|(_, s)| s).unwrap_or_default();
            return Ok((current, stats));
        }
        let moved =
            current.metadata().current_snapshot_id() != base.metadata().current_snapshot_id();
        let conflict = matches!(outcome, Err(CatalogError::Conflict(_)));
        attempt += 1;
        if moved && !conflict && attempt <= REBASES && may_rebase(current.clone()).await? {
            tracing::debug!(table = %current.identifier(), commit = %commit_id, "commit rebased on a newer snapshot");
            base = current;
            continue;
        }
        crate::metrics::inc(&crate::metrics::COMMIT_FAILURES);
        return Err(match outcome {
            Err(e) => CompactError::from(e),
            Ok(_) => CompactError::CommitNotVisible {
                topic: base.identifier().name().to_string(),
                commit_id: commit_id.to_string(),
            },
        });
    }
}
