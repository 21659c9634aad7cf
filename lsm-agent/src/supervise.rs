//! The daemon's long-running tasks under one shutdown signal.
//!
//! Every task is meant to run until the agent stops. One that ends before that (with an
//! error or not, or by panicking) stops the agent with an error, so that a supervisor
//! (systemd, a DaemonSet) restarts it instead of letting it run blind.

use std::{collections::HashMap, error::Error as StdError, future::Future, time::Duration};

use tokio::task::{Id, JoinError, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

/// What a task ends with.
pub type TaskResult = Result<(), Box<dyn StdError + Send + Sync>>;

/// Why the agent stops abnormally.
#[derive(Debug, thiserror::Error)]
pub enum Stopped {
    #[error("{task} ended")]
    Ended { task: &'static str },
    #[error("{task} failed: {source}")]
    Failed {
        task: &'static str,
        source: Box<dyn StdError + Send + Sync>,
    },
    #[error("{task} died: {source}")]
    Panicked {
        task: &'static str,
        source: JoinError,
    },
}

/// The tasks, and the token every one of them stops at.
pub struct Tasks {
    set: JoinSet<TaskResult>,
    names: HashMap<Id, &'static str>,
    stop: CancellationToken,
}

impl Default for Tasks {
    fn default() -> Self {
        Self::new()
    }
}

impl Tasks {
    pub fn new() -> Self {
        Tasks {
            set: JoinSet::new(),
            names: HashMap::new(),
            stop: CancellationToken::new(),
        }
    }

    /// Cancelled when the agent stops: for tasks that shut down gracefully by themselves.
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// A task that watches [`Self::stop_token`] itself.
    pub fn spawn(
        &mut self,
        name: &'static str,
        task: impl Future<Output = TaskResult> + Send + 'static,
    ) {
        let id = self.set.spawn(task).id();
        self.names.insert(id, name);
    }

    /// A task that is simply dropped when the agent stops.
    pub fn spawn_until_stopped(
        &mut self,
        name: &'static str,
        task: impl Future<Output = TaskResult> + Send + 'static,
    ) {
        let stop = self.stop.clone();
        self.spawn(name, async move {
            match stop.run_until_cancelled(task).await {
                None => Ok(()),
                // It ended on its own while the agent was stopping: a task upstream of it was
                // stopped first (the decoder's queue closes once the reader is gone). That is
                // the stop, not a failure; `run_until_cancelled` favours the completed future.
                Some(_) if stop.is_cancelled() => Ok(()),
                Some(result) => result,
            }
        });
    }

    fn outcome(&self, joined: Result<(Id, TaskResult), JoinError>) -> Result<(), Stopped> {
        let name = |id| self.names.get(&id).copied().unwrap_or("a task");
        match joined {
            Ok((_, Ok(()))) if self.stop.is_cancelled() => Ok(()),
            Ok((id, Ok(()))) => Err(Stopped::Ended { task: name(id) }),
            Ok((id, Err(source))) => Err(Stopped::Failed {
                task: name(id),
                source,
            }),
            Err(source) => Err(Stopped::Panicked {
                task: name(source.id()),
                source,
            }),
        }
    }

    /// Runs until `signal` or until the first task ends; then stops every task and waits (at
    /// most `grace`, after which the rest are aborted) for them to finish. Every abnormal end
    /// is logged; the first one is returned.
    pub async fn run(
        mut self,
        signal: impl Future<Output = ()>,
        grace: Duration,
    ) -> Result<(), Stopped> {
        let first = tokio::select! {
            () = signal => Ok(()),
            Some(joined) = self.set.join_next_with_id() => self.outcome(joined),
        };
        if let Err(e) = &first {
            error!("{e}; stopping the agent so that it is restarted");
        }
        self.stop.cancel();
        let mut failed = first.err();
        let drain = async {
            while let Some(joined) = self.set.join_next_with_id().await {
                if let Err(e) = self.outcome(joined) {
                    error!("while stopping: {e}");
                    failed.get_or_insert(e);
                }
            }
        };
        if tokio::time::timeout(grace, drain).await.is_err() {
            warn!("tasks still running after {grace:?}; aborting them");
            self.set.shutdown().await;
        }
        failed.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    };

    use super::*;

    const GRACE: Duration = Duration::from_secs(5);

    /// A task that runs until the agent stops.
    async fn forever() -> TaskResult {
        std::future::pending().await
    }

    #[tokio::test]
    async fn a_task_that_fails_because_its_upstream_was_stopped_does_not_fail_the_stop() {
        let mut tasks = Tasks::new();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        tasks.spawn_until_stopped("reader", async move {
            let _tx = tx;
            forever().await
        });
        tasks.spawn_until_stopped("decoder", async move {
            while rx.recv().await.is_some() {}
            Err("the reader's queue closed".into())
        });
        // Whichever of the two the runtime polls first, a stop is a clean stop.
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        tasks.run(async {}, GRACE).await.unwrap();
    }

    #[tokio::test]
    async fn a_task_failing_before_the_stop_still_fails_the_agent() {
        let mut tasks = Tasks::new();
        tasks.spawn_until_stopped("decoder", async { Err("queue closed".into()) });
        let err = tasks.run(std::future::pending(), GRACE).await.unwrap_err();
        assert!(err.to_string().contains("decoder failed"), "{err}");
    }

    #[tokio::test]
    async fn the_signal_stops_every_task_and_waits_for_graceful_ones() {
        let mut tasks = Tasks::new();
        tasks.spawn_until_stopped("reader", forever());
        let flushed = Arc::new(AtomicBool::new(false));
        let (stop, done) = (tasks.stop_token(), flushed.clone());
        tasks.spawn("export", async move {
            stop.cancelled().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            done.store(true, Ordering::SeqCst);
            Ok(())
        });
        tasks.run(async {}, GRACE).await.unwrap();
        assert!(
            flushed.load(Ordering::SeqCst),
            "the flush ran before the end"
        );
    }

    #[tokio::test]
    async fn a_task_that_ends_early_stops_the_agent_with_its_name() {
        let mut tasks = Tasks::new();
        tasks.spawn_until_stopped("policy owner", forever());
        tasks.spawn_until_stopped("ring-buffer reader", async { Ok(()) });
        let e = tasks.run(std::future::pending(), GRACE).await.unwrap_err();
        assert!(
            matches!(
                e,
                Stopped::Ended {
                    task: "ring-buffer reader"
                }
            ),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_failing_or_panicking_task_stops_the_agent_with_why() {
        let mut tasks = Tasks::new();
        tasks.spawn_until_stopped("reader", forever());
        tasks.spawn_until_stopped("gRPC server", async { Err("address in use".into()) });
        let e = tasks.run(std::future::pending(), GRACE).await.unwrap_err();
        assert_eq!(e.to_string(), "gRPC server failed: address in use");

        let mut tasks = Tasks::new();
        tasks.spawn_until_stopped("event decoder", async { panic!("bad event") });
        let e = tasks.run(std::future::pending(), GRACE).await.unwrap_err();
        assert!(
            matches!(
                e,
                Stopped::Panicked {
                    task: "event decoder",
                    ..
                }
            ),
            "{e}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_ignores_the_signal_is_aborted_after_the_grace_period() {
        let mut tasks = Tasks::new();
        tasks.spawn("stubborn", forever());
        let started = tokio::time::Instant::now();
        tasks.run(async {}, GRACE).await.unwrap();
        assert_eq!(started.elapsed(), GRACE);
    }
}
