//! The benchmark's rows: each starts a server and a client in this process
//! and echoes payloads through them.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

use crate::EchoMsg;

/// Error type of the harness.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A benchmark row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Row {
    /// Minimal length-prefixed echo on tokio, one connection per user.
    Floor,
    /// The same with std's blocking sockets, a thread per connection.
    FloorStd,
    /// uds chunk RPC, no codec.
    UdsRaw,
    /// `#[uds::service(codec = "proto")]`.
    UdsService,
    /// tarpc, bincode, a `Bytes` payload.
    Tarpc,
    /// tonic gRPC, defaults.
    Tonic,
    /// tonic gRPC, larger HTTP/2 windows.
    TonicTuned,
}

impl Row {
    /// Every row, in report order.
    pub const ALL: [Row; 7] = [
        Row::Floor,
        Row::FloorStd,
        Row::UdsRaw,
        Row::UdsService,
        Row::Tarpc,
        Row::Tonic,
        Row::TonicTuned,
    ];

    /// The row's name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Row::Floor => "floor",
            Row::FloorStd => "floor-std",
            Row::UdsRaw => "uds-raw",
            Row::UdsService => "uds-service",
            Row::Tarpc => "tarpc",
            Row::Tonic => "tonic",
            Row::TonicTuned => "tonic-tuned",
        }
    }

    /// Whether this row is one of the floors.
    pub fn is_floor(self) -> bool {
        matches!(self, Row::Floor | Row::FloorStd)
    }

    /// The row called `name`.
    pub fn parse(name: &str) -> Option<Row> {
        Row::ALL.into_iter().find(|r| r.name() == name)
    }
}

/// The service the `uds-service` row runs.
#[uds::service(codec = "proto")]
pub trait Echo {
    /// Echoes the payload.
    #[uds(name = "/bench.Echo/Echo")]
    async fn echo(&self, req: EchoMsg) -> EchoMsg;
}

struct EchoImpl;

impl Echo for EchoImpl {
    async fn echo(&self, req: EchoMsg) -> EchoMsg {
        req
    }
}

/// A running row: its server and its client.
#[derive(Debug)]
pub enum Fixture {
    /// See [`Row::Floor`].
    Floor(crate::floor::TokioFloor),
    /// See [`Row::FloorStd`]: its calls block, so the harness runs its users
    /// on threads of their own.
    FloorStd(std::sync::Arc<crate::floor::StdFloor>),
    /// See [`Row::Tarpc`].
    Tarpc {
        /// The shared client.
        client: crate::tarpc_row::TarpcEchoClient,
        /// The accept loop.
        server: JoinHandle<()>,
    },
    /// See [`Row::UdsRaw`].
    UdsRaw {
        /// The shared client.
        client: uds::rpc::Client,
        /// The server.
        server: uds::rpc::Server,
    },
    /// See [`Row::UdsService`].
    UdsService {
        /// The shared generated client.
        client: EchoClient,
        /// The server.
        server: uds::rpc::Server,
    },
    /// See [`Row::Tonic`] and [`Row::TonicTuned`].
    Tonic {
        /// The shared channel.
        client: tonic::client::Grpc<tonic::transport::Channel>,
        /// The server task.
        server: JoinHandle<()>,
    },
}

impl Fixture {
    /// Starts `row` with `users` users, its socket in `dir`.
    ///
    /// # Errors
    /// If the row's server cannot be started or its clients cannot connect.
    pub async fn start(row: Row, users: usize, dir: &Path) -> Result<Fixture, BoxError> {
        let path = dir.join(format!("{}.sock", row.name()));
        Ok(match row {
            Row::Floor => Fixture::Floor(crate::floor::TokioFloor::start(&path, users).await?),
            Row::FloorStd => Fixture::FloorStd(std::sync::Arc::new(crate::floor::StdFloor::start(
                &path, users,
            )?)),
            Row::Tarpc => {
                let (client, server) = crate::tarpc_row::start(&path).await?;
                Fixture::Tarpc { client, server }
            }
            Row::UdsRaw => {
                let server = uds::rpc::Server::builder()
                    .handler("/echo", |_, req| async move { Ok(req) })
                    .build()?;
                server.serve(uds::net::Listener::bind(&path)?);
                let client = uds::rpc::Client::connect(&path).await?;
                Fixture::UdsRaw { client, server }
            }
            Row::UdsService => {
                let server = EchoServer::new(EchoImpl).build()?;
                server.serve(uds::net::Listener::bind(&path)?);
                let client = EchoClient::connect(&path).await?;
                Fixture::UdsService { client, server }
            }
            Row::Tonic | Row::TonicTuned => {
                let (client, server) = start_tonic(&path, row == Row::TonicTuned).await?;
                Fixture::Tonic { client, server }
            }
        })
    }

