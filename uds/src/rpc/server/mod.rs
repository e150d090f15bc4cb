//! The RPC server: dispatch by method name, deadlines, cancellation, bounds,
//! graceful shutdown.
//!
//! Inside, one file per concern, each using only files listed after it:
//! - `builder`: [`ServerBuilder`];
//! - `serve`: one connection's life, a read loop that returns why it ended
//!   and a drain step;
//! - `dispatch`: what each request frame does (route, start, queue);
//! - `shared`: the state every connection of a server shares;
//! - `parked`: requests waiting for a call slot, with their byte count;
//! - `handler`: type-erased handlers and how one call runs;
//! - `conn`: a connection's shared state, its replies, a call's guard;
//! - `context`: the [`Context`] a handler gets;
//! - `items`: the items a client streams to a handler, and their credit;
//! - `in_flight`: the table of running calls and their cancellation;
//! - `peers`: per-process and per-user usage, and the call slots;
//! - `config`: the server's limits, their defaults and checks.
//!
//! This file is the façade: [`Server`] itself, built by `builder`.

mod builder;
mod config;
mod conn;
mod context;
mod dispatch;
mod handler;
mod in_flight;
mod inline;
mod items;
mod parked;
mod peers;
mod serve;
mod shared;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

pub use builder::ServerBuilder;
pub use context::{Context, FromContext};
pub use items::RpcItems;
use shared::Shared;

use crate::net::{Conn, Listener};

/// Stops everything when the last [`Server`] handle goes.
struct Owner(Arc<Shared>);

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.stop_accepting.cancel();
        self.0.hard_stop.cancel();
    }
}

/// An RPC server. Cheap to clone. Dropping the last clone stops it at once,
/// unless it is serving a listener ([`Server::serve`] keeps it alive until
/// [`Server::shutdown`]); use `shutdown` to stop gracefully.
///
/// Every reply carries the request's id. Error replies use the wire codes:
/// unknown method → 1, deadline → 2, undecodable request → 3, handler error
/// or panic → 4. A request whose deadline has passed is refused without
/// running the handler; a handler still running at its deadline (the
/// client's, or the server's cap, [`ServerBuilder::max_timeout`]) is dropped
/// and answered with a deadline error.
///
/// Calls are bounded per connection, per peer process, per user and per
/// server; a request beyond its peer's queue quota is answered with a
/// server error reading [`TOO_MANY_CALLS`](crate::rpc::TOO_MANY_CALLS). Connections are bounded per
/// user ([`ServerBuilder::max_connections_per_user`]). Every log line a
/// peer can trigger is rate-limited (one a second per kind).
#[derive(Clone)]
pub struct Server {
    owner: Arc<Owner>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field(
                "methods",
                &self.shared().handlers.keys().collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// A connection being served by [`Server::serve_connection`].
#[derive(Debug)]
pub struct ServedConnection {
    task: tokio::task::JoinHandle<()>,
    /// The task's result was taken (a `JoinHandle` must not be polled again).
    joined: bool,
}

impl ServedConnection {
    /// Waits until the connection has ended — the peer closed it, it failed,
    /// or the server stopped — and every call on it has finished.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future leaves the connection served.
    pub async fn closed(&mut self) {
        if !self.joined {
            // A join error means the connection's task panicked or was
            // aborted with the runtime: either way the connection is over.
            let _ = (&mut self.task).await;
            self.joined = true;
        }
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.joined || self.task.is_finished()
    }
}

/// What a graceful shutdown did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Whether every call finished (and its reply was written) within the
    /// grace period.
    pub graceful: bool,
    /// Calls cancelled because the grace period ran out.
    pub aborted_calls: u64,
}

impl Server {
    /// A builder.
    pub fn builder() -> ServerBuilder {
        ServerBuilder {
            handlers: HashMap::new(),
            duplicates: Vec::new(),
            config: config::Config::default(),
        }
    }

    fn from_shared(shared: Arc<Shared>) -> Self {
        Server {
            owner: Arc::new(Owner(shared)),
        }
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.owner.0
    }

    /// The registered method names.
    pub fn methods(&self) -> impl Iterator<Item = &str> {
        self.shared().handlers.keys().map(AsRef::as_ref)
    }

