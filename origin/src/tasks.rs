//! The origin's background tasks. Each is spawned here, into one tracker, under one cancellation token:
//! stopping the origin cancels them all and returns once every one has ended, so whatever they held (the
//! store above all) is released then, not whenever a handle happens to be dropped.

use std::future::Future;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Debug, Clone, Default)]
pub struct Tasks {
    tracker: TaskTracker,
    stop: CancellationToken,
}

impl Tasks {
    /// Runs `work` in the background until it ends or the origin stops, whichever comes first.
    pub fn spawn(&self, work: impl Future<Output = ()> + Send + 'static) {
        let stop = self.stop.clone();
        self.tracker.spawn(async move {
            stop.run_until_cancelled(work).await;
        });
    }

    /// Completes when the origin starts stopping.
    pub async fn stopping(&self) {
        self.stop.cancelled().await;
    }

    /// Cancels every task and waits until all have ended. Tasks spawned afterwards end at once.
    pub async fn stop(&self) {
        self.stop.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn stopping_ends_every_task_and_releases_what_it_held() {
        let tasks = Tasks::default();
        let held = Arc::new(());
        for _ in 0..3 {
            let held = held.clone();
            tasks.spawn(async move {
                let _held = held;
                std::future::pending::<()>().await;
            });
        }
        let finished = Arc::new(());
        let short = finished.clone();
        tasks.spawn(async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            drop(short);
        });
        assert_eq!(Arc::strong_count(&held), 4);
        tasks.stop().await;
        assert_eq!(
            Arc::strong_count(&held),
            1,
            "a stopped task still holds what it was given"
        );
        assert_eq!(Arc::strong_count(&finished), 1);

        let late = held.clone();
        tasks.spawn(async move {
            let _late = late;
            std::future::pending::<()>().await;
        });
        tasks.stopping().await;
        tokio::task::yield_now().await;
        tasks.stop().await;
        assert_eq!(
            Arc::strong_count(&held),
            1,
            "a task spawned after the stop must end at once"
        );
    }
}
