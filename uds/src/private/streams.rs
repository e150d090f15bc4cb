//! What generated code needs for the streaming kinds: driving a caller's
//! `Stream` into a call, and typing the streams both ways.

use bytes::Bytes;
use futures_core::Stream;
use futures_util::StreamExt;

use super::{app_error, decode_reply, encode_result};
use crate::codec::{Decode, Encode};
use crate::rpc::{CallOptions, Client, HandlerError, RpcError, RpcItems, RpcSender};
use crate::service::{AbortOnDrop, CallError, ServerStream, Streaming};

/// Sends each item of `items`, then the end; stops early once the call has
/// ended. An item that cannot be encoded or sent ends the whole call with
/// that error.
async fn pump_items<C, T, S>(mut tx: RpcSender, items: S)
where
    C: Encode<T>,
    S: Stream<Item = T>,
{
    let mut items = std::pin::pin!(items);
    while let Some(item) = items.next().await {
        let bytes = match C::encode(&item) {
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
pub async fn client_stream_call<C, T, S>(
    client: &Client,
    method: &str,
    data: Bytes,
    opts: CallOptions,
    items: S,
) -> Result<Bytes, RpcError>
where
    C: Encode<T>,
    S: Stream<Item = T>,
{
    let (tx, mut reply) = client.call_client_stream(method, data, opts).await?;
    let pump = pump_items::<C, T, S>(tx, items);
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
pub async fn bidi_call<C, T, U, S>(
    client: &Client,
    method: &str,
    data: Bytes,
    opts: CallOptions,
    items: S,
) -> Result<Streaming<U>, RpcError>
where
    C: Encode<T> + Decode<U> + 'static,
    T: Send + 'static,
    S: Stream<Item = T> + Send + 'static,
{
    let (tx, rx) = client.call_bidi(method, data, opts).await?;
    let pump = tokio::spawn(pump_items::<C, T, S>(tx, items));
    Ok(Streaming::new(rx, C::decode).with_pump(AbortOnDrop(pump.abort_handle())))
}

/// A client's items, typed, for the handler.
pub fn server_items<C: Decode<T>, T>(items: RpcItems) -> Streaming<T> {
    Streaming::from_items(items, C::decode)
}

/// Encodes each item of a fallible server stream; an `Err` item ends the
/// stream with that application error.
pub fn encode_fallible_stream<C, T, E>(
    s: ServerStream<Result<T, E>>,
) -> impl Stream<Item = Result<Bytes, HandlerError>> + Send + 'static
where
    C: Encode<T> + Encode<E> + 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    s.map(|item| match item {
        Ok(v) => encode_result::<C, T>(&v),
        Err(e) => Err(app_error::<C, E>(&e)),
    })
}

/// The client's side of a fallible server stream: an application error
/// ending it is `CallError::App`.
pub fn client_fallible_stream<C: Decode<T> + Decode<E>, T, E>(
    s: crate::rpc::RpcStream,
) -> Streaming<T, CallError<E>> {
    Streaming::new(s, <C as Decode<T>>::decode).map_errors(app_or_rpc::<C, E>)
}

fn app_or_rpc<C: Decode<E>, E>(e: RpcError) -> CallError<E> {
    match e {
        RpcError::Application { data, .. } => {
            decode_reply::<C, E>(data).map_or_else(CallError::Rpc, CallError::App)
        }
        e => CallError::Rpc(e),
    }
}
