//! The per-stream call pipeline, in order: the request header (a bounded wait); an unknown
//! method answers UnknownMethod without reading the body; a declared length over the method's
//! `max_request_bytes` answers BadRequest before anything is allocated; then the body, and
//! `Dispatch::call` under the method's deadline (DeadlineExceeded), raced against the client
//! stopping the stream (the handler's future is dropped); a panic answers Internal with no
//! text on the wire; last, the response frame.
//!
//! Header and body are read through `crate::recv`, that is by the wire's `HeaderReader` and
//! `BodyAccumulator`, the same decoders the fuzz targets drive.
//!
//! Also [`StreamGuard`], what the streams of one connection share, which closes a connection
//! that abandons too many streams before their request header.
//!
//! Not here: accepting connections and streams (`mod.rs`), who may connect (`admission`).
//! Hot path: every call runs through [`handle_stream`]; its future is allocated once per call
//! and is kept within 1 KiB (a release-only test below checks).

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quinn::VarInt;
use tracing::Instrument;

use super::admission::{AbandonBudget, PenaltyBox};
use super::options::{Observer, ServerOptions};
use super::panic::{CatchUnwind, panic_message};
use crate::recv::{RecvError, read_body, read_header};
use crate::service::{CallInfo, ConnectionInfo, Dispatch, MethodDescriptor};
use crate::wire::{self, FrameError, RequestHeader, Status, StatusCode};

/// What the streams of one connection share (kept here rather than in each stream's
/// future), and the guard that closes a connection abandoning too many streams before their
/// request header (its [`AbandonBudget`]), putting its address in the penalty box.
pub(super) struct StreamGuard {
    connection: quinn::Connection,
    dispatch: Arc<dyn Dispatch>,
    header_timeout: Duration,
    observer: Option<Arc<dyn Observer>>,
    abandon_budget: AbandonBudget,
    penalties: Arc<PenaltyBox>,
}

impl StreamGuard {
    pub(super) fn new(
        connection: quinn::Connection,
        dispatch: Arc<dyn Dispatch>,
        options: &ServerOptions,
        observer: Option<Arc<dyn Observer>>,
        penalties: Arc<PenaltyBox>,
    ) -> Self {
        Self {
            connection,
            dispatch,
            header_timeout: options.header_timeout,
            observer,
            abandon_budget: AbandonBudget::new(options, Instant::now()),
            penalties,
        }
    }

    /// Counts one abandoned stream; closes the connection when its budget is dry.
    fn abandoned(&self) {
        if self.abandon_budget.abandoned(Instant::now()) {
            // Debug, not warn: under a flood this happens many times a second; the
            // `connection_closed_for_abuse` observer (a metric) is the operator's signal.
            tracing::debug!(
                remote = %self.connection.remote_address(),
                "closing a connection that abandons streams before their request header"
            );
            self.connection.close(
                VarInt::from_u32(crate::CLOSE_ABUSE),
                b"too many streams abandoned before their request header",
            );
            self.penalties.punish(self.connection.remote_address().ip());
            if let Some(observer) = &self.observer {
                observer.connection_closed_for_abuse();
            }
        }
    }
}

/// The outcome of one stream before it is written back.
enum Outcome {
    Respond(u32, Result<Bytes, Status>),
    /// The client went away or reset; nothing to write.
    Abandon,
}

