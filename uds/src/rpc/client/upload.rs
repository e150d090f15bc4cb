//! The client's side of a client stream: the sender of its items, and the
//! one reply of a client-streaming call.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use bytes::Bytes;
use tokio::sync::{Semaphore, oneshot};

use super::{CallWatch, Client, Reply};
use crate::rpc::envelope::EnvelopeRef;
use crate::rpc::error::RpcError;

/// Sends the items of a client-streaming or bidirectional call; see
/// [`Client::call_client_stream`] and [`Client::call_bidi`].
///
/// Each [`send`](Self::send) waits for credit from the server, so a
/// producer never runs more than the server's window ahead of its handler.
/// [`finish`](Self::finish) ends the items ("half-close"); dropping the
/// sender does the same (the server's handler sees the end of its items),
/// while dropping the call's reply or stream cancels the call.
#[derive(Debug)]
#[must_use = "a call's items are sent with RpcSender::send"]
pub struct RpcSender {
    client: Client,
    id: u32,
    /// Items the server is ready for; closed when the call ends.
    credit: Arc<Semaphore>,
    done: bool,
}

impl RpcSender {
    pub(super) fn new(client: Client, id: u32, credit: Arc<Semaphore>) -> Self {
        RpcSender {
            client,
            id,
            credit,
            done: false,
        }
    }

    /// Sends one item, once the server has granted credit for it.
    ///
    /// # Errors
    ///
    /// [`RpcError::FrameTooLarge`] if the item exceeds the frame limit
    /// (nothing is sent; the call goes on); [`RpcError::StreamClosed`] once
    /// the call has ended — the server answered, the call was cancelled or
    /// timed out, or the connection closed: the call's reply or stream says
    /// how. Stop producing then.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropped while it waits, the item is not sent (an item is
    /// never half written).
    pub async fn send(&mut self, item: Bytes) -> Result<(), RpcError> {
        let inner = &self.client.inner;
        let env = EnvelopeRef {
            id: self.id,
            data: &item,
            stream_item: true,
            ..EnvelopeRef::default()
        };
        inner.check_size(env.encoded_len())?;
        if self.done {
            return Err(ended());
        }
        match self.credit.acquire().await {
            Ok(permit) => permit.forget(),
            Err(_) => return Err(ended()),
        }
        if self.credit.is_closed() {
            // The call ended while we waited: its credit is void.
            return Err(ended());
        }
        // A producer's items come one after another: batched.
        inner
            .outbox
            .push_batched(&env, Some(&item))
            .await
            .map_err(|_| ended())
    }

    /// Ends the items: the server's handler sees the end of its stream.
    ///
    /// # Errors
    ///
    /// [`RpcError::StreamClosed`] if the call has already ended (its reply
    /// or stream says how).
    ///
    /// # Cancel safety
    ///
    /// Dropped while it waits for room in the write queue, the end is still
    /// sent (as when the sender is dropped).
    pub async fn finish(mut self) -> Result<(), RpcError> {
        if self.credit.is_closed() {
            self.done = true;
            return Err(ended());
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
        self.credit.is_closed()
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
        if !self.done && !self.credit.is_closed() {
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
