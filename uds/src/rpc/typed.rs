//! Typed calls and handlers over any [`codec`](crate::codec).

use std::future::Future;

use bytes::Bytes;

use super::{CallOptions, Client, Context, HandlerError, RpcError, ServerBuilder};
use crate::codec::{CodecError, Decode, Encode};

fn codec_error(what: &str, e: &CodecError) -> RpcError {
    RpcError::Codec {
        message: format!("{what}: {e}"),
    }
}

impl Client {
    /// Calls `method` with `req` encoded by codec `C`, decoding the reply as
    /// `Resp`. The building block of [`call_json`](Self::call_json),
    /// [`call_proto`](Self::call_proto) and generated clients.
    ///
    /// # Errors
    ///
    /// [`RpcError::Codec`] if the request cannot be encoded or the reply
    /// decoded; otherwise as [`Client::call_with`].
    ///
    /// # Cancel safety
    ///
    /// As [`Client::call_with`]: dropping the future cancels the call.
    pub async fn call_typed<C, Req, Resp>(
        &self,
        method: &str,
        req: &Req,
        opts: CallOptions,
    ) -> Result<Resp, RpcError>
    where
        C: Encode<Req> + Decode<Resp>,
        Req: ?Sized,
    {
        let data = C::encode_payload(req).map_err(|e| codec_error("encoding the request", &e))?;
        let reply = self.call_payload(method, data, opts).await?;
        C::decode(reply).map_err(|e| codec_error("decoding the reply", &e))
    }

    /// Calls `method` with the JSON of `req` and decodes the JSON reply.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use uds::rpc::{Client, HandlerError, Server};
    /// let server = Server::builder()
    ///     .json("/math/sum", |_ctx, ints: Vec<i64>| async move {
    ///         Ok::<_, HandlerError>(ints.iter().sum::<i64>())
    ///     })
    ///     .build()?;
    /// let (a, b) = uds::net::pair()?;
    /// server.serve_connection(b);
    /// let sum: i64 = Client::new(a).call_json("/math/sum", &vec![1, 2, 3]).await?;
    /// assert_eq!(sum, 6);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`RpcError::Codec`] if the request cannot be encoded or the reply
    /// decoded; otherwise as [`Client::call_with`].
    ///
    /// # Cancel safety
    ///
    /// As [`Client::call_with`]: dropping the future cancels the call.
    #[cfg(feature = "json")]
    pub async fn call_json<Req, Resp>(&self, method: &str, req: &Req) -> Result<Resp, RpcError>
    where
        Req: serde::Serialize + ?Sized,
        Resp: serde::de::DeserializeOwned,
    {
        self.call_typed::<crate::codec::Json, Req, Resp>(method, req, CallOptions::default())
            .await
    }

    /// Calls `method` with a protobuf request and decodes the protobuf reply.
    ///
    /// # Errors
    ///
    /// [`RpcError::Codec`] if the request cannot be encoded or the reply
    /// decoded; otherwise as [`Client::call_with`].
    ///
    /// # Cancel safety
    ///
    /// As [`Client::call_with`]: dropping the future cancels the call.
    #[cfg(feature = "proto")]
    pub async fn call_proto<Req, Resp>(&self, method: &str, req: &Req) -> Result<Resp, RpcError>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        self.call_typed::<crate::codec::Proto, Req, Resp>(method, req, CallOptions::default())
            .await
    }
}

impl ServerBuilder {
    /// Registers a handler whose request and reply are encoded by codec `C`.
    /// A request that does not decode is answered with a bad-data error
    /// (code 3) without running the handler.
    pub fn typed<C, Req, Resp, E, F, Fut>(self, method: impl Into<String>, handler: F) -> Self
    where
        C: Decode<Req> + Encode<Resp> + 'static,
        Req: Send + 'static,
        Resp: Send + 'static,
        E: Into<HandlerError> + Send + 'static,
        F: Fn(Context, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, E>> + Send + 'static,
    {
        self.handler_payload(method, move |ctx, data: Bytes| {
            let req = C::decode(data);
            let fut = req.map(|req| handler(ctx, req));
            async move {
                let fut = fut.map_err(|e| {
                    HandlerError::bad_data(format!("the request could not be decoded: {e}"))
                })?;
                let resp = fut.await.map_err(Into::into)?;
                C::encode_payload(&resp).map_err(|e| {
                    HandlerError::server(format!("the reply could not be encoded: {e}"))
                })
            }
        })
    }

    /// Registers a handler taking and returning JSON values.
    #[cfg(feature = "json")]
    pub fn json<Req, Resp, E, F, Fut>(self, method: impl Into<String>, handler: F) -> Self
    where
        Req: serde::de::DeserializeOwned + Send + 'static,
        Resp: serde::Serialize + Send + 'static,
        E: Into<HandlerError> + Send + 'static,
        F: Fn(Context, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, E>> + Send + 'static,
    {
        self.typed::<crate::codec::Json, Req, Resp, E, F, Fut>(method, handler)
    }

    /// Registers a handler taking and returning protobuf messages.
    #[cfg(feature = "proto")]
    pub fn proto<Req, Resp, E, F, Fut>(self, method: impl Into<String>, handler: F) -> Self
    where
        Req: prost::Message + Default + Send + 'static,
        Resp: prost::Message + Send + 'static,
        E: Into<HandlerError> + Send + 'static,
        F: Fn(Context, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, E>> + Send + 'static,
    {
        self.typed::<crate::codec::Proto, Req, Resp, E, F, Fut>(method, handler)
    }
}