pub(super) async fn handle_stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    connection: ConnectionInfo,
    shared: Arc<StreamGuard>,
) {
    let started = Instant::now();
    // The header usually arrives with the stream: a timer is armed only when it has not.
    let read = {
        let mut read = pin!(read_header::<RequestHeader>(&mut recv));
        match poll_once(read.as_mut()).await {
            Poll::Ready(read) => Ok(read),
            // Boxed: the timer's state is then kept out of every stream's future.
            Poll::Pending => Box::pin(tokio::time::timeout(shared.header_timeout, read)).await,
        }
    };
    let header = match read {
        Ok(Ok(header)) => header,
        Ok(Err(RecvError::Frame(error))) => {
            shared.abandoned();
            let message = match error {
                FrameError::Truncated { received } => format!(
                    "stream ended after {received} of the {} request header bytes",
                    wire::REQUEST_HEADER_LEN
                ),
                other => format!("request header: {other}"),
            };
            write_response(&mut send, 0, Err(Status::bad_request(message))).await;
            return;
        }
        Ok(Err(RecvError::Reset)) => {
            shared.abandoned();
            return;
        }
        Ok(Err(RecvError::Lost(_))) => return,
        Err(_) => {
            shared.abandoned();
            let _ = recv.stop(VarInt::from_u32(crate::STREAM_CANCELLED));
            let _ = send.reset(VarInt::from_u32(crate::STREAM_CANCELLED));
            return;
        }
    };
    let Some(method) = shared.dispatch.method(header.method_id) else {
        let _ = recv.stop(VarInt::from_u32(crate::STREAM_REFUSED));
        tracing::debug!(method_id = header.method_id, "unknown method");
        if let Some(observer) = &shared.observer {
            observer.unknown_method(header.method_id);
        }
        write_response(
            &mut send,
            header.req_id,
            Err(Status::unknown_method(header.method_id)),
        )
        .await;
        return;
    };
    let span = tracing::info_span!(
        "call",
        method = method.name,
        id = method.id,
        req_id = header.req_id,
        status = tracing::field::Empty,
        latency_us = tracing::field::Empty,
    );
    let outcome = run_call(
        &mut send,
        recv,
        &shared.dispatch,
        connection,
        method,
        header,
        started,
    )
    .instrument(span.clone())
    .await;
    let code = match outcome {
        Outcome::Respond(req_id, result) => {
            let code = match &result {
                Ok(_) => StatusCode::Ok,
                Err(status) => status.code(),
            };
            write_response(&mut send, req_id, result).await;
            Some(code)
        }
        Outcome::Abandon => None,
    };
    if shared.observer.is_none() && span.is_disabled() {
        return;
    }
    let latency = started.elapsed();
    if let Some(observer) = &shared.observer {
        observer.call_finished(method, code, latency);
    }
    span.record("status", code.map_or("Cancelled", StatusCode::name));
    span.record("latency_us", latency.as_micros() as u64);
    tracing::debug!(parent: &span, "call finished");
}

/// Polls `future` once: calls that finish at once (the common case for small ones) then
/// never arm a timer or a stop watch.
fn poll_once<F: Future + Unpin>(mut future: F) -> impl Future<Output = Poll<F::Output>> {
    std::future::poll_fn(move |cx| Poll::Ready(Pin::new(&mut future).poll(cx)))
}

