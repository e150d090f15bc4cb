//! `#[uds::service]` beyond the basics: per-call options on the generated
//! client, JSON argument evolution (`#[uds(default)]`, missing keys),
//! attributes carried to generated code (`cfg`, `deprecated`), raw
//! identifiers as method names.
//!
//! The module `quiet` is compiled with `#![deny(deprecated, ...)]`, and
//! `cargo clippy -p uds-tests --all-targets -- -D warnings -W
//! clippy::pedantic` keeps generated code free of pedantic lints there.

use std::time::Duration;

use uds::rpc::{CallOptions, RpcError};

/// A service to exercise the options.
#[uds::service]
pub trait Opts {
    /// Sleeps `ms` milliseconds.
    async fn sleep(&self, ms: u64) -> u64;
    /// `ttl` may be left out by the caller.
    async fn put(&self, key: String, #[uds(default)] ttl: Option<u64>) -> String;
    /// Both keys are required.
    async fn pair(&self, a: u32, b: u32) -> u32;
    /// Compiled out of the tests.
    #[cfg(not(test))]
    async fn gated(&self) -> u32;
    /// A raw identifier as the method name: the wire name has no `r#`.
    async fn r#type(&self) -> String;
}

struct Imp;

impl Opts for Imp {
    async fn sleep(&self, ms: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }
    async fn put(&self, key: String, ttl: Option<u64>) -> String {
        format!("{key}:{ttl:?}")
    }
    async fn pair(&self, a: u32, b: u32) -> u32 {
        a + b
    }
    async fn r#type(&self) -> String {
        "t".into()
    }
}

fn start() -> (uds::rpc::Server, OptsClient) {
    let server = OptsServer::new(Imp).build().unwrap();
    let (a, b) = uds::net::pair().unwrap();
    server.serve_connection(b);
    (server, OptsClient::from_conn(a))
}

#[tokio::test]
async fn a_timeout_set_at_the_call_site_applies_to_that_call_only() {
    let (_server, c) = start();
    let e = c
        .with_timeout(Duration::from_millis(20))
        .sleep(2_000)
        .await
        .unwrap_err();
    assert!(matches!(e, RpcError::DeadlineExceeded { .. }), "{e:?}");
    // The client itself keeps its options: the next call has no deadline.
    assert_eq!(c.options().timeout, None);
    assert_eq!(c.sleep(30).await.unwrap(), 30);
    // `with_options` by reference: the same connection, other options.
    let short = c.with_options(CallOptions::timeout(Duration::from_secs(5)));
    assert_eq!(short.options().timeout, Some(Duration::from_secs(5)));
    assert_eq!(short.sleep(1).await.unwrap(), 1);
    assert_eq!(c.sleep(1).await.unwrap(), 1);
}

#[tokio::test]
async fn a_missing_argument_is_bad_data_unless_it_is_marked_default() {
    let (_server, c) = start();
    // What an old peer, or one that renamed a parameter, sends.
    let e = c.rpc().call("/Opts/pair", r#"{"a":1}"#).await.unwrap_err();
    match e {
        RpcError::BadData { message } => {
            assert!(message.contains("argument `b` is missing"), "{message}");
        }
        other => panic!("expected bad data, got {other:?}"),
    }
    // `#[uds(default)]`: a missing key is `None`.
    let raw = c.rpc().call("/Opts/put", r#"{"key":"k"}"#).await.unwrap();
    assert_eq!(&raw[..], br#""k:None""#);
    assert_eq!(c.put("k".into(), Some(5)).await.unwrap(), "k:Some(5)");
    // An explicit `null` is `None` too; unknown keys are ignored.
    let raw = c
        .rpc()
        .call("/Opts/put", r#"{"key":"k","ttl":null,"new_arg":1}"#)
        .await
        .unwrap();
    assert_eq!(&raw[..], br#""k:None""#);
}

#[tokio::test]
async fn cfg_removes_a_method_everywhere_and_raw_names_are_unraw_on_the_wire() {
    assert_eq!(
        OptsServer::<Imp>::METHODS,
        ["/Opts/sleep", "/Opts/put", "/Opts/pair", "/Opts/type"]
    );
    let (_server, c) = start();
    assert_eq!(c.r#type().await.unwrap(), "t");
    assert_eq!(
        &c.rpc().call("/Opts/type", "null").await.unwrap()[..],
        br#""t""#
    );
}

#[tokio::test]
async fn client_clone_is_clone_not_a_call() {
    let (_server, c) = start();
    #[allow(clippy::redundant_clone)]
    let d = c.clone();
    assert_eq!(d.pair(1, 2).await.unwrap(), 3);
}

/// Generated code stays quiet under strict lints: a deprecated method warns
/// its callers, never the crate that declares it.
pub mod quiet {
    #![deny(deprecated, unused, missing_docs, clippy::all, clippy::pedantic)]

    fn any_peer(_: &uds::Cred) -> bool {
        true
    }

    /// A service with a deprecated method, and every other shape.
    #[uds::service(allow = "same_user")]
    pub trait Legacy: Send + Sync {
        /// The old way.
        #[deprecated(note = "use `new_way`")]
        async fn old_way(&self, a: u32, b: String) -> u32;
        /// The new way.
        async fn new_way(&self, a: u32) -> Result<u32, String>;
        /// A stream, with the context and a policy.
        #[uds(policy = any_peer)]
        async fn ticks(&self, ctx: &uds::Context, n: u32) -> uds::ServerStream<u32>;
        /// Nothing in, nothing out; an optional argument.
        async fn ping(&self, a: u32, #[uds(default)] b: Option<u32>);
    }

    /// A proto service under the same lints.
    #[uds::service(codec = "proto")]
    pub trait ProtoQuiet {
        /// One message in, one out.
        async fn get(&self, req: String) -> String;
        /// No argument.
        async fn none(&self);
    }

    /// An implementation.
    #[derive(Debug)]
    pub struct L;

    impl Legacy for L {
        async fn old_way(&self, a: u32, _b: String) -> u32 {
            a
        }
        async fn new_way(&self, a: u32) -> Result<u32, String> {
            Ok(a)
        }
        async fn ticks(&self, _ctx: &uds::Context, n: u32) -> uds::ServerStream<u32> {
            uds::ServerStream::iter(0..n)
        }
        async fn ping(&self, _a: u32, _b: Option<u32>) {}
    }

    impl ProtoQuiet for L {
        async fn get(&self, req: String) -> String {
            req
        }
        async fn none(&self) {}
    }

    #[tokio::test]
    async fn a_deprecated_method_still_works() {
        let server = LegacyServer::new(L).build().unwrap();
        let (a, b) = uds::net::pair().unwrap();
        server.serve_connection(b);
        let c = LegacyClient::from_conn(a);
        #[allow(deprecated)]
        let old = c.old_way(1, String::new()).await.unwrap();
        assert_eq!(old, 1);
        assert_eq!(c.new_way(2).await.unwrap(), 2);
    }
}
