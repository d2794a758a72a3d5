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
    error::{BoxError, Error},
    keyset::{KeyValue, Keyset, Plan, check_key},
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
/// - **Errors**: the stream ends with an error after the rows before it, never early and
///   cleanly: [`Error::Fetch`] when a page's query fails (its error as the source), and
///   [`Error::SortKey`] when `key` gives a key that cannot be the next page's position (another
///   number of values than sort columns, NULL in a NOT NULL column, or the key the page started
///   after, which would fetch the same page forever). Encoded, either aborts the body, so a
///   client never takes a cut-short export for a whole one. Nothing follows an error.
#[must_use = "streams do nothing unless polled"]
pub struct KeysetStream<T, E, F, K> {
    keyset: Keyset,
    page_size: usize,
    fetch: F,
    key: K,
    current: std::vec::IntoIter<T>,
    next: Option<PageFuture<T, E>>,
    arrived: Option<Result<Vec<T>, E>>,
    /// The key the page in flight starts after.
    after: Option<Vec<KeyValue>>,
    /// The error the stream ends with once the current page's rows are out.
    failure: Option<Error>,
    /// Rows given so far.
    rows: u64,
    /// Whether the stream has ended (with or without an error).
    done: bool,
}

impl<T, E, F, K> fmt::Debug for KeysetStream<T, E, F, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeysetStream")
            .field("page_size", &self.page_size)
            .field("buffered", &self.current.len())
            .field("fetching", &self.next.is_some())
            .field("rows", &self.rows)
            .field("done", &self.done)
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
            after: None,
            failure: None,
            rows: 0,
            done: false,
        }
    }

    /// Starts the query for the page after `last`; a key that cannot be its position is the
    /// error the stream ends with, after the rows it has.
    fn fetch_after(&mut self, last: &T) {
        let key = (self.key)(last);
        let plan = check_key(&self.keyset.columns, self.after.as_deref(), &key).and_then(|()| {
            self.keyset
                .plan_exact(Some(Cursor::after(key.clone())), self.page_size)
        });
        match plan {
            Ok(plan) => {
                self.after = Some(key);
                self.next = Some(Box::pin((self.fetch)(plan)));
            }
            Err(error) => self.failure = Some(error),
        }
    }
}

impl<T, E, F, Fut, K> Stream for KeysetStream<T, E, F, K>
where
    T: Unpin,
    E: Into<BoxError> + Unpin,
    F: FnMut(Plan) -> Fut + Unpin,
    Fut: Future<Output = Result<Vec<T>, E>> + Send + 'static,
    K: Fn(&T) -> Vec<KeyValue> + Unpin,
{
    type Item = Result<T, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            // Drive the query in flight, whether or not rows are waiting.
            if let Some(next) = this.next.as_mut()
                && let Poll::Ready(result) = next.as_mut().poll(cx)
            {
                this.next = None;
                this.arrived = Some(result);
            }
            if let Some(row) = this.current.next() {
                this.rows += 1;
                return Poll::Ready(Some(Ok(row)));
            }
            if let Some(error) = this.failure.take() {
                this.done = true;
                return Poll::Ready(Some(Err(error)));
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
                Some(Err(error)) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(Error::Fetch {
                        rows: this.rows,
                        source: error.into(),
                    })));
                }
                None if this.next.is_none() => {
                    this.done = true;
                    return Poll::Ready(None);
                }
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
    /// order. The stream's errors are [`Error::Fetch`] (with `fetch`'s error as its source)
    /// and [`Error::SortKey`] (a key from `key` that cannot be a position).
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
