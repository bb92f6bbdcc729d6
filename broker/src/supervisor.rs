//! The broker's background work under one owner: the appender, cluster registration, the
//! metadata refresher, group timers, the garbage collector and the compactor (a thread of
//! its own). Every task watches the broker's shutdown token; [`Supervisor::join`] waits
//! for them after it is cancelled, in order and within a deadline, so a graceful stop
//! commits what was accepted, releases compaction leases and deregisters the broker before
//! the process exits. A task that panicked, or did not stop in time, is logged by name.

use std::time::Duration;

use tokio::task::JoinHandle;

enum Handle {
    Task(JoinHandle<()>),
    Thread(std::thread::JoinHandle<()>),
}

#[derive(Default)]
pub struct Supervisor {
    tasks: Vec<(&'static str, Handle)>,
}

impl Supervisor {
    /// Takes over a spawned task; tasks are joined in the order they were added.
    pub fn task(&mut self, name: &'static str, handle: JoinHandle<()>) {
        self.tasks.push((name, Handle::Task(handle)));
    }

    /// Takes over a thread (the compactor runs on its own runtime).
    pub fn thread(&mut self, name: &'static str, handle: std::thread::JoinHandle<()>) {
        self.tasks.push((name, Handle::Thread(handle)));
    }

    /// Waits for every task, at most `deadline` in all (call after cancelling the shutdown
    /// token). Returns the names of the tasks that did not stop in time.
    pub async fn join(self, deadline: Duration) -> Vec<&'static str> {
        let until = tokio::time::Instant::now() + deadline;
        let mut late = Vec::new();
        for (name, handle) in self.tasks {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            let outcome = match handle {
                Handle::Task(t) => tokio::time::timeout(left, t)
                    .await
                    .map(|r| r.map_err(|e| e.to_string())),
                Handle::Thread(t) => tokio::time::timeout(
                    left,
                    tokio::task::spawn_blocking(move || {
                        t.join().map_err(|_| "panicked".to_string())
                    }),
                )
                .await
                .map(|r| r.map_err(|e| e.to_string()).and_then(|inner| inner)),
            };
            match outcome {
                Ok(Ok(())) => tracing::debug!(task = name, "task stopped"),
                Ok(Err(e)) => tracing::error!(task = name, error = %e, "task failed"),
                Err(_) => {
                    tracing::warn!(
                        task = name,
                        "task did not stop before the shutdown deadline"
                    );
                    late.push(name);
                }
            }
        }
        late
    }
}