    /// Serves every connection `listener` accepts, in the background, until
    /// [`shutdown`](Self::shutdown) (or until the listener fails). Must be
    /// called inside a tokio runtime.
    ///
    /// Serving keeps the server alive: `Server::builder().build()?.serve(l)`
    /// on a temporary serves, although no handle is kept. Stop it with
    /// [`shutdown`](Self::shutdown) on any clone.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (as `tokio::spawn` does).
    pub fn serve(&self, mut listener: Listener) {
        // A peer the listener's policy denies reads one frame saying so
        // before the close: its calls fail with `PermissionDenied`.
        listener.set_denial_notice(denied_notice());
        let shared = self.shared().clone();
        // The accept loop owns a handle: dropping every other one must not
        // silently stop a server that was asked to serve.
        let keep_alive = self.clone();
        self.shared().tracker.spawn(async move {
            let _keep_alive = keep_alive;
            loop {
                let conn = tokio::select! {
                    () = shared.stop_accepting.cancelled() => break,
                    c = listener.accept() => c,
                };
                match conn {
                    Ok(conn) => {
                        let s = shared.clone();
                        shared.tracker.spawn(serve::serve_conn(s, conn));
                    }
                    Err(err) => {
                        tracing::error!(%err, "listener failed; no longer accepting");
                        break;
                    }
                }
            }
            // Dropping the listener closes it and removes its socket file, so
            // that no new client connects to a server that will not answer.
            drop(listener);
        });
    }

    /// Serves one connection (for example an end of [`net::pair`](crate::net::pair))
    /// in the background. The returned handle tells when the connection has
    /// ended; dropping it changes nothing.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (as `tokio::spawn` does).
    pub fn serve_connection(&self, conn: Conn) -> ServedConnection {
        let shared = self.shared().clone();
        ServedConnection {
            task: self.shared().tracker.spawn(serve::serve_conn(shared, conn)),
            joined: false,
        }
    }

    /// Stops gracefully: stops accepting connections (removing the socket
    /// file) and reading new requests, lets calls in flight finish and writes
    /// their replies for up to `grace`, then cancels what is left and closes
    /// every connection.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future leaves the server stopping: no new connection
    /// or request is taken, and calls go on until they finish or the last
    /// server handle is dropped. Call `shutdown` again to wait.
    pub async fn shutdown(&self, grace: Duration) -> ShutdownReport {
        let shared = self.shared();
        shared.stop_accepting.cancel();
        shared.tracker.close();
        let graceful = tokio::time::timeout(grace, shared.tracker.wait())
            .await
            .is_ok();
        if !graceful {
            shared.hard_stop.cancel();
            shared.tracker.wait().await;
        }
        ShutdownReport {
            graceful,
            aborted_calls: shared.aborted.load(Ordering::Relaxed),
        }
    }
}

/// The frame a denied peer reads before the server closes it: id 0,
/// `err_type` 4, `reason` 1, the stable text. Constant: it tells the peer
/// nothing but that it was denied.
fn denied_notice() -> &'static [u8] {
    static NOTICE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    NOTICE.get_or_init(|| {
        let e = crate::rpc::HandlerError::permission_denied();
        let env = crate::rpc::envelope::EnvelopeRef {
            err_type: e.code.as_u32(),
            err: e.message.as_bytes(),
            reason: e.reason,
            ..Default::default()
        };
        let mut body = Vec::with_capacity(env.encoded_len());
        env.encode(&mut body);
        let mut hdr = [0u8; crate::frame::MAX_HEADER_LEN];
        let n = crate::frame::encode_header(body.len(), &mut hdr);
        let mut frame = hdr[..n].to_vec();
        frame.extend_from_slice(&body);
        frame
    })
}

#[cfg(test)]
mod notice_tests {
    #[test]
    fn the_denied_notice_is_one_go_compatible_error_frame() {
        let mut want = vec![0x3a, 0x28, 0x04, 0x32, 0x16];
        want.extend_from_slice(b"uds: permission denied");
        want.extend_from_slice(&[0xa8, 0x01, 0x01]);
        assert_eq!(super::denied_notice(), &want[..]);
    }
}
