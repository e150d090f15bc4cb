//! The client's side of a client stream: the sender of its items, and the
//! one reply of a client-streaming call.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Semaphore, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{CallWatch, Client, Reply};
use crate::rpc::defaults::MAX_STREAM_CREDIT;
use crate::rpc::envelope::EnvelopeRef;
use crate::rpc::error::RpcError;

/// The credit a server granted for a call's items, and whether the call has
/// ended (which stops its sender).
#[derive(Debug)]
pub(super) struct SendCredit {
    permits: Semaphore,
    ended: CancellationToken,
}

impl Default for SendCredit {
    /// No credit until the server grants some.
    fn default() -> Self {
        SendCredit {
            permits: Semaphore::new(0),
            ended: CancellationToken::new(),
        }
    }
}

impl SendCredit {
    /// Adds a grant, capped as a uds server caps a client's (a hostile
    /// server can neither overflow the count nor make it unlimited).
    pub(super) fn grant(&self, credit: u32) {
        let room = (MAX_STREAM_CREDIT as usize).saturating_sub(self.permits.available_permits());
        self.permits.add_permits((credit as usize).min(room));
    }

    /// The call is over.
    pub(super) fn end(&self) {
        self.permits.close();
        self.ended.cancel();
    }

    fn is_ended(&self) -> bool {
        self.ended.is_cancelled()
    }
}

/// Sends the items of a client-streaming or bidirectional call; see
/// [`Client::call_client_stream`] and [`Client::call_bidi`].
///
/// Each [`send`](Self::send) waits for credit from the server, so a
/// producer never runs more than the server's window ahead of its handler;
/// while it waits, the call's deadline and idle timeout still apply.
/// [`finish`](Self::finish) ends the items ("half-close"); dropping the
/// sender does the same (the server's handler sees the end of its items),
/// while dropping the call's reply or stream cancels the call.
#[derive(Debug)]
#[must_use = "a call's items are sent with RpcSender::send"]
pub struct RpcSender {
    client: Client,
    id: u32,
    credit: Arc<SendCredit>,
    /// The call's deadline, if the caller set one, and its timeout.
    deadline: Option<(Instant, Duration)>,
    /// The call's idle bound.
    idle: Option<Duration>,
    done: bool,
}

impl RpcSender {
    pub(super) fn new(
        client: Client,
        id: u32,
        credit: Arc<SendCredit>,
        deadline: Option<(Instant, Duration)>,
        idle: Option<Duration>,
    ) -> Self {
        RpcSender {
            client,
            id,
            credit,
            deadline,
            idle,
            done: false,
        }
    }

    /// Sends one item, once the server has granted credit for it.
    ///
    /// # Errors
    ///
    /// [`RpcError::FrameTooLarge`] if the item exceeds the frame limit
    /// (nothing is sent; the call goes on); [`RpcError::DeadlineExceeded`]
    /// or [`RpcError::StreamIdle`] if the call's deadline or idle timeout
    /// passes while it waits for credit (the call is then cancelled, and its
    /// reply or stream fails the same way); [`RpcError::StreamClosed`] once
    /// the call has ended — the server answered, the call was cancelled or
    /// timed out, or the connection closed: the call's reply or stream says
    /// how. Stop producing then.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropped while it waits, the item is not sent (an item is
    /// never half written).
    pub async fn send(&mut self, item: Bytes) -> Result<(), RpcError> {
        let env = EnvelopeRef {
            id: self.id,
            data: &item,
            stream_item: true,
            ..EnvelopeRef::default()
        };
        self.client.inner.check_size(env.encoded_len())?;
        if self.done || self.credit.is_ended() {
            return Err(ended());
        }
        self.take_credit().await?;
        if self.credit.is_ended() {
            // The call ended while we waited: its credit is void.
            return Err(ended());
        }
        // A producer's items come one after another: batched.
        self.client
            .inner
            .outbox
            .push_batched(&env, Some(&item))
            .await
            .map_err(|_| ended())
    }

    /// Waits for credit for one item, within the call's bounds.
    async fn take_credit(&self) -> Result<(), RpcError> {
        loop {
            let check_at = self.next_check();
            let wait = async {
                match check_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                permit = self.credit.permits.acquire() => {
                    return match permit {
                        Ok(p) => {
                            p.forget();
                            Ok(())
                        }
                        Err(_) => Err(ended()),
                    };
                }
                () = wait => {
                    if let Some(err) = self.expired() {
                        self.client.inner.fail_call(self.id, err.clone());
                        return Err(err);
                    }
                }
            }
        }
    }

