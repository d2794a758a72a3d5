//! Pub/sub wake-ups for followers: a leader's release publishes its lease key, and one
//! subscriber task per flight wakes the local follower of that key at once instead of at its
//! next poll. Polling stays: a message lost to a reconnection only delays a follower until it
//! polls.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, OnceLock, PoisonError, Weak,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures_util::StreamExt;
use tokio::{sync::Notify, task::JoinHandle};

/// The subscriber side of one flight.
pub(super) struct Wakeups {
    client: redis::Client,
    channel: String,
    connect_timeout: Duration,
    /// Lease key → its follower's `Notify` and how many followers registered it. Entries are
    /// removed when their last follower leaves, so the map holds only keys being followed now.
    waiters: Mutex<HashMap<String, (Arc<Notify>, usize)>>,
    /// Whether the subscription is live (messages can arrive).
    subscribed: AtomicBool,
    /// The subscriber task, started by the first follower (a runtime is running then).
    task: OnceLock<JoinHandle<()>>,
}

impl Wakeups {
    pub(super) fn new(client: redis::Client, channel: String, connect_timeout: Duration) -> Self {
        Self {
            client,
            channel,
            connect_timeout,
            waiters: Mutex::new(HashMap::new()),
            subscribed: AtomicBool::new(false),
            task: OnceLock::new(),
        }
    }

    /// Whether messages arrive now; while they do, followers can poll at the slow end.
    pub(super) fn is_subscribed(&self) -> bool {
        self.subscribed.load(Ordering::Acquire)
    }

    /// Registers a follower of `lease`, starting the subscriber task on first use. The
    /// returned guard's [`Notify`] is woken when a release of `lease` is published.
    pub(super) fn register(self: &Arc<Self>, lease: &str) -> Waiter {
        self.task
            .get_or_init(|| tokio::spawn(listen(Arc::downgrade(self))));
        let notify = {
            let mut waiters = self.waiters.lock().unwrap_or_else(PoisonError::into_inner);
            let entry = waiters
                .entry(lease.to_owned())
                .or_insert_with(|| (Arc::new(Notify::new()), 0));
            entry.1 += 1;
            Arc::clone(&entry.0)
        };
        Waiter {
            wakeups: Arc::clone(self),
            lease: lease.to_owned(),
            notify,
        }
    }

    fn wake(&self, lease: &str) {
        let waiters = self.waiters.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((notify, _)) = waiters.get(lease) {
            notify.notify_waiters();
        }
    }

    /// Keys followed right now (for tests: entries must not outlive their followers).
    #[cfg(test)]
    fn followed(&self) -> usize {
        self.waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl Drop for Wakeups {
    fn drop(&mut self) {
        if let Some(task) = self.task.get() {
            task.abort();
        }
    }
}

/// One follower's registration; leaving (drop) unregisters it.
pub(super) struct Waiter {
    wakeups: Arc<Wakeups>,
    lease: String,
    notify: Arc<Notify>,
}

impl Waiter {
    pub(super) fn notify(&self) -> &Notify {
        &self.notify
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let mut waiters = self
            .wakeups
            .waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = waiters.get_mut(&self.lease) {
            entry.1 -= 1;
            if entry.1 == 0 {
                waiters.remove(&self.lease);
            }
        }
    }
}

/// Subscribes and wakes followers until the flight is dropped; reconnects with backoff
/// (50 ms doubling to 2 s) when the subscription fails or its connection drops.
async fn listen(wakeups: Weak<Wakeups>) {
    const FIRST_RETRY: Duration = Duration::from_millis(50);
    let mut retry = FIRST_RETRY;
    loop {
        let Some(strong) = wakeups.upgrade() else {
            return;
        };
        let (client, channel, timeout) = (
            strong.client.clone(),
            strong.channel.clone(),
            strong.connect_timeout,
        );
        drop(strong);
        let subscribed = tokio::time::timeout(timeout, async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        })
        .await;
        if let Ok(Ok(pubsub)) = subscribed {
            retry = FIRST_RETRY;
            let mut messages = pubsub.into_on_message();
            match wakeups.upgrade() {
                Some(strong) => strong.subscribed.store(true, Ordering::Release),
                None => return,
            }
            while let Some(message) = messages.next().await {
                let Some(strong) = wakeups.upgrade() else {
                    return;
                };
                if let Ok(lease) = message.get_payload::<String>() {
                    strong.wake(&lease);
                }
            }
            match wakeups.upgrade() {
                Some(strong) => strong.subscribed.store(false, Ordering::Release),
                None => return,
            }
        }
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(Duration::from_secs(2));
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use super::*;

    fn wakeups() -> Arc<Wakeups> {
        // Nothing listens on port 1: the task retries in the background, registration works.
        let client = redis::Client::open("redis://127.0.0.1:1/").unwrap();
        Arc::new(Wakeups::new(
            client,
            "c".to_owned(),
            Duration::from_millis(100),
        ))
    }

    #[tokio::test]
    async fn entries_live_as_long_as_their_followers() {
        let wakeups = wakeups();
        let first = wakeups.register("a");
        let second = wakeups.register("a");
        let other = wakeups.register("b");
        assert_eq!(wakeups.followed(), 2);
        drop(first);
        assert_eq!(wakeups.followed(), 2, "a still has a follower");
        drop(second);
        drop(other);
        assert_eq!(wakeups.followed(), 0);
        assert!(!wakeups.is_subscribed());
    }

    #[tokio::test]
    async fn a_wake_reaches_the_followers_of_that_key_only() {
        let wakeups = wakeups();
        let a = wakeups.register("a");
        let b = wakeups.register("b");
        let mut woken_a = std::pin::pin!(a.notify().notified());
        let mut woken_b = std::pin::pin!(b.notify().notified());
        woken_a.as_mut().enable();
        woken_b.as_mut().enable();
        wakeups.wake("a");
        wakeups.wake("unknown");
        tokio::time::timeout(Duration::from_secs(10), woken_a)
            .await
            .expect("a is woken");
        let pending = std::future::poll_fn(|cx| {
            std::task::Poll::Ready(woken_b.as_mut().poll(cx).is_pending())
        })
        .await;
        assert!(pending, "b was not released");
    }
}
