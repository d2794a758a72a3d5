//! Polling a future with panics caught, so that a panicking execution becomes an outcome that
//! every waiter can receive.

use std::{
    any::Any,
    fmt,
    future::Future,
    panic::{AssertUnwindSafe, catch_unwind},
    pin::Pin,
    task::{Context, Poll},
};

use crate::{Error, metrics::Metrics};

pin_project_lite::pin_project! {
    /// Resolves to `Err(message)` when the inner future panics while polled.
    pub(crate) struct CatchUnwind<F> {
        #[pin]
        inner: F,
    }
}

impl<F> CatchUnwind<F> {
    pub(crate) fn new(inner: F) -> Self {
        Self { inner }
    }
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, String>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.project().inner;
        // The future is dropped right after a panic and never polled again, so no broken
        // invariant inside it can be observed: asserting unwind safety is sound here.
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Err(payload) => Poll::Ready(Err(panic_message(payload.as_ref()))),
        }
    }
}

/// What every caller of an execution receives: the work's value, its error, or its panic,
/// naming the key.
pub(crate) fn outcome<T, E>(
    caught: Result<Result<T, E>, String>,
    key: &(impl fmt::Debug + ?Sized),
    metrics: &Metrics,
) -> Result<T, Error<E>> {
    match caught {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(Error::Work {
            key: format!("{key:?}"),
            error,
        }),
        Err(message) => {
            metrics.panics.increment();
            Err(Error::Panicked {
                key: format!("{key:?}"),
                message,
            })
        }
    }
}

/// The text of a panic payload: `panic!("...")` carries a `&str` or a `String`.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic payload is not a string".to_owned()
    }
}
