//! Dispatch: what the server does with each request frame of a connection
//! (decode, cancel, credit, route, start or queue), and how a call starts.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::conn::{CallGuard, ConnState};
use super::context::Context;
use super::handler::{
    EXPIRED_CLIENT, EXPIRED_MAX_STREAM, EXPIRED_MAX_TIMEOUT, ErasedHandler, Started,
};
use super::in_flight::{CallHandle, ItemOutcome};
use super::items::RpcItems;
use super::parked::{Parked, ParkedQueue, detach};
use super::peers::{PeerHold, Slots, try_slots};
use super::shared::Shared;
use crate::cred::Cred;
use crate::log_limit::truncate;
use crate::rpc::defaults::{
    DEFAULT_STREAM_WINDOW, MAX_STREAM_CREDIT, MIN_KEEPALIVE, TOO_MANY_CALLS,
};
use crate::rpc::envelope::{Envelope, EnvelopeRef};
use crate::rpc::error::{ErrorCode, HandlerError};

/// One connection being served: what handling its frames needs.
pub(super) struct Session {
    pub(super) shared: Arc<Shared>,
    pub(super) state: Arc<ConnState>,
    pub(super) peer: Arc<Cred>,
    pub(super) hold: Arc<PeerHold>,
    /// The connection's call slots.
    pub(super) permits: Arc<Semaphore>,
}

impl Session {
    /// Handles one request frame: a cancellation, a stream grant, or a call,
    /// started at once if it can be, else queued in `parked` (or refused).
    ///
    /// `more_at_hand`: another request frame is already read (see
    /// [`start_call`](Self::start_call)).
    ///
    /// Not cancel safe at every point: dropped while it writes an error reply,
    /// that reply may not be sent (the connection is then ending anyway).
    pub(super) async fn handle_frame(
        &self,
        parked: &mut ParkedQueue,
        body: Bytes,
        more_at_hand: bool,
    ) {
        let env = match Envelope::decode(&body) {
            Ok(env) => env,
            Err(e) => {
                // The frame boundary is intact, so the connection goes on. The raw
                // bytes are never echoed back.
                if let Some(suppressed) = self.shared.logs.undecodable.allow() {
                    tracing::debug!(peer = %self.peer, %e, len = body.len(), suppressed, "undecodable request");
                }
                let msg = format!("request envelope could not be decoded: {e}");
                let _ = self.state.push_error(0, ErrorCode::BadData, &msg).await;
                return;
            }
        };
        if env.cancel {
            self.cancel(parked, env.id);
        } else if env.method.is_empty() && (env.stream_item || env.stream_end) && env.id != 0 {
            self.client_item(parked, env).await;
        } else if env.credit > 0 && env.method.is_empty() {
            self.state.calls.grant(env.id, env.credit);
        } else if env.keepalive && env.method.is_empty() {
            // The client's call is alive: nothing to do (the connection's
            // idle timer saw the frame).
        } else if env.id == 0 {
            let _ = self
                .state
                .push_error(0, ErrorCode::BadData, "request has no call id")
                .await;
        } else {
            self.handle_call(parked, env, body, more_at_hand).await;
        }
    }

