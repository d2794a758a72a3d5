//! Bounded parallelism: at most N jobs in flight, the first error ends the work and cancels
//! what is still running.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use std::collections::BTreeMap;

use futures_core::Stream;
use futures_util::{
    StreamExt as _,
    stream::{self, FuturesUnordered},
};
use tokio::task::{JoinError, JoinHandle};

use crate::error::{Error, Result};

/// The default number of jobs in flight: enough to keep a pool of 16 connections busy.
const DEFAULT_LIMIT: usize = 16;

/// Runs jobs with at most [`limit`](ParallelBuilder::limit) in flight.
///
/// - [`map`](Self::map) / [`map_unordered`](Self::map_unordered) process a stream, in input
///   order or as jobs finish; [`try_join_all`](Self::try_join_all) and
///   [`join_all`](Self::join_all) run a list of independent calls.
/// - They run the jobs concurrently inside the caller's task (right for I/O: queries, HTTP
///   calls). [`spawn_map`](Self::spawn_map) and
///   [`spawn_map_unordered`](Self::spawn_map_unordered) run each job on its own tokio task, so
///   CPU work spreads over the runtime's workers.
/// - **The first error ends the work**: it is yielded (or returned), no further job starts,
///   and the jobs still in flight are dropped, which cancels them (spawned jobs are aborted).
///   Dropping the stream or future cancels everything likewise.
///
/// ```
/// use brisk_stream::Parallel;
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let parallel = Parallel::builder().limit(4).build()?;
/// let prices = parallel
///     .try_join_all((1..=10).map(|id| async move { Ok::<_, std::io::Error>(id * 100) }))
///     .await?;
/// assert_eq!(prices, (1..=10).map(|id| id * 100).collect::<Vec<_>>());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Parallel {
    limit: usize,
}

impl Default for Parallel {
    fn default() -> Self {
        Self {
            limit: DEFAULT_LIMIT,
        }
    }
}

/// Configures [`Parallel`]; from [`Parallel::builder`].
#[derive(Debug, Clone, Copy)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct ParallelBuilder {
    limit: usize,
}

impl ParallelBuilder {
    /// The most jobs in flight at once. Default 16; at least 1.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// The runner, or [`Error::Config`] for a limit of 0.
    pub fn build(self) -> Result<Parallel> {
        if self.limit == 0 {
            return Err(Error::config(
                "limit",
                0,
                "at least one job must be allowed in flight",
            ));
        }
        Ok(Parallel { limit: self.limit })
    }
}

impl Parallel {
    /// Configures a runner.
    pub fn builder() -> ParallelBuilder {
        ParallelBuilder {
            limit: DEFAULT_LIMIT,
        }
    }

    /// The most jobs in flight at once.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// `f` over every item, at most `limit` at a time, results in input order. The first
    /// error to happen ends the stream at once: it is yielded next, and results of earlier
    /// items not yet yielded are dropped with the jobs still running.
    pub fn map<St, F, Fut, T, E>(&self, items: St, f: F) -> impl Stream<Item = Result<T, E>>
    where
        St: Stream,
        F: FnMut(St::Item) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        Jobs::new(items, f, self.limit, true)
    }

    /// `f` over every item, at most `limit` at a time, results as they finish. Ends after the
    /// first error, which it yields.
    pub fn map_unordered<St, F, Fut, T, E>(
        &self,
        items: St,
        f: F,
    ) -> impl Stream<Item = Result<T, E>>
    where
        St: Stream,
        F: FnMut(St::Item) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        Jobs::new(items, f, self.limit, false)
    }

    /// Like [`map`](Self::map), with each job on its own tokio task. A job that panics becomes
    /// an error, `E::from` its [`JoinError`]; jobs still running when the stream ends or is
    /// dropped are aborted.
    pub fn spawn_map<St, F, Fut, T, E>(
        &self,
        items: St,
        mut f: F,
    ) -> impl Stream<Item = Result<T, E>>
    where
        St: Stream,
        F: FnMut(St::Item) -> Fut,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: From<JoinError> + Send + 'static,
    {
        self.map(items, move |item| Spawned(tokio::spawn(f(item))))
    }

    /// Like [`map_unordered`](Self::map_unordered), with each job on its own tokio task (see
    /// [`spawn_map`](Self::spawn_map)).
    pub fn spawn_map_unordered<St, F, Fut, T, E>(
        &self,
        items: St,
        mut f: F,
    ) -> impl Stream<Item = Result<T, E>>
    where
        St: Stream,
        F: FnMut(St::Item) -> Fut,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: From<JoinError> + Send + 'static,
    {
        self.map_unordered(items, move |item| Spawned(tokio::spawn(f(item))))
    }

    /// Runs independent calls, at most `limit` at a time, and returns their results in order,
    /// or the first error to happen (the calls still running are cancelled, the rest never
    /// start).
    pub async fn try_join_all<I, Fut, T, E>(&self, calls: I) -> Result<Vec<T>, E>
    where
        I: IntoIterator<Item = Fut>,
        Fut: Future<Output = Result<T, E>>,
    {
        let calls = calls.into_iter();
        let mut results = Vec::with_capacity(calls.size_hint().0);
        let mut stream = std::pin::pin!(self.map(stream::iter(calls), |call| call));
        while let Some(result) = stream.next().await {
            results.push(result?);
        }
        Ok(results)
    }

    /// Runs independent calls, at most `limit` at a time, and returns every output in order.
    pub async fn join_all<I, Fut>(&self, calls: I) -> Vec<Fut::Output>
    where
        I: IntoIterator<Item = Fut>,
        Fut: Future,
    {
        stream::iter(calls).buffered(self.limit).collect().await
    }
}

