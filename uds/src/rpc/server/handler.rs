//! Handlers: the type-erased form the server stores, and how one call's
//! handler runs (to its deadline, panics caught, a stream paced by credit).

use std::future::Future;
use std::panic::AssertUnwindSafe;

use bytes::Bytes;
use futures_util::FutureExt;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::conn::{Answer, CallGuard, Outcome};
use super::context::Context;
use super::inline::{Inline, Polled};
use super::items::RpcItems;
use crate::codec::Payload;
use crate::rpc::envelope::EnvelopeRef;
use crate::rpc::error::{ErrorCode, HandlerError};

/// The four kinds of call a handler serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// One request, one reply.
    Unary,
    /// One request, a stream of items back.
    ServerStream,
    /// A stream of items from the client, one reply.
    ClientStream,
    /// Streams both ways.
    Bidi,
}

impl Kind {
    /// Whether the client streams items to the handler.
    pub(super) fn takes_items(self) -> bool {
        matches!(self, Kind::ClientStream | Kind::Bidi)
    }

    /// Whether calls of this kind are streams (bounded by the server's
    /// stream limits rather than the unary ones).
    pub(super) fn is_stream(self) -> bool {
        self != Kind::Unary
    }

    /// Whether the handler answers with a stream of items.
    pub(super) fn sends_items(self) -> bool {
        matches!(self, Kind::ServerStream | Kind::Bidi)
    }

    /// In words, for error texts.
    pub(super) fn describe(self) -> &'static str {
        match self {
            Kind::Unary => "a unary method",
            Kind::ServerStream => "a server-streaming method",
            Kind::ClientStream => "a client-streaming method",
            Kind::Bidi => "a bidirectional-streaming method",
        }
    }
}

/// How a call was started.
#[expect(
    clippy::large_enum_variant,
    reason = "returned once per call, straight to its caller: boxing the guard would cost the allocation that running on the spot saves"
)]
pub(super) enum Started {
    /// Its handler runs in a task of its own.
    Spawned(AbortHandle),
    /// Its handler finished on the spot (see [`super::inline`]): the caller
    /// replies with this.
    Done(CallGuard, Answer),
}

/// Type-erased handler: starts one call, as its own task or (a unary
/// handler that is ready at once) on the spot. Spawning inside the generic
/// impl keeps the handler's future unboxed — at most one allocation per
/// call.
pub(super) trait ErasedHandler: Send + Sync + 'static {
    /// Starts the call; `items` is `Some` for the kinds that
    /// [take items](Kind::takes_items). `cx` is the connection reader's, for
    /// a handler polled on the spot, which is tried if `on_the_spot`.
    fn start(
        &self,
        cx: &mut std::task::Context<'_>,
        ctx: Context,
        req: Bytes,
        call: CallGuard,
        items: Option<RpcItems>,
        on_the_spot: bool,
    ) -> Started;

    /// Which kind of call it serves.
    fn kind(&self) -> Kind {
        Kind::Unary
    }
}

pub(super) struct StreamHandler<F>(pub(super) F);

impl<F, Fut, S> ErasedHandler for StreamHandler<F>
where
    F: Fn(Context, Bytes) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<S, HandlerError>> + Send + 'static,
    S: futures_core::Stream<Item = Result<Bytes, HandlerError>> + Send + 'static,
{
    fn start(
        &self,
        _: &mut std::task::Context<'_>,
        ctx: Context,
        req: Bytes,
        call: CallGuard,
        _: Option<RpcItems>,
        _: bool,
    ) -> Started {
        let fut = std::panic::catch_unwind(AssertUnwindSafe(|| (self.0)(ctx, req)));
        Started::Spawned(spawn_stream(fut.map_err(drop), call))
    }

    fn kind(&self) -> Kind {
        Kind::ServerStream
    }
}

pub(super) struct BidiHandler<F>(pub(super) F);