    /// An item of a client stream, or its end. An item for a call that has
    /// ended is dropped (the client learns of the end from the reply); one
    /// the call cannot take (beyond the credit granted, after the end, or
    /// for a call that takes none) breaks the protocol: the call is stopped
    /// and answered with bad data.
    async fn client_item(&self, parked: &mut ParkedQueue, env: Envelope) {
        let calls = &self.state.calls;
        let outcome = if env.stream_item {
            let len = env.data.len();
            // Counted before the handler can take (and uncount) it.
            self.state.items.add(len);
            let outcome = calls.push_item(env.id, env.data);
            if outcome != ItemOutcome::Delivered {
                self.state.items.remove(len);
            }
            outcome
        } else {
            calls.end_items(env.id)
        };
        let refusal = match outcome {
            // An end needs no credit: an empty stream may end before its
            // call starts.
            ItemOutcome::NoCall if env.stream_end && parked.end_items(env.id) => return,
            ItemOutcome::NoCall if env.stream_end && parked.contains(env.id) => {
                "a second end of the client's items"
            }
            ItemOutcome::NoCall if parked.contains(env.id) => {
                "a stream item for a call that has not started (no credit was granted)"
            }
            ItemOutcome::Delivered | ItemOutcome::NoCall => return,
            ItemOutcome::Refused if env.stream_item => {
                "a stream item the call cannot take (beyond the credit granted, after the end of the items, or for a method that takes none)"
            }
            ItemOutcome::Refused => "a second end of the client's items",
        };
        if let Some(suppressed) = self.shared.logs.bad_stream_items.allow() {
            tracing::debug!(peer = %self.peer, id = env.id, refusal, suppressed, "client broke the stream protocol");
        }
        self.cancel(parked, env.id);
        let e = HandlerError::bad_data(format!("protocol error: {refusal}"));
        self.state.reply(env.id, Err(e)).await;
    }

    /// Handles a request frame on a connection of a server that is shutting
    /// down: a new call is refused with "shutting down" (it does not run);
    /// cancellations, stream credit and client-stream items still reach the
    /// calls in flight.
    pub(super) async fn refuse_frame(&self, parked: &mut ParkedQueue, body: Bytes) {
        let Ok(env) = Envelope::decode(&body) else {
            return;
        };
        if env.cancel {
            self.state.calls.cancel(env.id);
        } else if env.method.is_empty() && (env.stream_item || env.stream_end) && env.id != 0 {
            self.client_item(parked, env).await;
        } else if env.keepalive && env.method.is_empty() {
            // Alive: nothing to do.
        } else if env.credit > 0 && env.method.is_empty() {
            self.state.calls.grant(env.id, env.credit);
        } else if env.id != 0 {
            self.state
                .reply(env.id, Err(HandlerError::shutting_down()))
                .await;
        }
    }

    /// Fails the calls still waiting for the client's items, which can no
    /// longer come (the connection is not read any more), with `why`.
    pub(super) async fn fail_unreadable_items(&self, why: &'static str) {
        let unfinished = self.state.calls.cancel_taking_items();
        for id in unfinished {
            self.state.reply(id, Err(HandlerError::server(why))).await;
        }
    }

    /// A cancellation from the client: stops the call if it runs, drops it
    /// if it waits; nothing if it is unknown (over already, or never was).
    fn cancel(&self, parked: &mut ParkedQueue, id: u32) {
        let started = if self.state.calls.cancel(id) {
            true
        } else if parked.remove(id) {
            false
        } else {
            return;
        };
        if let Some(suppressed) = self.shared.logs.cancelled.allow() {
            tracing::debug!(id, started, suppressed, "call cancelled by the client");
        }
    }

    /// A request (`env`, decoded from `body`): refused, started, or queued.
    async fn handle_call(
        &self,
        parked: &mut ParkedQueue,
        env: Envelope,
        body: Bytes,
        more_at_hand: bool,
    ) {
        let Session {
            shared,
            state,
            peer,
            hold,
            permits,
        } = self;
        let id = env.id;
        // One reading of the clock for the whole dispatch.
        let now = Instant::now();
        let (handler, deadline, expiry) = match route(shared, &env, now) {
            Ok((handler, deadline, expiry)) => (handler.clone(), deadline, expiry),
            Err(refusal) => {
                state.reply(id, Err(refusal)).await;
                return;
            }
        };
        if state.calls.contains(id) || parked.contains(id) {
            let e = HandlerError::bad_data(format!("call id {id} is already in flight"));
            state.reply(id, Err(e)).await;
            return;
        }
        let mut call = Parked {
            env,
            handler,
            deadline,
            expiry,
            retained: 0,
            items_ended: false,
            alive_at: now,
        };
        // Start at once if a slot is free and nobody is queued ahead.
        if parked.is_empty()
            && let Some(slots) = try_slots(permits, hold, &shared.calls)
        {
            self.start_call(call, slots, more_at_hand).await;
            return;
        }
        // Past its room the queue is only read for the sake of client
        // streams in flight (their items must get through): refuse.
        if !parked.has_room() || !parked.reserve() {
            if let Some(suppressed) = shared.logs.too_many_calls.allow() {
                tracing::warn!(peer = %peer, suppressed, "refusing a call: too many calls from this peer");
            }
            state
                .reply(id, Err(HandlerError::server(TOO_MANY_CALLS)))
                .await;
            return;
        }
        call.retained = detach(&mut call.env, body.len());
        drop(body);
        parked.push(call);
    }

