//! The streaming rows: items of one size streamed over one connection, one
//! stream, client→server ("upload") or server→client ("download"), timed
//! from the first send to the receiver having every item.
//!
//! - `stream-floor`: one tokio Unix stream connection, one writer writing
//!   4-byte-length-prefixed frames as fast as it can from one reused buffer
//!   holding as many frames as fit in 64 KiB (at least one), one
//!   `write_all` of the whole buffer each time, and one reader reading them
//!   into a reused 256 KiB buffer and counting items and bytes — what any
//!   streaming protocol costs at least. The floor is symmetric; it is
//!   measured in each direction anyway (the connecting end writes for an
//!   upload, the accepted end for a download) so that every cell has a
//!   floor of its own pass and direction. Ratios are to this row;
//! - `stream-floor-per-item`: the same with one `write_all` per frame (a
//!   system call per item: what a writer that does not coalesce pays);
//! - `stream-uds`: a uds `Client` and `Server` over `Listener::bind` and
//!   `Client::connect` (as the unary uds rows), `client_streaming` and
//!   `streaming` handlers; items are a `Bytes` built once and cloned, on
//!   both sides. Downloads use the client's stream window (`--stream-window`,
//!   by default uds's default, 16 items); uploads the server's (16);
//! - `stream-uds-w4096`: the same with the largest download window, 4096
//!   (uploads as `stream-uds`: the server's window is not the client's to
//!   set);
//! - `stream-tonic`: tonic client-streaming and server-streaming RPCs over
//!   a Unix socket, `bytes data = 1` messages through tonic-prost, default
//!   settings;
//! - `stream-tonic-tuned`: the same with larger HTTP/2 windows.
//!
//! An upload ends when the server's reply (its count of items and bytes,
//! sent after the client's half-close) arrives; a download when the
//! client's stream ends. The receiver checks the counts.

use std::path::Path;
use std::pin::Pin;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

use crate::EchoMsg;
use crate::rows::BoxError;

/// The `stream-uds-w4096` row's download window: the most a uds server
/// lets a client grant.
const WIDE_WINDOW: u32 = 4096;
/// The uds upload method.
const UDS_UPLOAD: &str = "/stream/upload";
/// The uds download method.
const UDS_DOWNLOAD: &str = "/stream/download";
/// The gRPC client-streaming method.
pub(crate) const TONIC_UPLOAD: &str = "/bench.Echo/Upload";
/// The gRPC server-streaming method.
pub(crate) const TONIC_DOWNLOAD: &str = "/bench.Echo/Download";

/// A streaming row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamRow {
    /// Length-prefixed frames on one tokio Unix connection, written in
    /// batches of up to 64 KiB.
    Floor,
    /// The same, one `write_all` per frame.
    FloorPerItem,
    /// uds client- and server-streaming calls.
    Uds,
    /// The same, the client's download window at its largest (4096).
    UdsWide,
    /// tonic client- and server-streaming calls, defaults.
    Tonic,
    /// The same with larger HTTP/2 windows.
    TonicTuned,
}

impl StreamRow {
    /// Every streaming row, in report order.
    pub const ALL: [StreamRow; 6] = [
        StreamRow::Floor,
        StreamRow::FloorPerItem,
        StreamRow::Uds,
        StreamRow::UdsWide,
        StreamRow::Tonic,
        StreamRow::TonicTuned,
    ];

    /// The row's name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            StreamRow::Floor => "stream-floor",
            StreamRow::FloorPerItem => "stream-floor-per-item",
            StreamRow::Uds => "stream-uds",
            StreamRow::UdsWide => "stream-uds-w4096",
            StreamRow::Tonic => "stream-tonic",
            StreamRow::TonicTuned => "stream-tonic-tuned",
        }
    }

    /// The row called `name`.
    pub fn parse(name: &str) -> Option<StreamRow> {
        StreamRow::ALL.into_iter().find(|r| r.name() == name)
    }
}

/// Which way the items go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client→server: a client-streaming call.
    Upload,
    /// Server→client: a server-streaming call.
    Download,
}

impl Direction {
    /// Both directions, in report order.
    pub const ALL: [Direction; 2] = [Direction::Upload, Direction::Download];

    /// The direction's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Direction::Upload => "upload",
            Direction::Download => "download",
        }
    }
}

