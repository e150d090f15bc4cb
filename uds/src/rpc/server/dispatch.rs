//! Dispatch: what the server does with each request frame of a connection
//! (decode, cancel, credit, route, start or queue), and how a call starts.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::conn::{CallGuard, ConnState};
use super::context::Context;
use super::handler::{EXPIRED_CLIENT, EXPIRED_MAX_STREAM, EXPIRED_MAX_TIMEOUT, ErasedHandler};
use super::in_flight::CallHandle;
use super::parked::{Parked, ParkedQueue, detach};
use super::peers::{PeerHold, Slots, try_slots};
use super::shared::Shared;
use crate::cred::Cred;
use crate::log_limit::truncate;
use crate::rpc::defaults::{DEFAULT_STREAM_WINDOW, MAX_STREAM_CREDIT, TOO_MANY_CALLS};
use crate::rpc::envelope::Envelope;
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
    /// Not cancel safe at every point: dropped while it writes an error reply,
    /// that reply may not be sent (the connection is then ending anyway).
    pub(super) async fn handle_frame(&self, parked: &mut ParkedQueue, body: Bytes) {
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
        } else if env.credit > 0 && env.method.is_empty() {
            self.state.calls.grant(env.id, env.credit);
        } else if env.id == 0 {
            let _ = self
                .state
                .push_error(0, ErrorCode::BadData, "request has no call id")
                .await;
        } else {
            self.handle_call(parked, env, body).await;
        }
    }

    /// Handles a request frame on a connection of a server that is shutting
    /// down: a new call is refused with "shutting down" (it does not run);
    /// cancellations and stream credit still reach the calls in flight.
    pub(super) async fn refuse_frame(&self, body: Bytes) {
        let Ok(env) = Envelope::decode(&body) else {
            return;
        };
        if env.cancel {
            self.state.calls.cancel(env.id);
        } else if env.credit > 0 && env.method.is_empty() {
            self.state.calls.grant(env.id, env.credit);
        } else if env.id != 0 {
            self.state
                .reply(env.id, Err(HandlerError::shutting_down()))
                .await;
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
    async fn handle_call(&self, parked: &mut ParkedQueue, env: Envelope, body: Bytes) {
        let Session {
            shared,
            state,
            peer,
            hold,
            permits,
        } = self;
        let id = env.id;
        let (handler, deadline, expiry) = match route(shared, &env) {
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
        };
        // Start at once if a slot is free and nobody is queued ahead.
        if parked.is_empty()
            && let Some(slots) = try_slots(permits, hold, &shared.calls)
        {
            self.start_call(call, slots).await;
            return;
        }
        if !parked.reserve() {
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

    /// Runs a call in its own task, holding its slots until it ends.
    pub(super) async fn start_call(&self, call: Parked, slots: Slots) {
        let Session { state, peer, .. } = self;
        let Parked {
            env,
            handler,
            deadline,
            expiry,
            ..
        } = call;
        let id = env.id;
        if deadline.is_some_and(|d| d <= Instant::now()) {
            let e = HandlerError::with_code(
                ErrorCode::DeadlineExceeded,
                "the call's deadline passed while it waited for a slot",
            );
            state.reply(id, Err(e)).await;
            return;
        }
        let credits = handler.streaming().then(|| {
            let window = if env.credit == 0 {
                DEFAULT_STREAM_WINDOW
            } else {
                env.credit
            };
            Arc::new(Semaphore::new(window.min(MAX_STREAM_CREDIT) as usize))
        });
        let seq = state.calls.insert(id, credits.clone());
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
            _permits: slots,
        };
        let abort = handler.spawn(ctx, env.data, guard);
        state.calls.set_abort(id, seq, abort);
    }
}

/// Finds the handler and deadline of a request, or the error to answer it
/// with (without running anything).
type Route<'s> = (&'s Arc<dyn ErasedHandler>, Option<Instant>, &'static str);

fn route<'s>(shared: &'s Shared, env: &Envelope) -> Result<Route<'s>, HandlerError> {
    let Some(method) = env.method_str() else {
        return Err(HandlerError::bad_data("method name is not valid UTF-8"));
    };
    let Ok(deadline) = deadline_of(env.exp_unix_nano, shared.config.default_timeout) else {
        return Err(HandlerError::with_code(
            ErrorCode::DeadlineExceeded,
            "the call's deadline had passed when it arrived",
        ));
    };
    let Some(handler) = shared.handlers.get(method) else {
        return Err(HandlerError::with_code(
            ErrorCode::MethodNotFound,
            format!("method {} not found", truncate(method, 256)),
        ));
    };
    // The server's cap applies whatever the client asked for; an earlier
    // deadline of the client's stands.
    let (cap, capped) = if handler.streaming() {
        (shared.config.max_stream_duration, EXPIRED_MAX_STREAM)
    } else {
        (shared.config.max_timeout, EXPIRED_MAX_TIMEOUT)
    };
    let cap = cap.and_then(|t| Instant::now().checked_add(t));
    Ok(match (deadline, cap) {
        (Some(d), Some(c)) if c < d => (handler, Some(c), capped),
        (None, Some(c)) => (handler, Some(c), capped),
        (d, _) => (handler, d, EXPIRED_CLIENT),
    })
}

/// The local deadline for a call's `exp_unix_nano`: `Err` if it has passed.
fn deadline_of(exp_unix_nano: i64, default: Option<Duration>) -> Result<Option<Instant>, ()> {
    if exp_unix_nano == 0 {
        return Ok(default.and_then(|t| Instant::now().checked_add(t)));
    }
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    let left = exp_unix_nano.saturating_sub(now);
    if left <= 0 {
        return Err(());
    }
    // Far-future deadlines (beyond ~a year) mean "no deadline" to the timer.
    let left = Duration::from_nanos(left.cast_unsigned());
    Ok(Instant::now()
        .checked_add(left)
        .filter(|_| left < Duration::from_secs(366 * 86_400)))
}