/// A job on its own task, aborted when dropped before it finishes.
struct Spawned<T>(JoinHandle<T>);

impl<T, E: From<JoinError>> Future for Spawned<Result<T, E>> {
    type Output = Result<T, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|joined| joined.unwrap_or_else(|error| Err(E::from(error))))
    }
}

impl<T> Drop for Spawned<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pin_project_lite::pin_project! {
    /// A job with its input position.
    struct Indexed<Fut> {
        index: u64,
        #[pin]
        job: Fut,
    }
}

impl<Fut: Future> Future for Indexed<Fut> {
    type Output = (u64, Fut::Output);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let index = *this.index;
        this.job.poll(cx).map(|output| (index, output))
    }
}

pin_project_lite::pin_project! {
    /// The jobs of one `map`: at most `limit` running or finished-but-waiting-for-its-turn.
    struct Jobs<St, F, Fut: Future<Output = Result<T, E>>, T, E> {
        #[pin]
        items: St,
        f: F,
        running: FuturesUnordered<Indexed<Fut>>,
        // Ordered only: results that finished before an earlier one, by position.
        waiting: BTreeMap<u64, T>,
        next_in: u64,
        next_out: u64,
        limit: usize,
        ordered: bool,
        items_done: bool,
        finished: bool,
    }
}

impl<St, F, Fut, T, E> Jobs<St, F, Fut, T, E>
where
    St: Stream,
    F: FnMut(St::Item) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    fn new(items: St, f: F, limit: usize, ordered: bool) -> Self {
        Self {
            items,
            f,
            running: FuturesUnordered::new(),
            waiting: BTreeMap::new(),
            next_in: 0,
            next_out: 0,
            limit,
            ordered,
            items_done: false,
            finished: false,
        }
    }
}

impl<St, F, Fut, T, E> Stream for Jobs<St, F, Fut, T, E>
where
    St: Stream,
    F: FnMut(St::Item) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    type Item = Result<T, E>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        loop {
            if *this.finished {
                return Poll::Ready(None);
            }
            if let Some(result) = this.waiting.remove(this.next_out) {
                *this.next_out += 1;
                return Poll::Ready(Some(Ok(result)));
            }
            // Start jobs while there is room; waiting results hold their room.
            while !*this.items_done && this.running.len() + this.waiting.len() < *this.limit {
                match this.items.as_mut().poll_next(cx) {
                    Poll::Ready(Some(item)) => {
                        let job = (this.f)(item);
                        this.running.push(Indexed {
                            index: *this.next_in,
                            job,
                        });
                        *this.next_in += 1;
                    }
                    Poll::Ready(None) => *this.items_done = true,
                    Poll::Pending => break,
                }
            }
            match this.running.poll_next_unpin(cx) {
                Poll::Ready(Some((index, Ok(result)))) => {
                    if !*this.ordered {
                        return Poll::Ready(Some(Ok(result)));
                    }
                    if index == *this.next_out {
                        *this.next_out += 1;
                        return Poll::Ready(Some(Ok(result)));
                    }
                    this.waiting.insert(index, result);
                }
                Poll::Ready(Some((_, Err(error)))) => {
                    // The end: what is still running is dropped (cancelled) now.
                    *this.finished = true;
                    this.running.clear();
                    this.waiting.clear();
                    return Poll::Ready(Some(Err(error)));
                }
                Poll::Ready(None) if *this.items_done => {
                    *this.finished = true;
                    return Poll::Ready(None);
                }
                // Nothing running and no item ready yet: the item stream will wake us.
                Poll::Ready(None) | Poll::Pending => return Poll::Pending,
            }
        }
    }
}