/// A running streaming row.
#[derive(Debug)]
pub enum StreamFixture {
    /// See [`StreamRow::Floor`] and [`StreamRow::FloorPerItem`]: a
    /// connection is made per run.
    Floor {
        /// Where the floor's connections come from.
        listener: UnixListener,
        /// Its path.
        path: std::path::PathBuf,
        /// Whether frames are written in batches.
        batched: bool,
    },
    /// See [`StreamRow::Uds`].
    Uds {
        /// The client, one connection.
        client: uds::rpc::Client,
        /// The server.
        server: uds::rpc::Server,
        /// The client's window for downloads.
        window: u32,
    },
    /// See [`StreamRow::Tonic`] and [`StreamRow::TonicTuned`].
    Tonic {
        /// The channel, one connection.
        client: tonic::client::Grpc<tonic::transport::Channel>,
        /// The server task.
        server: JoinHandle<()>,
    },
}

/// The request of a download, and the reply of an upload: a count of items
/// and one of bytes (an item size, for a download), little-endian.
fn counts(items: u64, bytes: u64) -> Bytes {
    let mut v = Vec::with_capacity(16);
    v.extend_from_slice(&items.to_le_bytes());
    v.extend_from_slice(&bytes.to_le_bytes());
    Bytes::from(v)
}

/// The two counts of [`counts`], if `b` is one.
fn parse_counts(b: &[u8]) -> Option<(u64, u64)> {
    let items = u64::from_le_bytes(b.get(..8)?.try_into().ok()?);
    let bytes = u64::from_le_bytes(b.get(8..16)?.try_into().ok()?);
    Some((items, bytes))
}

/// Checks what a receiver counted against what was sent.
fn check(got: (u64, u64), n: usize, size: usize) -> Result<(), BoxError> {
    let want = (n as u64, (n * size) as u64);
    if got == want {
        Ok(())
    } else {
        Err(format!(
            "received {} items, {} bytes; sent {} items, {} bytes",
            got.0, got.1, want.0, want.1
        )
        .into())
    }
}

impl StreamFixture {
    /// Starts `row`, its socket in `dir`; `window` is the `stream-uds`
    /// client's stream window for downloads.
    ///
    /// # Errors
    /// If the row's server cannot be started or its client cannot connect.
    pub async fn start(row: StreamRow, dir: &Path, window: u32) -> Result<Self, BoxError> {
        let path = dir.join(format!("{}.sock", row.name()));
        Ok(match row {
            StreamRow::Floor | StreamRow::FloorPerItem => StreamFixture::Floor {
                listener: UnixListener::bind(&path)?,
                path,
                batched: row == StreamRow::Floor,
            },
            StreamRow::Uds | StreamRow::UdsWide => {
                let server = uds::rpc::Server::builder()
                    .client_streaming(UDS_UPLOAD, |_, _, mut items| async move {
                        let (mut n, mut bytes) = (0u64, 0u64);
                        while let Some(item) = items.next_item().await {
                            n += 1;
                            bytes += item.len() as u64;
                        }
                        Ok(counts(n, bytes))
                    })
                    .streaming(UDS_DOWNLOAD, |_, req: Bytes| async move {
                        let (n, size) = parse_counts(&req)
                            .ok_or_else(|| uds::rpc::HandlerError::bad_data("bad request"))?;
                        let item = Bytes::from(vec![0x5a; size as usize]);
                        Ok(futures_util::stream::repeat(item)
                            .take(n as usize)
                            .map(Ok::<_, uds::rpc::HandlerError>))
                    })
                    .build()?;
                server.serve(uds::net::Listener::bind(&path)?);
                let client = uds::rpc::Client::connect(&path).await?;
                StreamFixture::Uds {
                    client,
                    server,
                    window: if row == StreamRow::UdsWide {
                        WIDE_WINDOW
                    } else {
                        window
                    },
                }
            }
            StreamRow::Tonic | StreamRow::TonicTuned => {
                let (client, server) =
                    crate::rows::start_tonic(&path, row == StreamRow::TonicTuned).await?;
                StreamFixture::Tonic { client, server }
            }
        })
    }