    /// When a bound may next have passed: the deadline, or the idle bound
    /// from the last frame heard.
    fn next_check(&self) -> Option<Instant> {
        let idle = self
            .idle
            .map(|i| self.heard().unwrap_or_else(Instant::now) + i);
        match (self.deadline.map(|(at, _)| at), idle) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn heard(&self) -> Option<Instant> {
        self.client
            .inner
            .calls
            .lock()
            .pending
            .get(&self.id)
            .and_then(super::Waiter::last_heard)
    }

    /// The error of a bound that has passed, if one has.
    fn expired(&self) -> Option<RpcError> {
        let now = Instant::now();
        if let Some((at, timeout)) = self.deadline
            && at <= now
        {
            return Some(super::deadline_error(timeout));
        }
        let idle = self.idle?;
        let heard = self.heard()?;
        (heard + idle <= now).then_some(RpcError::StreamIdle { after: idle })
    }

    /// Ends the items: the server's handler sees the end of its stream.
    /// A call that has already ended (the server answered early, or the
    /// call failed) needs no end: this returns `Ok`, and the call's reply
    /// or stream says how it ended.
    ///
    /// # Errors
    ///
    /// [`RpcError::StreamClosed`] if the connection closed before the end
    /// could be queued (the reply then fails too).
    ///
    /// # Cancel safety
    ///
    /// Dropped while it waits for room in the write queue, the end is still
    /// sent (as when the sender is dropped).
    pub async fn finish(mut self) -> Result<(), RpcError> {
        if self.credit.is_ended() {
            self.done = true;
            return Ok(());
        }
        let env = self.end_envelope();
        let pushed = self.client.inner.outbox.push(&env, None).await;
        self.done = true;
        pushed.map_err(|_| ended())
    }

    /// Ends the whole call with `err` (its reply or stream gets it; the
    /// server is told to stop): for an item that could not be encoded.
    pub(crate) fn fail(mut self, err: RpcError) {
        self.done = true;
        self.client.inner.fail_call(self.id, err);
    }

    /// Whether the call has ended, so that sending is pointless.
    pub fn is_closed(&self) -> bool {
        self.credit.is_ended()
    }

    /// Completes once the call has ended (the server answered or ended its
    /// stream, or the call failed): a producer waiting for its next item can
    /// stop then.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits.
    pub async fn closed(&self) {
        self.credit.ended.cancelled().await;
    }

    fn end_envelope(&self) -> EnvelopeRef<'static> {
        EnvelopeRef {
            id: self.id,
            stream_end: true,
            ..EnvelopeRef::default()
        }
    }
}

impl Drop for RpcSender {
    fn drop(&mut self) {
        if !self.done && !self.credit.is_ended() {
            // Best effort: a connection gone has ended the call anyway.
            let env = self.end_envelope();
            let _ = self.client.inner.outbox.push_now(&env);
        }
    }
}

fn ended() -> RpcError {
    RpcError::StreamClosed {
        reason: "the call has ended".into(),
    }
}

/// The reply of a client-streaming call: a future of the server's answer;
/// see [`Client::call_client_stream`]. Dropping it cancels the call.
#[derive(Debug)]
#[must_use = "dropping an RpcReply cancels its call"]
pub struct RpcReply {
    client: Client,
    id: u32,
    rx: oneshot::Receiver<Reply>,
    watch: CallWatch,
    done: bool,
}

impl RpcReply {
    pub(super) fn new(
        client: Client,
        id: u32,
        rx: oneshot::Receiver<Reply>,
        watch: CallWatch,
    ) -> Self {
        RpcReply {
            client,
            id,
            rx,
            watch,
            done: false,
        }
    }

    /// Forgets the call without cancelling it (it was never sent).
    pub(super) fn disarm(mut self) {
        self.done = true;
    }
}

impl Future for RpcReply {
    type Output = Result<Bytes, RpcError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(Err(ended()));
        }
        if let Poll::Ready(reply) = Pin::new(&mut this.rx).poll(cx) {
            this.done = true;
            return Poll::Ready(
                reply.unwrap_or_else(|_| Err(RpcError::closed("client shut down"))),
            );
        }
        if let Some(err) = this
            .watch
            .poll_expired(cx, &this.client.inner.calls, this.id)
        {
            this.client.inner.abandon(this.id);
            this.done = true;
            return Poll::Ready(Err(err));
        }
        Poll::Pending
    }
}

impl Drop for RpcReply {
    fn drop(&mut self) {
        if !self.done {
            self.client.inner.abandon(self.id);
        }
    }
}