    /// Echoes `payload` as user `user`; returns the length echoed back.
    ///
    /// # Errors
    /// If the call fails.
    pub async fn echo(&self, user: usize, payload: &Bytes) -> Result<usize, BoxError> {
        match self {
            Fixture::Floor(floor) => Ok(floor.echo(user, payload).await?),
            Fixture::FloorStd(floor) => Ok(floor.echo(user, payload)?),
            Fixture::Tarpc { client, .. } => {
                let reply = client
                    .echo(tarpc::context::current(), payload.clone())
                    .await?;
                Ok(reply.len())
            }
            Fixture::UdsRaw { client, .. } => {
                Ok(client.call("/echo", payload.clone()).await?.len())
            }
            Fixture::UdsService { client, .. } => {
                let reply = client
                    .echo(EchoMsg {
                        data: payload.clone(),
                    })
                    .await?;
                Ok(reply.data.len())
            }
            Fixture::Tonic { client, .. } => {
                let mut c = client.clone();
                c.ready().await?;
                let reply: tonic::Response<EchoMsg> = c
                    .unary(
                        tonic::Request::new(EchoMsg {
                            data: payload.clone(),
                        }),
                        http::uri::PathAndQuery::from_static("/bench.Echo/Echo"),
                        tonic_prost::ProstCodec::default(),
                    )
                    .await?;
                Ok(reply.into_inner().data.len())
            }
        }
    }

    /// The blocking floor, whose users the harness runs on threads.
    pub fn blocking(&self) -> Option<std::sync::Arc<crate::floor::StdFloor>> {
        match self {
            Fixture::FloorStd(floor) => Some(floor.clone()),
            _ => None,
        }
    }

    /// Stops the server.
    pub async fn stop(self) {
        match self {
            Fixture::Floor(floor) => floor.stop(),
            Fixture::FloorStd(_) => {}
            Fixture::Tarpc { server, .. } | Fixture::Tonic { server, .. } => server.abort(),
            Fixture::UdsRaw { server, .. } | Fixture::UdsService { server, .. } => {
                server.shutdown(std::time::Duration::from_secs(1)).await;
            }
        }
    }
}

/// gRPC echo service, written by hand as `tonic-build` would generate it
/// (no `protoc` needed); it also serves the streaming rows' methods (see
/// [`crate::streaming`]).
#[derive(Clone, Copy)]
struct TonicEcho;

impl tonic::server::NamedService for TonicEcho {
    const NAME: &'static str = "bench.Echo";
}

struct EchoUnary;

impl tonic::server::UnaryService<EchoMsg> for EchoUnary {
    type Response = EchoMsg;
    type Future = Pin<
        Box<
            dyn std::future::Future<Output = Result<tonic::Response<EchoMsg>, tonic::Status>>
                + Send,
        >,
    >;

    fn call(&mut self, request: tonic::Request<EchoMsg>) -> Self::Future {
        Box::pin(async move { Ok(tonic::Response::new(request.into_inner())) })
    }
}

impl<B> tower::Service<http::Request<B>> for TonicEcho
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        match req.uri().path() {
            "/bench.Echo/Echo" => Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(
                    tonic_prost::ProstCodec::<EchoMsg, EchoMsg>::default(),
                );
                Ok(grpc.unary(EchoUnary, req).await)
            }),
            crate::streaming::TONIC_UPLOAD => Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(
                    tonic_prost::ProstCodec::<EchoMsg, EchoMsg>::default(),
                );
                Ok(grpc
                    .client_streaming(crate::streaming::TonicUpload, req)
                    .await)
            }),
            crate::streaming::TONIC_DOWNLOAD => Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(
                    tonic_prost::ProstCodec::<EchoMsg, EchoMsg>::default(),
                );
                Ok(grpc
                    .server_streaming(crate::streaming::TonicDownload, req)
                    .await)
            }),
            _ => Box::pin(
                async move { Ok(tonic::Status::unimplemented("no such method").into_http()) },
            ),
        }
    }
}

const TUNED_STREAM_WINDOW: u32 = 8 * 1024 * 1024;
const TUNED_CONN_WINDOW: u32 = 32 * 1024 * 1024;

/// Starts a gRPC server at `path` (larger HTTP/2 windows if `tuned`) and
/// connects a channel to it.
pub(crate) async fn start_tonic(
    path: &Path,
    tuned: bool,
) -> Result<
    (
        tonic::client::Grpc<tonic::transport::Channel>,
        JoinHandle<()>,
    ),
    BoxError,
> {
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(UnixListener::bind(path)?);
    let mut builder = tonic::transport::Server::builder();
    if tuned {
        builder = builder
            .initial_stream_window_size(Some(TUNED_STREAM_WINDOW))
            .initial_connection_window_size(Some(TUNED_CONN_WINDOW));
    }
    let router = builder.add_service(TonicEcho);
    let server = tokio::spawn(async move {
        let _ = router.serve_with_incoming(incoming).await;
    });
    let mut endpoint = tonic::transport::Endpoint::try_from("http://[::]:50051")?;
    if tuned {
        endpoint = endpoint
            .initial_stream_window_size(Some(TUNED_STREAM_WINDOW))
            .initial_connection_window_size(Some(TUNED_CONN_WINDOW));
    }
    let path: PathBuf = path.to_path_buf();
    let channel = endpoint
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    UnixStream::connect(path).await?,
                ))
            }
        }))
        .await?;
    Ok((tonic::client::Grpc::new(channel), server))
}