    /// Streams `n` copies of `item` in `dir`ection and returns the time from
    /// the first send to the receiver having them all (checked).
    ///
    /// # Errors
    /// If the stream fails or the receiver's counts are wrong.
    pub async fn run(&self, dir: Direction, item: &Bytes, n: usize) -> Result<Duration, BoxError> {
        match self {
            StreamFixture::Floor {
                listener,
                path,
                batched,
            } => {
                let (client, accepted) = tokio::join!(UnixStream::connect(path), listener.accept());
                let (client, (server, _)) = (client?, accepted?);
                let (writer, reader) = match dir {
                    Direction::Upload => (client, server),
                    Direction::Download => (server, client),
                };
                floor_run(writer, reader, item, n, *batched).await
            }
            StreamFixture::Uds { client, window, .. } => match dir {
                Direction::Upload => {
                    let start = Instant::now();
                    let (mut tx, reply) = client
                        .call_client_stream(
                            UDS_UPLOAD,
                            Bytes::new(),
                            uds::rpc::CallOptions::default(),
                        )
                        .await?;
                    for _ in 0..n {
                        tx.send(item.clone()).await?;
                    }
                    tx.finish().await?;
                    let reply = reply.await?;
                    let took = start.elapsed();
                    check(parse_counts(&reply).ok_or("bad reply")?, n, item.len())?;
                    Ok(took)
                }
                Direction::Download => {
                    let req = counts(n as u64, item.len() as u64);
                    let start = Instant::now();
                    let mut s = client
                        .call_stream(
                            UDS_DOWNLOAD,
                            req,
                            uds::rpc::CallOptions::default().with_stream_window(*window),
                        )
                        .await?;
                    let (mut got, mut bytes) = (0u64, 0u64);
                    while let Some(item) = s.next_item().await {
                        got += 1;
                        bytes += item?.len() as u64;
                    }
                    let took = start.elapsed();
                    check((got, bytes), n, item.len())?;
                    Ok(took)
                }
            },
            StreamFixture::Tonic { client, .. } => {
                let mut c = client.clone();
                c.ready().await?;
                match dir {
                    Direction::Upload => {
                        let msg = EchoMsg { data: item.clone() };
                        let start = Instant::now();
                        let reply: tonic::Response<EchoMsg> = c
                            .client_streaming(
                                tonic::Request::new(futures_util::stream::repeat(msg).take(n)),
                                http::uri::PathAndQuery::from_static(TONIC_UPLOAD),
                                tonic_prost::ProstCodec::default(),
                            )
                            .await?;
                        let took = start.elapsed();
                        let got = parse_counts(&reply.into_inner().data).ok_or("bad reply")?;
                        check(got, n, item.len())?;
                        Ok(took)
                    }
                    Direction::Download => {
                        let req = EchoMsg {
                            data: counts(n as u64, item.len() as u64),
                        };
                        let start = Instant::now();
                        let mut s: tonic::codec::Streaming<EchoMsg> = c
                            .server_streaming(
                                tonic::Request::new(req),
                                http::uri::PathAndQuery::from_static(TONIC_DOWNLOAD),
                                tonic_prost::ProstCodec::default(),
                            )
                            .await?
                            .into_inner();
                        let (mut got, mut bytes) = (0u64, 0u64);
                        while let Some(m) = s.message().await? {
                            got += 1;
                            bytes += m.data.len() as u64;
                        }
                        let took = start.elapsed();
                        check((got, bytes), n, item.len())?;
                        Ok(took)
                    }
                }
            }
        }
    }

    /// Stops the server.
    pub async fn stop(self) {
        match self {
            StreamFixture::Floor { .. } => {}
            StreamFixture::Uds { server, .. } => {
                server.shutdown(Duration::from_secs(1)).await;
            }
            StreamFixture::Tonic { server, .. } => server.abort(),
        }
    }
}

/// Bytes of a floor frame's header.
const HEADER: usize = 4;
/// The floor reader's buffer.
const READ_BUFFER: usize = 256 * 1024;

/// The batched floor's writes: as many whole frames as fit in this many
/// bytes (at least one).
const WRITE_BATCH: usize = 64 * 1024;

