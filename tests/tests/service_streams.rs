//! The four call kinds of `#[uds::service]` end to end, through generated
//! code, with both codecs: unary, server streaming, client streaming and
//! bidirectional; `Result` items whose error ends a stream; the context in
//! streaming handlers; cancellation by dropping the client's future.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use uds::{CallError, Context, ServerStream, Streaming};
use uds_tests::{DropFlag, eventually};

/// A file store's error.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum StoreError {
    /// The chunk was empty.
    EmptyChunk,
}

/// What an upload made of its chunks.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    /// The file's name.
    pub name: String,
    /// Chunks received.
    pub chunks: u32,
    /// Bytes received.
    pub bytes: u64,
}

/// All four kinds, JSON.
#[uds::service]
pub trait Files {
    /// Unary.
    async fn size(&self, name: String) -> u64;
    /// Server streaming.
    async fn lines(&self, n: u32) -> ServerStream<String>;
    /// Client streaming, with an ordinary argument before the stream.
    async fn upload(&self, ctx: &Context, name: String, chunks: Streaming<Vec<u8>>) -> Summary;
    /// Client streaming with an application error.
    async fn strict_upload(&self, chunks: Streaming<Vec<u8>>) -> Result<u64, StoreError>;
    /// Bidirectional.
    async fn shout(&self, words: Streaming<String>) -> ServerStream<String>;
    /// Bidirectional with fallible items: an empty chunk ends the stream.
    async fn check(&self, chunks: Streaming<Vec<u8>>) -> ServerStream<Result<u32, StoreError>>;
    /// Client streaming that never answers (for cancellation).
    async fn hang(&self, chunks: Streaming<u8>);
}

#[derive(Default)]
struct Store {
    dropped: Arc<AtomicBool>,
}

impl Files for Store {
    async fn size(&self, name: String) -> u64 {
        name.len() as u64
    }

    async fn lines(&self, n: u32) -> ServerStream<String> {
        ServerStream::iter((0..n).map(|i| format!("line {i}")))
    }

    async fn upload(&self, ctx: &Context, name: String, mut chunks: Streaming<Vec<u8>>) -> Summary {
        assert!(ctx.peer().pid > 0, "the context is there for streams too");
        let (mut n, mut bytes) = (0, 0);
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.expect("a chunk that decodes");
            n += 1;
            bytes += chunk.len() as u64;
        }
        Summary {
            name,
            chunks: n,
            bytes,
        }
    }

    async fn strict_upload(&self, mut chunks: Streaming<Vec<u8>>) -> Result<u64, StoreError> {
        let mut bytes = 0;
        while let Some(Ok(chunk)) = chunks.next().await {
            if chunk.is_empty() {
                return Err(StoreError::EmptyChunk);
            }
            bytes += chunk.len() as u64;
        }
        Ok(bytes)
    }

    async fn shout(&self, words: Streaming<String>) -> ServerStream<String> {
        ServerStream::new(words.map(|w| w.map_or_else(|e| e.to_string(), |w| w.to_uppercase())))
    }

    async fn check(&self, chunks: Streaming<Vec<u8>>) -> ServerStream<Result<u32, StoreError>> {
        ServerStream::new(chunks.map(|c| match c {
            Ok(c) if c.is_empty() => Err(StoreError::EmptyChunk),
            Ok(c) => Ok(u32::try_from(c.len()).unwrap_or(u32::MAX)),
            Err(_) => Err(StoreError::EmptyChunk),
        }))
    }

    async fn hang(&self, _chunks: Streaming<u8>) {
        let _flag = DropFlag(self.dropped.clone());
        std::future::pending::<()>().await;
    }
}

fn files(store: Store) -> (FilesClient, uds::rpc::Server) {
    let server = FilesServer::new(store).build().unwrap();
    let (a, b) = uds::net::pair().unwrap();
    server.serve_connection(b);
    (FilesClient::from_conn(a), server)
}

#[tokio::test]
async fn json_all_four_kinds() {
    let (client, _server) = files(Store::default());
    assert_eq!(client.size("abc".into()).await.unwrap(), 3);

    let lines: Vec<String> = client
        .lines(3)
        .await
        .unwrap()
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(lines, ["line 0", "line 1", "line 2"]);

    let chunks = futures_util::stream::iter((0..100u32).map(|i| vec![0u8; i as usize]));
    let summary = client.upload("f.bin".into(), chunks).await.unwrap();
    assert_eq!(
        summary,
        Summary {
            name: "f.bin".into(),
            chunks: 100,
            bytes: (0..100).sum()
        }
    );

    let words = futures_util::stream::iter(["a", "bc", "def"].map(String::from));
    let shouted: Vec<String> = client
        .shout(words)
        .await
        .unwrap()
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(shouted, ["A", "BC", "DEF"]);
}

#[tokio::test]
async fn a_client_stream_application_error_is_typed() {
    let (client, _server) = files(Store::default());
    let ok = futures_util::stream::iter([vec![1u8, 2], vec![3]]);
    assert_eq!(client.strict_upload(ok).await.unwrap(), 3);
    // The handler answers at the empty chunk, before the producer is done.
    let bad = futures_util::stream::iter([vec![1u8], vec![], vec![2]])
        .chain(futures_util::stream::pending());
    let got = tokio::time::timeout(Duration::from_secs(5), client.strict_upload(bad))
        .await
        .expect("an early answer stops a producer that never ends");
    assert_eq!(got, Err(CallError::App(StoreError::EmptyChunk)));
}

