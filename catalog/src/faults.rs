//! A catalog that injects commit faults, for tests of everything that commits snapshots:
//! commits that fail, commits that are reported done but never happened (what the SQL
//! catalog does when SQLite refuses the COMMIT of its transaction), and commits that
//! happened but are reported failed (a lost response). Every other call goes to the real
//! catalog.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use iceberg::table::Table;
use iceberg::{Catalog, Error, ErrorKind, Result, TableCommit, TableIdent};

/// What the next table commits do; each counter is used up one commit at a time, in the
/// order the fields are listed.
#[derive(Debug, Default)]
pub struct CommitFaults {
    /// Fail without committing.
    pub fail: AtomicUsize,
    /// Report success without committing.
    pub lose: AtomicUsize,
    /// Commit, then report a failure.
    pub commit_then_fail: AtomicUsize,
}

fn take(counter: &AtomicUsize) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

#[derive(Debug)]
pub struct FaultyCatalog {
    pub inner: Arc<dyn Catalog>,
    pub faults: Arc<CommitFaults>,
}

impl FaultyCatalog {
    pub fn wrap(inner: Arc<dyn Catalog>) -> (Arc<dyn Catalog>, Arc<CommitFaults>) {
        let faults = Arc::new(CommitFaults::default());
        let catalog = Arc::new(Self {
            inner,
            faults: faults.clone(),
        });
        (catalog, faults)
    }
}

catalog_wrapper!(FaultyCatalog, inner, {
    async fn load_table(&self, table: &TableIdent) -> Result<Table> {
        self.inner.load_table(table).await
    }

    async fn update_table(&self, commit: TableCommit) -> Result<Table> {
        let injected = |what: &str| Error::new(ErrorKind::Unexpected, format!("injected: {what}"));
        if take(&self.faults.fail) {
            return Err(injected("commit failed"));
        }
        if take(&self.faults.lose) {
            // What the caller would be handed had the commit gone through.
            let current = self.inner.load_table(commit.identifier()).await?;
            return commit.apply(current);
        }
        if take(&self.faults.commit_then_fail) {
            self.inner.update_table(commit).await?;
            return Err(injected("response lost after the commit"));
        }
        self.inner.update_table(commit).await
    }
});