/// The floor: `writer` (a task of its own) writes `n` frames of `item`
/// from one buffer built once — `batched`, as many frames per `write_all`
/// as fit in [`WRITE_BATCH`] bytes, else one frame per `write_all` —
/// and `reader` reads them into one reused buffer, walking the headers and
/// counting. Timed from the writer's start to the reader having the `n`th
/// frame.
async fn floor_run(
    mut writer: UnixStream,
    mut reader: UnixStream,
    item: &Bytes,
    n: usize,
    batched: bool,
) -> Result<Duration, BoxError> {
    let len = u32::try_from(item.len())?;
    let frame_len = HEADER + item.len();
    let per_write = if batched {
        (WRITE_BATCH / frame_len).max(1)
    } else {
        1
    };
    let mut frames = Vec::with_capacity(per_write * frame_len);
    for _ in 0..per_write {
        frames.extend_from_slice(&len.to_le_bytes());
        frames.extend_from_slice(item);
    }
    let size = item.len();
    let start = Instant::now();
    let write = tokio::spawn(async move {
        let mut left = n;
        while left > 0 {
            let k = left.min(per_write);
            writer.write_all(&frames[..k * frame_len]).await?;
            left -= k;
        }
        writer.shutdown().await?;
        Ok::<_, std::io::Error>(())
    });
    let read = tokio::spawn(async move {
        let mut buf = vec![0u8; READ_BUFFER];
        // The header being read, and how many of its bytes are in.
        let (mut header, mut have) = ([0u8; HEADER], 0usize);
        // Body bytes of the current frame still to come.
        let mut body = 0usize;
        let (mut items, mut bytes) = (0u64, 0u64);
        loop {
            if items == n as u64 {
                break;
            }
            let got = reader.read(&mut buf).await?;
            if got == 0 {
                break;
            }
            let mut at = 0;
            while at < got {
                if body > 0 {
                    let take = body.min(got - at);
                    body -= take;
                    at += take;
                    bytes += take as u64;
                    if body == 0 {
                        items += 1;
                    }
                    continue;
                }
                let take = (HEADER - have).min(got - at);
                header[have..have + take].copy_from_slice(&buf[at..at + take]);
                have += take;
                at += take;
                if have == HEADER {
                    have = 0;
                    body = u32::from_le_bytes(header) as usize;
                    if body == 0 {
                        items += 1;
                    }
                }
            }
        }
        Ok::<_, std::io::Error>(((items, bytes), Instant::now()))
    });
    write.await??;
    let (got, end) = read.await??;
    check(got, n, size)?;
    Ok(end - start)
}

/// The gRPC client-streaming handler: counts the items and bytes.
pub(crate) struct TonicUpload;

impl tonic::server::ClientStreamingService<EchoMsg> for TonicUpload {
    type Response = EchoMsg;
    type Future = Pin<
        Box<
            dyn std::future::Future<Output = Result<tonic::Response<EchoMsg>, tonic::Status>>
                + Send,
        >,
    >;

    fn call(&mut self, request: tonic::Request<tonic::Streaming<EchoMsg>>) -> Self::Future {
        Box::pin(async move {
            let mut s = request.into_inner();
            let (mut n, mut bytes) = (0u64, 0u64);
            while let Some(m) = s.message().await? {
                n += 1;
                bytes += m.data.len() as u64;
            }
            Ok(tonic::Response::new(EchoMsg {
                data: counts(n, bytes),
            }))
        })
    }
}

/// The gRPC server-streaming handler: the requested count of items of the
/// requested size, one `Bytes` built once and cloned.
pub(crate) struct TonicDownload;

/// The stream [`TonicDownload`] answers with.
type DownloadStream =
    Pin<Box<dyn futures_util::Stream<Item = Result<EchoMsg, tonic::Status>> + Send>>;

impl tonic::server::ServerStreamingService<EchoMsg> for TonicDownload {
    type Response = EchoMsg;
    type ResponseStream = DownloadStream;
    type Future = Pin<
        Box<
            dyn std::future::Future<Output = Result<tonic::Response<DownloadStream>, tonic::Status>>
                + Send,
        >,
    >;

    fn call(&mut self, request: tonic::Request<EchoMsg>) -> Self::Future {
        Box::pin(async move {
            let (n, size) = parse_counts(&request.into_inner().data)
                .ok_or_else(|| tonic::Status::invalid_argument("bad request"))?;
            let msg = EchoMsg {
                data: Bytes::from(vec![0x5a; size as usize]),
            };
            let s: DownloadStream =
                Box::pin(futures_util::stream::repeat(msg).take(n as usize).map(Ok));
            Ok(tonic::Response::new(s))
        })
    }
}
