//! Row streams: a whole sorted table, page by page, with the next page fetched while the
//! current one is consumed.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use futures_core::Stream;

use crate::{
    cursor::Cursor,
    keyset::{KeyValue, Keyset, Plan},
};

/// A page's query in flight.
type PageFuture<T, E> = Pin<Box<dyn Future<Output = Result<Vec<T>, E>> + Send>>;

/// Every row of a keyset-sorted result as one stream, fetched a page at a time; from
/// [`Keyset::stream`].
///
/// - **Prefetch**: as soon as a page arrives, the query for the next one starts (it is driven
///   whenever the stream is polled), so the database works while the consumer encodes and
///   sends; at most two pages are in memory.
/// - **Backpressure**: nothing beyond the next page is fetched until the consumer takes the
///   current one, so a slow client never makes memory grow.
/// - **Short queries**: each page is its own query (with its own pooled connection, if `fetch`
///   takes one from a pool), so an export holds no connection or snapshot for its whole
///   duration. Rows inserted behind the stream's position meanwhile are not seen, and none is
///   seen twice.
/// - **Errors**: a failing page ends the stream with its error, after the rows already
///   fetched.
#[must_use = "streams do nothing unless polled"]
pub struct KeysetStream<T, E, F, K> {
    keyset: Keyset,
    page_size: usize,
    fetch: F,
    key: K,
    current: std::vec::IntoIter<T>,
    next: Option<PageFuture<T, E>>,
    arrived: Option<Result<Vec<T>, E>>,
}

impl<T, E, F, K> fmt::Debug for KeysetStream<T, E, F, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeysetStream")
            .field("page_size", &self.page_size)
            .field("buffered", &self.current.len())
            .field("fetching", &self.next.is_some())
            .finish_non_exhaustive()
    }
}

impl<T, E, F, Fut, K> KeysetStream<T, E, F, K>
where
    F: FnMut(Plan) -> Fut,
    Fut: Future<Output = Result<Vec<T>, E>> + Send + 'static,
    K: Fn(&T) -> Vec<KeyValue>,
{
    pub(crate) fn new(keyset: Keyset, page_size: usize, mut fetch: F, key: K) -> Self {
        let first = keyset
            .plan_exact(None, page_size)
            .map(|plan| Box::pin(fetch(plan)) as PageFuture<T, E>)
            .ok();
        Self {
            keyset,
            page_size,
            fetch,
            key,
            current: Vec::new().into_iter(),
            next: first,
            arrived: None,
        }
    }

    /// Starts the query for the page after `last`.
    fn fetch_after(&mut self, last: &T) {
        let key = (self.key)(last);
        // The key comes from a row of this very sort, so it fits the plan.
        if let Ok(plan) = self
            .keyset
            .plan_exact(Some(Cursor::after(key)), self.page_size)
        {
            self.next = Some(Box::pin((self.fetch)(plan)));
        }
    }
}

impl<T, E, F, Fut, K> Stream for KeysetStream<T, E, F, K>
where
    T: Unpin,
    E: Unpin,
    F: FnMut(Plan) -> Fut + Unpin,
    Fut: Future<Output = Result<Vec<T>, E>> + Send + 'static,
    K: Fn(&T) -> Vec<KeyValue> + Unpin,
{
    type Item = Result<T, E>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            // Drive the query in flight, whether or not rows are waiting.
            if let Some(next) = this.next.as_mut()
                && let Poll::Ready(result) = next.as_mut().poll(cx)
            {
                this.next = None;
                this.arrived = Some(result);
            }
            if let Some(row) = this.current.next() {
                return Poll::Ready(Some(Ok(row)));
            }
            match this.arrived.take() {
                Some(Ok(mut rows)) => {
                    this.keyset.pages.increment();
                    let more = rows.len() > this.page_size;
                    rows.truncate(this.page_size);
                    if let Some(last) = rows.last().filter(|_| more) {
                        this.fetch_after(last);
                    }
                    this.current = rows.into_iter();
                }
                Some(Err(error)) => return Poll::Ready(Some(Err(error))),
                None if this.next.is_none() => return Poll::Ready(None),
                None => return Poll::Pending,
            }
        }
    }
}

impl Keyset {
    /// Every row of this sort as one stream, `page_size` rows per query (from code, so not
    /// bounded by `max_limit`; at least 1), the next page
    /// prefetched (see [`KeysetStream`]). `fetch` runs a page's [`Plan`] (with
    /// [`diesel::filter`](crate::diesel::filter) and friends, or raw SQL) and returns its rows,
    /// at most [`Plan::fetch`] of them; `key` gives a row's sort key in this keyset's column
    /// order.
    pub fn stream<T, E, F, Fut, K>(
        &self,
        page_size: usize,
        fetch: F,
        key: K,
    ) -> KeysetStream<T, E, F, K>
    where
        F: FnMut(Plan) -> Fut,
        Fut: Future<Output = Result<Vec<T>, E>> + Send + 'static,
        K: Fn(&T) -> Vec<KeyValue>,
    {
        KeysetStream::new(self.clone(), page_size, fetch, key)
    }
}