    /// Starts a call that waited in the queue for `slots`, unless its
    /// deadline passed meanwhile (it is then answered with that).
    pub(super) async fn start_queued(&self, call: Parked, slots: Slots, more_at_hand: bool) {
        if call.deadline.is_some_and(|d| d <= Instant::now()) {
            let e = HandlerError::with_code(
                ErrorCode::DeadlineExceeded,
                "the call's deadline passed while it waited for a slot",
            );
            self.state.reply(call.env.id, Err(e)).await;
            return;
        }
        self.start_call(call, slots, more_at_hand).await;
    }

    /// Starts a call, holding its slots until it ends: on the spot if it is
    /// the connection's only work (no other call running, no other request
    /// at hand: `more_at_hand`) and its handler is ready at once (see
    /// [`super::inline`]), else in its own task.
    pub(super) async fn start_call(&self, call: Parked, slots: Slots, more_at_hand: bool) {
        let Session { state, peer, .. } = self;
        let Parked {
            env,
            handler,
            deadline,
            expiry,
            items_ended,
            ..
        } = call;
        let id = env.id;
        let kind = handler.kind();
        let credits = kind.sends_items().then(|| {
            let window = if env.credit == 0 {
                DEFAULT_STREAM_WINDOW
            } else {
                env.credit
            };
            Arc::new(Semaphore::new(window.min(MAX_STREAM_CREDIT) as usize))
        });
        let window = self.shared.config.client_stream_window;
        let (items_tx, items) = if kind.takes_items() {
            let (tx, rx) = tokio::sync::mpsc::channel(window as usize);
            let items = RpcItems::new(rx, state.clone(), id, window);
            // Items the client already ended: none will come.
            (if items_ended { None } else { Some(tx) }, Some(items))
        } else {
            (None, None)
        };
        let keepalive = (kind.is_stream() && env.keepalive_ms > 0)
            .then(|| Duration::from_millis(u64::from(env.keepalive_ms)).max(MIN_KEEPALIVE));
        let seq = state.calls.insert(id, credits.clone(), items_tx);
        if items.is_some() && !items_ended {
            // The client may now send the window's items. A connection
            // that cannot take the grant is ending, and the call with it.
            let grant = EnvelopeRef {
                id,
                credit: window,
                ..EnvelopeRef::default()
            };
            let _ = state.outbox.push_now(&grant);
        }
        let ctx = Context {
            peer: peer.clone(),
            deadline,
            call: CallHandle::new(state.calls.clone(), id),
        };
        let guard = CallGuard {
            conn: state.clone(),
            id,
            seq,
            deadline,
            credits,
            expiry,
            keepalive,
            _permits: slots,
        };
        let data = env.data;
        // On the spot only when the call is the connection's only work: under
        // load, tasks spread the handlers over the runtime's workers while
        // the reader goes on reading (measured: the reader doing it all left
        // a core idle, 0.8x the floor at 1 KiB against 1.1x).
        let on_the_spot =
            self.shared.config.calls_on_the_spot && !more_at_hand && !state.calls.busy();
        let started =
            with_task_cx(|cx| handler.start(cx, ctx, data, guard, items, on_the_spot)).await;
        match started {
            Started::Spawned(abort) => state.calls.set_abort(id, seq, abort),
            Started::Done(guard, answer) => {
                // Queued now if it can be, so that the reply is not lost
                // should this future be dropped; else by a task of its own.
                if let Err(answer) = state.try_reply(id, answer) {
                    let task = tokio::spawn(guard.finish(answer));
                    state.calls.set_abort(id, seq, task.abort_handle());
                }
            }
        }
    }
}

