//! The items a client streams to a handler ([`RpcItems`]), and the credit
//! the server grants for them as the handler takes them.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::conn::ConnState;
use crate::rpc::envelope::EnvelopeRef;

/// The items of a client-streaming or bidirectional call, as its handler
/// receives them: a [`Stream`](futures_core::Stream) of encoded items that
/// ends (`None`) when the client has sent its last one.
///
/// The client may send only as many items as the server has granted credit
/// for: the server's window
/// ([`client_stream_window`](crate::rpc::ServerBuilder::client_stream_window),
/// 16 by default) at first, and more as the handler takes them, so a slow handler slows the client's producer and memory stays
/// bounded. A client that cancels the call, or whose connection closes,
/// cancels the handler too (its future is dropped). Dropping the items
/// while the call goes on (a bidirectional handler that only streams back)
/// drops whatever the client still sends, and the client's producer then
/// waits for credit until the call ends.
#[derive(Debug)]
pub struct RpcItems {
    rx: mpsc::Receiver<Bytes>,
    conn: Arc<ConnState>,
    id: u32,
    window: u32,
    /// Items taken since the last grant.
    taken: u32,
}

impl RpcItems {
    pub(super) fn new(
        rx: mpsc::Receiver<Bytes>,
        conn: Arc<ConnState>,
        id: u32,
        window: u32,
    ) -> Self {
        RpcItems {
            rx,
            conn,
            id,
            window,
            taken: 0,
        }
    }

    /// The next item; `None` once the client has ended its items.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: an item is taken only when this returns it.
    pub async fn next_item(&mut self) -> Option<Bytes> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next_item(cx)).await
    }

    fn poll_next_item(&mut self, cx: &mut TaskContext<'_>) -> Poll<Option<Bytes>> {
        let item = std::task::ready!(self.rx.poll_recv(cx));
        if let Some(item) = &item {
            self.conn.items.remove(item.len());
            self.taken += 1;
            if self.taken >= self.window / 2 {
                // Room for this many more. If the connection is gone, so
                // is the call.
                let grant = EnvelopeRef {
                    id: self.id,
                    credit: self.taken,
                    ..EnvelopeRef::default()
                };
                let _ = self.conn.outbox.push_now(&grant);
                self.taken = 0;
            }
        }
        Poll::Ready(item)
    }
}

impl Drop for RpcItems {
    fn drop(&mut self) {
        // Items still queued leave the connection's budget with it.
        self.rx.close();
        while let Ok(item) = self.rx.try_recv() {
            self.conn.items.remove(item.len());
        }
    }
}

impl futures_core::Stream for RpcItems {
    type Item = Bytes;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Bytes>> {
        self.poll_next_item(cx)
    }
}
