//! What generated code needs for the streaming kinds: driving a caller's
//! `Stream` into a call, and typing the streams both ways. As the rest of
//! `__private01`, codecs come in as the `fn`s of `JsonType`/`ProtoType`.

use bytes::Bytes;
use futures_core::Stream;
use futures_util::StreamExt;

use super::{DecodeFn, EncodeFn, app_error, decode_reply, encoded_result};
use crate::rpc::{CallOptions, Client, HandlerError, RpcError, RpcItems, RpcSender};
use crate::service::{AbortOnDrop, CallError, ServerStream, Streaming};

/// Sends each item of `items`, then the end; stops early once the call has
/// ended. An item that cannot be encoded or sent ends the whole call with
/// that error.
async fn pump_items<T, S>(mut tx: RpcSender, items: S, encode: EncodeFn<T>)
where
    S: Stream<Item = T>,
{
    let mut items = std::pin::pin!(items);
    loop {
        // A call that ended stops the producer even while it waits for
        // its next item (it may never come).
        let next = tokio::select! {
            biased;
            () = tx.closed() => return,
            next = items.next() => next,
        };
        let Some(item) = next else { break };
        let bytes = match encode(&item) {
            Ok(bytes) => bytes,
            Err(e) => {
                let message = format!("encoding a stream item: {e}");
                tx.fail(RpcError::Codec { message });
                return;
            }
        };
        match tx.send(bytes).await {
            Ok(()) => {}
            Err(e @ RpcError::FrameTooLarge { .. }) => {
                tx.fail(e);
                return;
            }
            // The call has ended: its reply or stream says how.
            Err(_) => return,
        }
    }
    let _ = tx.finish().await;
}

/// A client-streaming call: sends `items` while waiting for the reply; a
/// reply that comes first (the handler answered early) stops the sending.
///
/// # Errors
///
/// The call's.
pub async fn client_stream_call<T, S>(
    client: &Client,
    method: &str,
    data: Bytes,
    opts: CallOptions,
    items: S,
    encode: EncodeFn<T>,
) -> Result<Bytes, RpcError>
where
    S: Stream<Item = T>,
{
    let (tx, mut reply) = client.call_client_stream(method, data, opts).await?;
    let pump = pump_items(tx, items, encode);
    tokio::pin!(pump);
    tokio::select! {
        biased;
        r = &mut reply => r,
        () = &mut pump => reply.await,
    }
}

/// A bidirectional call: `items` are sent from a task that the returned
/// stream owns (and stops when dropped).
///
/// # Errors
///
/// As [`Client::call_bidi`].
pub async fn bidi_call<T, U, S>(
    client: &Client,
    method: &str,
    data: Bytes,
    opts: CallOptions,
    items: S,
    encode: EncodeFn<T>,
    decode: DecodeFn<U>,
) -> Result<Streaming<U>, RpcError>
where
    T: Send + 'static,
    S: Stream<Item = T> + Send + 'static,
{
    let (tx, rx) = client.call_bidi(method, data, opts).await?;
    let pump = tokio::spawn(pump_items(tx, items, encode));
    Ok(Streaming::new(rx, decode).with_pump(AbortOnDrop(pump.abort_handle())))
}

/// A client's items, typed, for the handler.
pub fn server_items<T>(items: RpcItems, decode: DecodeFn<T>) -> Streaming<T> {
    Streaming::from_items(items, decode)
}

/// Encodes each item of a fallible server stream; an `Err` item ends the
/// stream with that application error.
pub fn encode_fallible_stream<T, E>(
    s: ServerStream<Result<T, E>>,
    ok: EncodeFn<T>,
    err: EncodeFn<E>,
) -> impl Stream<Item = Result<Bytes, HandlerError>> + Send + 'static
where
    T: Send + 'static,
    E: Send + 'static,
{
    s.map(move |item| match item {
        Ok(v) => encoded_result(ok(&v)),
        Err(e) => Err(app_error(err(&e))),
    })
}

/// A stream of a server's items whose application error (the end of a
/// fallible stream) is `CallError::App`.
pub fn fallible<T, E: 'static>(s: Streaming<T>, err: DecodeFn<E>) -> Streaming<T, CallError<E>> {
    s.map_errors(move |e| match e {
        RpcError::Application { data, .. } => {
            decode_reply(data, err).map_or_else(CallError::Rpc, CallError::App)
        }
        e => CallError::Rpc(e),
    })
}
