//! What the loading levels share: loads in flight keyed by key and loader error type, and
//! how a finished flight's error reaches each caller as this crate's [`Error`].

use std::{any::Any, fmt, sync::Arc};

use brisk_dedup::SingleFlight;

use crate::Error;

/// A loader's error while it is shared between the callers of one load; each caller gets it
/// back as its own type (the flight key holds the type's id).
pub(crate) type SharedError = Arc<dyn Any + Send + Sync>;

/// Loads in flight, one per key and loader error type.
pub(crate) type Flights<K, V> = SingleFlight<(K, std::any::TypeId), V, SharedError>;

/// A load given up on at its hard timeout (it goes on in the background): the flight's
/// error in place of the loader's own.
#[derive(Debug)]
pub(crate) struct LoadTimedOut(pub(crate) std::time::Duration);

/// A flight whose leader had no loader to run (not reached: see its use).
#[derive(Debug)]
pub(crate) struct NotLoaded;

/// A load that failed in another instance (loads coordinated across instances): its error
/// as text, in place of the loader's own.
#[derive(Debug)]
pub(crate) struct LoadedElsewhere(pub(crate) String);

/// A flight's error as the caller's: the loader's own error, its panic, or the wait timeout.
pub(crate) fn caller_error<E: Send + Sync + 'static>(
    key: &impl fmt::Debug,
    error: brisk_dedup::Error<SharedError>,
) -> Error<Arc<E>> {
    let key = format!("{key:?}");
    match error.into_work_error() {
        Ok(shared) if shared.is::<LoadTimedOut>() => match shared.downcast::<LoadTimedOut>() {
            Ok(timed_out) => Error::LoadTimeout {
                key,
                after: timed_out.0,
            },
            Err(_) => unreachable_flight(key),
        },
        Ok(shared) if shared.is::<NotLoaded>() => Error::Flight {
            key,
            message: "the load had no loader to run".to_owned(),
        },
        Ok(shared) if shared.is::<LoadedElsewhere>() => {
            match shared.downcast::<LoadedElsewhere>() {
                Ok(elsewhere) => Error::Flight {
                    key,
                    message: format!("the load failed in another instance: {}", elsewhere.0),
                },
                Err(_) => unreachable_flight(key),
            }
        }
        Ok(shared) => match shared.downcast::<E>() {
            Ok(source) => Error::Load { key, source },
            // The flight key holds the error's type id, so every caller of a load has the
            // loader's error type: this arm is not reached.
            Err(_) => unreachable_flight(key),
        },
        Err(brisk_dedup::Error::Panicked { message, .. }) => Error::LoadPanicked { key, message },
        Err(brisk_dedup::Error::WaitTimeout { waited, .. }) => {
            Error::LoadWaitTimeout { key, waited }
        }
        Err(other) => Error::Flight {
            key,
            message: format!("{other:?}"),
        },
    }
}

/// A flight's error of a type no caller of it expects: not reached (see `caller_error`), and
/// an error rather than a panic if it were.
fn unreachable_flight<E>(key: String) -> Error<E> {
    Error::Flight {
        key,
        message: "the loader's error has another type".to_owned(),
    }
}