async fn run_call(
    send: &mut quinn::SendStream,
    mut recv: quinn::RecvStream,
    dispatch: &Arc<dyn Dispatch>,
    connection: ConnectionInfo,
    method: &'static MethodDescriptor,
    header: RequestHeader,
    started: Instant,
) -> Outcome {
    if let Err(error) = wire::check_len(header.len, method.max_request_bytes) {
        let _ = recv.stop(VarInt::from_u32(crate::STREAM_REFUSED));
        let status = Status::bad_request(format!(
            "request body for {} ({}) is {} bytes, over the method's limit of {} bytes ({error})",
            method.name, method.id, header.len, method.max_request_bytes
        ));
        return Outcome::Respond(header.req_id, Err(status));
    }
    let deadline = started + method.timeout();
    let call = CallInfo::new(method, header.req_id, deadline, connection);
    let len = header.len;
    let work = pin!(async move {
        // The length was checked against the method's limit above; the body is taken as QUIC
        // hands it over (one chunk, the usual case: no copy and no allocation), and never more
        // than `len` bytes are buffered.
        let body = match read_body(&mut recv, len).await {
            Ok(body) => body,
            Err(RecvError::Frame(FrameError::BodyTruncated { received, len })) => {
                return Err(CallFailure::Status(Status::bad_request(format!(
                    "stream ended after {received} of the {len} request body bytes the header announced"
                ))));
            }
            Err(RecvError::Frame(other)) => {
                return Err(CallFailure::Status(Status::bad_request(format!(
                    "request body: {other}"
                ))));
            }
            Err(RecvError::Reset | RecvError::Lost(_)) => return Err(CallFailure::Gone),
        };
        dispatch.call(call, body).await.map_err(CallFailure::Status)
    });
    let mut work = CatchUnwind(work);
    // A handler that is done at the first poll needs neither the deadline timer nor the
    // watch for the client stopping the stream.
    let result = match poll_once(&mut work).await {
        Poll::Ready(result) => Ok(result),
        Poll::Pending => {
            // Boxed, as the header timer: only calls that wait carry this state.
            let waited = Box::pin(async {
                let stopped = send.stopped();
                tokio::select! {
                    result = tokio::time::timeout_at(deadline.into(), work) => Some(result),
                    _ = stopped => None,
                }
            })
            .await;
            let Some(result) = waited else {
                tracing::debug!("client stopped the stream; handler dropped");
                return Outcome::Abandon;
            };
            result
        }
    };
    match result {
        Ok(Ok(Ok(body))) => Outcome::Respond(header.req_id, Ok(body)),
        Ok(Ok(Err(CallFailure::Status(status)))) => Outcome::Respond(header.req_id, Err(status)),
        Ok(Ok(Err(CallFailure::Gone))) => Outcome::Abandon,
        Ok(Err(panic)) => {
            tracing::error!(panic = panic_message(&panic), "handler panicked");
            Outcome::Respond(header.req_id, Err(Status::internal()))
        }
        Err(_) => Outcome::Respond(
            header.req_id,
            Err(Status::deadline_exceeded(format!(
                "{} ({}) did not finish within its {} ms timeout",
                method.name, method.id, method.timeout_ms
            ))),
        ),
    }
}

enum CallFailure {
    Status(Status),
    Gone,
}

async fn write_response(send: &mut quinn::SendStream, req_id: u32, result: Result<Bytes, Status>) {
    let (code, body) = match result {
        Ok(body) => (StatusCode::Ok, body),
        Err(status) => (status.code(), Bytes::from(status.encode_body())),
    };
    let Ok(len) = u32::try_from(body.len()) else {
        tracing::error!(len = body.len(), "response too large to frame");
        let status = Status::internal();
        let body = Bytes::from(status.encode_body());
        let header = wire::ResponseHeader {
            status: status.code(),
            req_id,
            len: body.len() as u32,
        };
        let mut chunks = [Bytes::copy_from_slice(&header.to_bytes()), body];
        if send.write_all_chunks(&mut chunks).await.is_ok() {
            let _ = send.finish();
        }
        return;
    };
    let header = wire::ResponseHeader {
        status: code,
        req_id,
        len,
    };
    // The body goes to QUIC as the same buffer the handler produced: no copy into a frame.
    let mut chunks = [Bytes::copy_from_slice(&header.to_bytes()), body];
    if send.write_all_chunks(&mut chunks).await.is_ok() {
        let _ = send.finish();
    }
}

#[cfg(test)]
mod tests {
    /// Every stream's future is allocated once per call; kept within 1 KiB it stays in the
    /// allocator's fast size classes (glibc caches chunks up to 1032 bytes per thread), and
    /// the timers only slow calls need are boxed apart (see `handle_stream`).
    #[test]
    #[cfg(not(debug_assertions))]
    fn a_stream_future_stays_within_one_kibibyte() {
        fn future_size<A, B, C, D, F>(_: impl FnOnce(A, B, C, D) -> F) -> usize {
            std::mem::size_of::<F>()
        }
        let size = future_size(super::handle_stream);
        assert!(size <= 1024, "handle_stream's future grew to {size} bytes");
    }
}
