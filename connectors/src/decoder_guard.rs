//! A fence around the third-party Parquet decoder. Fuzzing found corrupt files on which
//! the `parquet` crate panics instead of returning an error (a page shorter than its
//! header says, a column chunk at a negative offset). Weir cannot check every page before
//! decoding it, so every poll of the footer reader and of a row group's batch stream runs
//! here: a panic inside is caught and becomes the same error a corrupt file gets
//! (`CorruptParquet` / `CorruptRowGroup`, naming the file and the row group), and the
//! stream ends.
//!
//! While a poll runs, [`in_parquet_decoder`] is true on its thread, so that the binary's
//! panic hook (which otherwise ends the process on any panic, as a bug in Weir) lets this
//! one unwind to the fence and prints nothing.

use std::cell::Cell;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use futures::stream::BoxStream;
use parquet::errors::ParquetError;

thread_local! {
    static IN_DECODER: Cell<bool> = const { Cell::new(false) };
}

/// Whether this thread is inside a guarded poll of the Parquet decoder.
pub fn in_parquet_decoder() -> bool {
    IN_DECODER.with(Cell::get)
}

/// Runs `poll` with the flag set; a panic becomes `Err(message)`.
fn guarded<T>(poll: impl FnOnce() -> T) -> Result<T, String> {
    let was = IN_DECODER.with(|flag| flag.replace(true));
    let result = catch_unwind(AssertUnwindSafe(poll));
    IN_DECODER.with(|flag| flag.set(was));
    result.map_err(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("no message");
        format!("the Parquet decoder failed on corrupt data ({message})")
    })
}

/// A future whose panics become a [`ParquetError`].
pub struct GuardedFuture<T> {
    inner: Pin<Box<dyn Future<Output = Result<T, ParquetError>> + Send>>,
}

impl<T> GuardedFuture<T> {
    pub fn new(inner: impl Future<Output = Result<T, ParquetError>> + Send + 'static) -> Self {
        GuardedFuture { inner: Box::pin(inner) }
    }
}

impl<T> Future for GuardedFuture<T> {
    type Output = Result<T, ParquetError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &mut self.inner;
        match guarded(|| inner.as_mut().poll(cx)) {
            Ok(poll) => poll,
            Err(message) => Poll::Ready(Err(ParquetError::General(message))),
        }
    }
}

/// A stream whose panics become one last [`ParquetError`] item.
pub struct GuardedStream<T> {
    inner: Option<BoxStream<'static, Result<T, ParquetError>>>,
}

impl<T> GuardedStream<T> {
    pub fn new(inner: BoxStream<'static, Result<T, ParquetError>>) -> Self {
        GuardedStream { inner: Some(inner) }
    }
}

impl<T> Stream for GuardedStream<T> {
    type Item = Result<T, ParquetError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Some(inner) = self.inner.as_mut() else { return Poll::Ready(None) };
        match guarded(|| inner.as_mut().poll_next(cx)) {
            Ok(poll) => poll,
            Err(message) => {
                self.inner = None;
                Poll::Ready(Some(Err(ParquetError::General(message))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[test]
    fn a_panicking_stream_ends_with_an_error() {
        let inner = futures::stream::iter([1, 2, 3])
            .map(|i| if i == 2 { panic!("boom") } else { Ok::<i32, ParquetError>(i) })
            .boxed();
        let items: Vec<_> = futures::executor::block_on(GuardedStream::new(inner).collect());
        assert_eq!(items.len(), 2);
        assert_eq!(*items[0].as_ref().unwrap(), 1);
        let error = items[1].as_ref().unwrap_err().to_string();
        assert!(error.contains("corrupt data (boom)"), "{error}");
        assert!(!in_parquet_decoder());
    }

    #[test]
    fn a_panicking_future_is_an_error() {
        let future = GuardedFuture::new(async { if in_parquet_decoder() { panic!("inside") } else { Ok(1) } });
        let error = futures::executor::block_on(future).unwrap_err().to_string();
        assert!(error.contains("(inside)"), "{error}");
    }
}
