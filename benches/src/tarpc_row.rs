//! The best Rust peer: tarpc over the same kind of socket, bincode over a
//! length-delimited framing (tarpc's own Unix transport), a `Bytes` payload,
//! one shared client.

use std::path::Path;

use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use tarpc::server::{BaseChannel, Channel};
use tarpc::tokio_serde::formats::Bincode;
use tarpc::tokio_util::codec::length_delimited::LengthDelimitedCodec;
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

use crate::rows::BoxError;

/// The echo service, as tarpc defines it.
#[tarpc::service]
pub trait TarpcEcho {
    /// Echoes the payload.
    async fn echo(data: Bytes) -> Bytes;
}

#[derive(Clone)]
struct EchoImpl;

impl TarpcEcho for EchoImpl {
    async fn echo(self, _: tarpc::context::Context, data: Bytes) -> Bytes {
        data
    }
}

/// Largest frame: above the 1 MB payload plus bincode's envelope.
const MAX_FRAME: usize = 16 * 1024 * 1024;

fn codec() -> tarpc::tokio_util::codec::length_delimited::Builder {
    let mut b = LengthDelimitedCodec::builder();
    b.max_frame_length(MAX_FRAME);
    b
}

/// Starts a tarpc server at `path`; returns a connected client and the
/// server task.
///
/// # Errors
/// If the socket cannot be bound or connected.
pub async fn start(path: &Path) -> Result<(TarpcEchoClient, JoinHandle<()>), BoxError> {
    let listener = UnixListener::bind(path)?;
    let server = tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let transport =
                tarpc::serde_transport::new(codec().new_framed(conn), Bincode::default());
            let serve = BaseChannel::with_defaults(transport)
                .execute(EchoImpl.serve())
                .for_each(|call| {
                    tokio::spawn(call);
                    futures_util::future::ready(())
                });
            tokio::spawn(serve.map(|()| ()));
        }
    });
    let conn = UnixStream::connect(path).await?;
    let transport = tarpc::serde_transport::new(codec().new_framed(conn), Bincode::default());
    let client = TarpcEchoClient::new(tarpc::client::Config::default(), transport).spawn();
    Ok((client, server))
}
