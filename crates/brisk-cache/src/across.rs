//! Loads run once across instances (feature `redis`): brisk-dedup's `RedisFlight` around a
//! tiered cache's load. The leader stores its value in the levels as any load does; the flight
//! only announces that it finished, and followers read the value from L2.

use std::{convert::Infallible, future::Future, pin::Pin};

use brisk_dedup::redis::{RedisFlight, ResultStore};
use redis::aio::ConnectionLike;

use crate::tiered::Across;

/// The flight's result store: nothing to keep, the value is in L2 already. A follower told
/// "done" reads L2, and loads itself if the value is not there.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Announce;

impl ResultStore<()> for Announce {
    type Error = Infallible;

    async fn save(&self, _: &str, (): &()) -> Result<(), Infallible> {
        Ok(())
    }

    async fn load(&self, _: &str) -> Result<Option<()>, Infallible> {
        Ok(Some(()))
    }
}

impl<C> Across for RedisFlight<C, Announce, (), String>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    fn run<'a>(
        &'a self,
        key: &'a str,
        work: Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>,
    ) -> Pin<Box<dyn Future<Output = Result<(), brisk_dedup::Error<String>>> + Send + 'a>> {
        Box::pin(RedisFlight::run(self, key, || work))
    }
}
