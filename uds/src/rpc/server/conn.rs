//! One connection's state shared with the calls running on it: its outbox
//! (and the replies written to it) and its table of calls in flight, and
//! the guard each running call holds.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::in_flight::{InFlightCalls, Seq};
use super::items::RpcItems;
use super::peers::Slots;
use crate::codec::Payload;
use crate::log_limit::{RateLimited, truncate};
use crate::rpc::defaults::LOG_INTERVAL;
use crate::rpc::envelope::EnvelopeRef;
use crate::rpc::error::{ErrorCode, HandlerError};
use crate::rpc::outbox::{Closed, Outbox};

/// A handler's outcome.
pub(super) type Outcome = Result<Bytes, HandlerError>;

/// A call's answer, as the server replies it (its data possibly in
/// pieces).
pub(super) type Answer = Result<Payload, HandlerError>;

/// Longest error text sent in a reply; longer texts are cut.
const MAX_ERROR_TEXT: usize = 16 * 1024;

/// Replies that could not be sent because their connection closed: a peer
/// that leaves with many calls in flight would log one line per call. Kept
/// process-wide: the connection's state, which sends them, does not know
/// its server.
static NOT_SENT: RateLimited = RateLimited::new(LOG_INTERVAL);

/// Per-connection state shared with the calls running on it.
#[derive(Debug)]
pub(super) struct ConnState {
    pub(super) outbox: Outbox,
    pub(super) calls: Arc<InFlightCalls>,
    pub(super) max_frame_len: usize,
    /// Client-stream items read but not yet taken by their handlers.
    pub(super) items: ItemBudget,
}

/// The bytes of client-stream items a connection holds for its handlers,
/// bounded like its queue of waiting requests: past
/// [`MAX_BUFFERED_ITEM_BYTES`] the connection is not read until handlers
/// take some (credit bounds items, not bytes).
#[derive(Debug, Default)]
pub(super) struct ItemBudget {
    bytes: std::sync::atomic::AtomicUsize,
    /// Notified when the bytes fall back under the bound.
    room: tokio::sync::Notify,
}

/// See [`ItemBudget`]: the same bound as a connection's waiting requests.
pub(super) const MAX_BUFFERED_ITEM_BYTES: usize = 16 * 1024 * 1024;

impl ItemBudget {
    /// An item of `len` bytes was handed to a handler's queue.
    pub(super) fn add(&self, len: usize) {
        self.bytes
            .fetch_add(len, std::sync::atomic::Ordering::AcqRel);
    }

    /// An item of `len` bytes left a handler's queue (taken or dropped).
    pub(super) fn remove(&self, len: usize) {
        let before = self
            .bytes
            .fetch_sub(len, std::sync::atomic::Ordering::AcqRel);
        if before >= MAX_BUFFERED_ITEM_BYTES && before - len < MAX_BUFFERED_ITEM_BYTES {
            self.room.notify_one();
        }
    }

    /// Whether the connection may be read for more items.
    pub(super) fn has_room(&self) -> bool {
        self.bytes.load(std::sync::atomic::Ordering::Acquire) < MAX_BUFFERED_ITEM_BYTES
    }

    /// Completes once there may be room again.
    pub(super) async fn room(&self) {
        self.room.notified().await;
    }
}

impl ConnState {
    /// Answers call `id` with its outcome; a reply larger than the frame
    /// limit is replaced by a server error. A reply the connection can no
    /// longer take is dropped (and logged, rate-limited).
    ///
    /// Cancel safe in that no partial frame is ever written; dropped while
    /// it waits for room, the reply is not sent.
    pub(super) async fn reply(&self, id: u32, outcome: Answer) {
        let result = match outcome {
            Ok(data) => {
                let env = reply_envelope(id, &data);
                if env.encoded_len() > self.max_frame_len {
                    let msg = format!(
                        "the reply of {} bytes exceeds the frame limit of {} bytes",
                        data.len(),
                        self.max_frame_len
                    );
                    self.push_error(id, ErrorCode::Server, &msg).await
                } else if self.calls.busy() {
                    // Other calls will reply too: leave it to the writer
                    // task, which batches the replies into one `writev`.
                    self.outbox.push_batched(&env, Some(data.head())).await
                } else {
                    self.outbox.push(&env, Some(data.head())).await
                }
            }
            Err(e) => self.push_failure(id, &e, false).await,
        };
        if let Err(closed) = result
            && let Some(suppressed) = NOT_SENT.allow()
        {
            tracing::debug!(id, %closed, suppressed, "reply not sent: connection closed");
        }
    }

