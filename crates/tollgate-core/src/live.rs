//! Sessions in progress on a front, so a shutdown can wait until they have ended.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// Counts a front's live sessions and wakes waiters when the last one ends.
#[derive(Default)]
pub struct LiveSessions {
    count: AtomicUsize,
    idle: Notify,
}

/// One live session; ends when dropped.
pub struct LiveSession<'a>(&'a LiveSessions);

impl Drop for LiveSession<'_> {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl LiveSessions {
    /// Counts a session until the returned guard is dropped.
    pub fn enter(&self) -> LiveSession<'_> {
        self.count.fetch_add(1, Ordering::AcqRel);
        LiveSession(self)
    }

    /// Sessions in progress.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Waits until no session is left, or the timeout passes; whether none is left.
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.idle.notified();
            if self.count() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.count() == 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[tokio::test]
    async fn waiters_wake_when_the_last_session_ends() {
        let live = std::sync::Arc::new(LiveSessions::default());
        assert!(live.wait_idle(Duration::from_millis(1)).await);
        let guard = live.enter();
        let second = live.enter();
        assert_eq!(live.count(), 2);
        assert!(!live.wait_idle(Duration::from_millis(20)).await);
        drop(second);
        let waiter = {
            let live = std::sync::Arc::clone(&live);
            tokio::spawn(async move { live.wait_idle(Duration::from_secs(5)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(guard);
        assert!(waiter.await.unwrap());
    }
}