impl<F, Fut, S> ErasedHandler for BidiHandler<F>
where
    F: Fn(Context, Bytes, RpcItems) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<S, HandlerError>> + Send + 'static,
    S: futures_core::Stream<Item = Result<Bytes, HandlerError>> + Send + 'static,
{
    fn start(
        &self,
        _: &mut std::task::Context<'_>,
        ctx: Context,
        req: Bytes,
        call: CallGuard,
        items: Option<RpcItems>,
        _: bool,
    ) -> Started {
        let items = items.unwrap_or_else(|| call.no_items());
        let fut = std::panic::catch_unwind(AssertUnwindSafe(|| (self.0)(ctx, req, items)));
        Started::Spawned(spawn_stream(fut.map_err(drop), call))
    }

    fn kind(&self) -> Kind {
        Kind::Bidi
    }
}

/// Runs a stream handler's future (or the panic that building it raised)
/// and pumps its stream, then ends the stream.
fn spawn_stream<Fut, S>(fut: Result<Fut, ()>, call: CallGuard) -> AbortHandle
where
    Fut: Future<Output = Result<S, HandlerError>> + Send + 'static,
    S: futures_core::Stream<Item = Result<Bytes, HandlerError>> + Send + 'static,
{
    tokio::spawn(async move {
        let outcome = match fut {
            Ok(fut) => {
                let pump = pump_stream(fut, &call);
                let timed = run_to_deadline(pump, call.deadline, call.expiry);
                with_keepalive(timed, &call).await
            }
            Err(()) => Err(panicked()),
        };
        call.finish_stream(outcome.map(drop)).await;
    })
    .abort_handle()
}

pub(super) struct ClientStreamHandler<F>(pub(super) F);

impl<F, Fut> ErasedHandler for ClientStreamHandler<F>
where
    F: Fn(Context, Bytes, RpcItems) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    fn start(
        &self,
        _: &mut std::task::Context<'_>,
        ctx: Context,
        req: Bytes,
        call: CallGuard,
        items: Option<RpcItems>,
        _: bool,
    ) -> Started {
        let items = items.unwrap_or_else(|| call.no_items());
        let fut = std::panic::catch_unwind(AssertUnwindSafe(|| (self.0)(ctx, req, items)));
        let task = tokio::spawn(async move {
            let outcome = match fut {
                Ok(fut) => {
                    let timed = run_to_deadline(fut, call.deadline, call.expiry);
                    with_keepalive(timed, &call).await
                }
                Err(_) => Err(panicked()),
            };
            call.finish(outcome.map(Payload::from)).await;
        });
        Started::Spawned(task.abort_handle())
    }

    fn kind(&self) -> Kind {
        Kind::ClientStream
    }
}