#[tokio::test]
async fn a_fallible_stream_ends_with_its_typed_error() {
    let (client, _server) = files(Store::default());
    let chunks = futures_util::stream::iter([vec![1u8, 2], vec![3], vec![], vec![4]]);
    let mut s = client.check(chunks).await.unwrap();
    assert_eq!(s.next().await.unwrap().unwrap(), 2);
    assert_eq!(s.next().await.unwrap().unwrap(), 1);
    match s.next().await {
        Some(Err(CallError::App(StoreError::EmptyChunk))) => {}
        other => panic!("{other:?}"),
    }
    assert!(s.next().await.is_none(), "the error ended the stream");
}

#[tokio::test]
async fn dropping_a_client_stream_call_cancels_the_handler() {
    let store = Store::default();
    let dropped = store.dropped.clone();
    let (client, _server) = files(store);
    let call = client.hang(futures_util::stream::iter([1u8, 2, 3]));
    assert!(
        tokio::time::timeout(Duration::from_millis(100), call)
            .await
            .is_err()
    );
    eventually(
        "the handler was dropped",
        Duration::from_millis(500),
        || dropped.load(Ordering::SeqCst),
    )
    .await;
}

/// A proto chunk.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Chunk {
    /// Bytes.
    #[prost(bytes = "bytes", tag = "1")]
    pub data: bytes::Bytes,
}

/// A proto count.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Count {
    /// Items.
    #[prost(uint32, tag = "1")]
    pub items: u32,
    /// Bytes.
    #[prost(uint64, tag = "2")]
    pub bytes: u64,
}

/// All four kinds, protobuf.
#[uds::service(codec = "proto")]
pub trait Blobs {
    /// Unary.
    async fn measure(&self, chunk: Chunk) -> Count;
    /// Server streaming.
    async fn split(&self, chunk: Chunk) -> ServerStream<Chunk>;
    /// Client streaming.
    async fn total(&self, chunks: Streaming<Chunk>) -> Count;
    /// Bidirectional.
    async fn echo(&self, first: Count, chunks: Streaming<Chunk>) -> ServerStream<Chunk>;
}

struct BlobStore;

impl Blobs for BlobStore {
    async fn measure(&self, chunk: Chunk) -> Count {
        Count {
            items: 1,
            bytes: chunk.data.len() as u64,
        }
    }

    async fn split(&self, chunk: Chunk) -> ServerStream<Chunk> {
        let parts: Vec<Chunk> = chunk
            .data
            .chunks(2)
            .map(|p| Chunk {
                data: bytes::Bytes::copy_from_slice(p),
            })
            .collect();
        ServerStream::iter(parts)
    }

    async fn total(&self, mut chunks: Streaming<Chunk>) -> Count {
        let mut c = Count::default();
        while let Some(Ok(chunk)) = chunks.next().await {
            c.items += 1;
            c.bytes += chunk.data.len() as u64;
        }
        c
    }

    async fn echo(&self, first: Count, chunks: Streaming<Chunk>) -> ServerStream<Chunk> {
        let skip = first.items as usize;
        ServerStream::new(chunks.skip(skip).filter_map(|c| async move { c.ok() }))
    }
}

#[tokio::test]
async fn proto_all_four_kinds() {
    let server = BlobsServer::new(BlobStore).build().unwrap();
    let (a, b) = uds::net::pair().unwrap();
    server.serve_connection(b);
    let client = BlobsClient::from_conn(a);
    let chunk = |s: &'static str| Chunk {
        data: bytes::Bytes::from_static(s.as_bytes()),
    };

    assert_eq!(client.measure(chunk("abcd")).await.unwrap().bytes, 4);

    let parts: Vec<bytes::Bytes> = client
        .split(chunk("abcde"))
        .await
        .unwrap()
        .map(|c| c.unwrap().data)
        .collect()
        .await;
    assert_eq!(parts, ["ab", "cd", "e"]);

    let total = client
        .total(futures_util::stream::iter([chunk("ab"), chunk("c")]))
        .await
        .unwrap();
    assert_eq!((total.items, total.bytes), (2, 3));

    let echoed: Vec<bytes::Bytes> = client
        .echo(
            Count { items: 1, bytes: 0 },
            futures_util::stream::iter([chunk("skip"), chunk("x"), chunk("yz")]),
        )
        .await
        .unwrap()
        .map(|c| c.unwrap().data)
        .collect()
        .await;
    assert_eq!(echoed, ["x", "yz"]);
}

#[tokio::test]
async fn a_go_style_unary_call_to_a_generated_streaming_method_is_refused() {
    let (client, _server) = files(Store::default());
    // A plain request, as a Go client would send it.
    let got = client.rpc().call("/Files/upload", r#"{"name":"x"}"#).await;
    match got {
        Err(uds::rpc::RpcError::BadData { message }) => {
            assert!(message.contains("client-streaming"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}
