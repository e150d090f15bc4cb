//! Every streaming kind compiles warning-free, both codecs, with the
//! context, ordinary arguments before the stream and fallible items.
#![deny(warnings)]

use uds::{Context, ServerStream, Streaming};

/// A chunk.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Chunk {
    /// Its bytes.
    #[prost(bytes = "vec", tag = "1")]
    pub data: Vec<u8>,
}

/// JSON.
#[uds::service]
pub trait Json {
    /// Client streaming.
    async fn upload(&self, ctx: &Context, name: String, chunks: Streaming<Vec<u8>>) -> u64;
    /// Client streaming, fallible.
    async fn strict(&self, chunks: Streaming<u8>) -> Result<u64, String>;
    /// Bidirectional, fallible items.
    async fn chat(&self, words: Streaming<String>) -> ServerStream<Result<String, String>>;
    /// Server streaming, fallible items.
    async fn lines(&self, n: u32) -> ServerStream<Result<String, String>>;
}

/// Protobuf.
#[uds::service(codec = "proto")]
pub trait Proto {
    /// Client streaming.
    async fn total(&self, chunks: Streaming<Chunk>) -> Chunk;
    /// Bidirectional, one argument first.
    async fn echo(&self, first: Chunk, chunks: Streaming<Chunk>) -> ServerStream<Chunk>;
}

fn main() {}
