//! Catching a handler's panic: [`CatchUnwind`] polls a future inside `catch_unwind`, and
//! [`panic_message`] gets the text out of the payload for the log.
//!
//! It is not where the policy lives: the call pipeline (`stream.rs`) decides that a panic
//! answers Internal with no text on the wire.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The text of a panic, for the log (never for the wire).
pub(super) fn panic_message(panic: &Box<dyn Any + Send>) -> &str {
    if let Some(text) = panic.downcast_ref::<&'static str>() {
        text
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text
    } else {
        "(non-string panic payload)"
    }
}

/// Polls a future inside `catch_unwind`, turning a panic into an `Err` with its payload.
pub(super) struct CatchUnwind<F>(pub(super) F);

impl<F: Future + Unpin> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &mut self.0;
        match std::panic::catch_unwind(AssertUnwindSafe(|| Pin::new(&mut *inner).poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_err_with_its_message() {
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut fine = CatchUnwind(std::future::ready(7));
        assert!(matches!(
            Pin::new(&mut fine).poll(&mut cx),
            Poll::Ready(Ok(7))
        ));
        let mut panics = CatchUnwind(Box::pin(async {
            let secret = "the secret";
            panic!("handler failed: {secret}");
        }));
        let Poll::Ready(Err(panic)) = Pin::new(&mut panics).poll(&mut cx) else {
            panic!("the panic was not caught");
        };
        assert_eq!(panic_message(&panic), "handler failed: the secret");
        let mut other = CatchUnwind(Box::pin(async { std::panic::panic_any(42u32) }));
        let Poll::Ready(Err(panic)) = Pin::new(&mut other).poll(&mut cx) else {
            panic!("the panic was not caught");
        };
        assert_eq!(panic_message(&panic), "(non-string panic payload)");
    }
}