/// Runs `f` with the context of the task that awaits this, once.
fn with_task_cx<T>(f: impl FnOnce(&mut std::task::Context<'_>) -> T) -> impl Future<Output = T> {
    let mut f = Some(f);
    std::future::poll_fn(move |cx| match f.take() {
        Some(f) => std::task::Poll::Ready(f(cx)),
        // Polled again after it completed: never so.
        None => std::task::Poll::Pending,
    })
}

/// Finds the handler and deadline of a request, or the error to answer it
/// with (without running anything).
type Route<'s> = (&'s Arc<dyn ErasedHandler>, Option<Instant>, &'static str);

fn route<'s>(shared: &'s Shared, env: &Envelope, now: Instant) -> Result<Route<'s>, HandlerError> {
    let Some(method) = env.method_str() else {
        return Err(HandlerError::bad_data("method name is not valid UTF-8"));
    };
    let Some(handler) = shared.handlers.get(method) else {
        return Err(HandlerError::with_code(
            ErrorCode::MethodNotFound,
            format!("method {} not found", truncate(method, 256)),
        ));
    };
    let kind = handler.kind();
    if kind.takes_items() != env.client_stream {
        // A Go client (or a mismatched uds one) calling a streaming method
        // as a unary one, or the reverse: say so at once, not hang.
        let sent = if env.client_stream {
            "a stream of items"
        } else {
            "no stream of items"
        };
        return Err(HandlerError::bad_data(format!(
            "method {} is {}; the call sent {sent}: call it with a client of that kind",
            truncate(method, 256),
            kind.describe(),
        )));
    }
    // A stream has a deadline only if its client set one; the server's
    // default timeout is for unary calls.
    let default = if kind.is_stream() {
        None
    } else {
        shared.config.default_timeout
    };
    let Ok(deadline) = deadline_of(env.exp_unix_nano, default, now) else {
        return Err(HandlerError::with_code(
            ErrorCode::DeadlineExceeded,
            "the call's deadline had passed when it arrived",
        ));
    };
    // The server's cap applies whatever the client asked for; an earlier
    // deadline of the client's stands.
    let (cap, capped) = if kind.is_stream() {
        (shared.config.max_stream_duration, EXPIRED_MAX_STREAM)
    } else {
        (shared.config.max_timeout, EXPIRED_MAX_TIMEOUT)
    };
    let cap = cap.and_then(|t| now.checked_add(t));
    Ok(match (deadline, cap) {
        (Some(d), Some(c)) if c < d => (handler, Some(c), capped),
        (None, Some(c)) => (handler, Some(c), capped),
        (d, _) => (handler, d, EXPIRED_CLIENT),
    })
}

/// The local deadline for a call's `exp_unix_nano`, read at `now`: `Err`
/// if it has passed.
fn deadline_of(
    exp_unix_nano: i64,
    default: Option<Duration>,
    now: Instant,
) -> Result<Option<Instant>, ()> {
    if exp_unix_nano == 0 {
        return Ok(default.and_then(|t| now.checked_add(t)));
    }
    let wall = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    let left = exp_unix_nano.saturating_sub(wall);
    if left <= 0 {
        return Err(());
    }
    // Far-future deadlines (beyond ~a year) mean "no deadline" to the timer.
    let left = Duration::from_nanos(left.cast_unsigned());
    Ok(now
        .checked_add(left)
        .filter(|_| left < Duration::from_secs(366 * 86_400)))
}