/// Runs `fut`, sending the client a keep-alive for the call every interval
/// it asked for (if it did), so that a live stream that has nothing to say
/// is not taken for a dead one.
async fn with_keepalive<Fut: Future>(fut: Fut, call: &CallGuard) -> Fut::Output {
    let Some(every) = call.keepalive else {
        return fut.await;
    };
    let mut fut = std::pin::pin!(fut);
    let keepalives = async {
        let mut ticks = tokio::time::interval_at(Instant::now() + every, every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let alive = EnvelopeRef {
            id: call.id,
            keepalive: true,
            ..EnvelopeRef::default()
        };
        loop {
            ticks.tick().await;
            if call.conn.outbox.push(&alive, None).await.is_err() {
                return; // the connection is gone; the call ends with it
            }
        }
    };
    tokio::select! {
        biased;
        out = &mut fut => out,
        () = keepalives => fut.await,
    }
}

/// Sends a handler's stream item by item, each only once the client has
/// granted credit for it: a slow client slows the producer.
async fn pump_stream<Fut, S>(fut: Fut, call: &CallGuard) -> Outcome
where
    Fut: Future<Output = Result<S, HandlerError>>,
    S: futures_core::Stream<Item = Result<Bytes, HandlerError>>,
{
    use futures_util::StreamExt;
    let stream = fut.await?;
    let mut stream = std::pin::pin!(stream);
    let Some(credits) = call.credits.as_ref() else {
        return Err(HandlerError::server("stream without flow control"));
    };
    loop {
        // The next item first, then the credit to send it: the end of the
        // stream is not an item and needs none (a stream of exactly its
        // window's items must end without waiting for a grant the client has
        // no reason to send). The producer runs at most one item ahead.
        match stream.next().await {
            Some(Ok(item)) => {
                let credit = tokio::select! {
                    c = credits.acquire() => c,
                    () = call.conn.outbox.broken() => {
                        return Err(HandlerError::server("connection closed"));
                    }
                };
                match credit {
                    Ok(permit) => permit.forget(),
                    Err(_) => return Err(HandlerError::server("stream closed")),
                }
                let env = EnvelopeRef {
                    id: call.id,
                    data: &item,
                    stream_item: true,
                    ..EnvelopeRef::default()
                };
                if env.encoded_len() > call.conn.max_frame_len {
                    return Err(HandlerError::server(format!(
                        "a stream item of {} bytes exceeds the frame limit",
                        item.len()
                    )));
                }
                // The next item follows at once: batched.
                if call
                    .conn
                    .outbox
                    .push_batched(&env, Some(&item))
                    .await
                    .is_err()
                {
                    return Err(HandlerError::server("connection closed"));
                }
            }
            Some(Err(e)) => return Err(e),
            None => return Ok(Bytes::new()),
        }
    }
}

/// A unary handler, tried on the spot first (see [`super::inline`]).
pub(super) struct FnHandler<F, Fut> {
    f: F,
    inline: Inline<Fut>,
}

impl<F, Fut> FnHandler<F, Fut> {
    pub(super) fn new(f: F) -> Self {
        FnHandler {
            f,
            inline: Inline::default(),
        }
    }
}

impl<F, Fut, O> ErasedHandler for FnHandler<F, Fut>
where
    F: Fn(Context, Bytes) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<O, HandlerError>> + Send + 'static,
    O: Into<Payload> + Send + 'static,
{
    fn start(
        &self,
        cx: &mut std::task::Context<'_>,
        ctx: Context,
        req: Bytes,
        call: CallGuard,
        _: Option<RpcItems>,
        on_the_spot: bool,
    ) -> Started {
        // A handler that panics while *building* its future is caught too.
        let Ok(fut) = std::panic::catch_unwind(AssertUnwindSafe(|| (self.f)(ctx, req))) else {
            return Started::Done(call, Err(panicked()));
        };
        if !on_the_spot || !self.inline.should_try() {
            return Started::Spawned(spawn_unary(fut, call));
        }
        match self.inline.poll_once(fut, cx) {
            Polled::Ready(outcome) => Started::Done(call, outcome.map(Into::into)),
            Polled::Panicked => Started::Done(call, Err(panicked())),
            Polled::Pending(rest) => Started::Spawned(spawn_unary(rest, call)),
        }
    }
}

/// Runs a unary call's handler in a task of its own, to its deadline, and
/// replies.
fn spawn_unary<Fut, O>(fut: Fut, call: CallGuard) -> AbortHandle
where
    Fut: Future<Output = Result<O, HandlerError>> + Send + 'static,
    O: Into<Payload> + Send + 'static,
{
    tokio::spawn(async move {
        let outcome = run_to_deadline(fut, call.deadline, call.expiry).await;
        call.finish(outcome.map(Into::into)).await;
    })
    .abort_handle()
}

pub(super) fn panicked() -> HandlerError {
    HandlerError::server("the handler panicked")
}

/// What a call that runs out of time is told, by who set its deadline.
pub(super) const EXPIRED_CLIENT: &str = "the handler did not finish before the call's deadline";
pub(super) const EXPIRED_MAX_TIMEOUT: &str =
    "the handler did not finish within the server's limit on a call's time (max_timeout)";
pub(super) const EXPIRED_MAX_STREAM: &str =
    "the stream did not finish within the server's limit on a stream's time (max_stream_duration)";

async fn run_to_deadline<O, Fut: Future<Output = Result<O, HandlerError>>>(
    fut: Fut,
    deadline: Option<Instant>,
    expiry: &'static str,
) -> Result<O, HandlerError> {
    let guarded = AssertUnwindSafe(fut).catch_unwind();
    let result = match deadline {
        Some(at) => match tokio::time::timeout_at(at, guarded).await {
            Ok(r) => r,
            Err(_) => {
                return Err(HandlerError::with_code(ErrorCode::DeadlineExceeded, expiry));
            }
        },
        None => guarded.await,
    };
    result.unwrap_or_else(|_| Err(panicked()))
}