    /// An error reply; an application error carries its value in `data`.
    async fn push_failure(
        &self,
        id: u32,
        e: &HandlerError,
        stream_end: bool,
    ) -> Result<(), Closed> {
        let msg = truncate(&e.message, MAX_ERROR_TEXT.min(self.max_frame_len / 2));
        let app = e
            .app
            .as_ref()
            .filter(|d| d.len() + msg.len() + 64 <= self.max_frame_len);
        let env = EnvelopeRef {
            id,
            data: app.map_or(&[][..], |d| &d[..]),
            err_type: e.code.as_u32(),
            err: msg.as_bytes(),
            app_error: app.is_some(),
            stream_end,
            reason: e.reason,
            ..EnvelopeRef::default()
        };
        self.outbox.push(&env, app).await
    }

    /// As [`reply`](Self::reply), for a reply that can be queued without
    /// waiting (a successful one within the frame limit, with room in the
    /// outbox): `Err` gives the outcome back to be sent with `reply`.
    pub(super) fn try_reply(&self, id: u32, outcome: Answer) -> Result<(), Answer> {
        let queued = match &outcome {
            Ok(data) => {
                let env = reply_envelope(id, data);
                if env.encoded_len() > self.max_frame_len {
                    Ok(false)
                } else {
                    self.outbox
                        .try_push(&env, Some(data.head()), self.calls.busy())
                }
            }
            Err(_) => Ok(false),
        };
        match queued {
            Ok(true) => Ok(()),
            Ok(false) => Err(outcome),
            Err(closed) => {
                if let Some(suppressed) = NOT_SENT.allow() {
                    tracing::debug!(id, %closed, suppressed, "reply not sent: connection closed");
                }
                Ok(())
            }
        }
    }

    /// The end of a stream, successful or not.
    pub(super) async fn end_stream(&self, id: u32, outcome: Result<(), HandlerError>) {
        let result = match outcome {
            Ok(()) => {
                let env = EnvelopeRef {
                    id,
                    stream_end: true,
                    ..EnvelopeRef::default()
                };
                self.outbox.push(&env, None).await
            }
            Err(e) => self.push_failure(id, &e, true).await,
        };
        if let Err(closed) = result
            && let Some(suppressed) = NOT_SENT.allow()
        {
            tracing::debug!(id, %closed, suppressed, "stream end not sent: connection closed");
        }
    }

    pub(super) async fn push_error(
        &self,
        id: u32,
        code: ErrorCode,
        msg: &str,
    ) -> Result<(), Closed> {
        let msg = truncate(msg, MAX_ERROR_TEXT.min(self.max_frame_len / 2));
        let env = EnvelopeRef {
            id,
            err_type: code.as_u32(),
            err: msg.as_bytes(),
            ..EnvelopeRef::default()
        };
        self.outbox.push(&env, None).await
    }
}

/// The envelope of a successful reply to call `id`.
fn reply_envelope(id: u32, data: &Payload) -> EnvelopeRef<'_> {
    EnvelopeRef {
        id,
        data: data.head(),
        more: data.rest(),
        ..EnvelopeRef::default()
    }
}

/// One call in flight: releases its permits and its table entry when the
/// call ends, however it ends (finished, cancelled, aborted).
pub(super) struct CallGuard {
    pub(super) conn: Arc<ConnState>,
    pub(super) id: u32,
    pub(super) seq: Seq,
    pub(super) deadline: Option<Instant>,
    pub(super) credits: Option<Arc<Semaphore>>,
    /// What the call is told if it runs out of time.
    pub(super) expiry: &'static str,
    /// For a stream: how often to send the client a keep-alive.
    pub(super) keepalive: Option<std::time::Duration>,
    pub(super) _permits: Slots,
}

impl CallGuard {
    pub(super) async fn finish(self, outcome: Answer) {
        // Replying while still registered keeps graceful shutdown waiting
        // for the reply to be queued.
        self.conn.reply(self.id, outcome).await;
    }

    pub(super) async fn finish_stream(self, outcome: Result<(), HandlerError>) {
        self.conn.end_stream(self.id, outcome).await;
    }

    /// Items that end at once (for a handler started without any).
    pub(super) fn no_items(&self) -> RpcItems {
        let (_, rx) = tokio::sync::mpsc::channel(1);
        RpcItems::new(rx, self.conn.clone(), self.id, 1)
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        // The call is over (finished, past its deadline, or dropped): work
        // watching its cancellation stops too.
        self.conn.calls.finished(self.id, self.seq);
    }
}
