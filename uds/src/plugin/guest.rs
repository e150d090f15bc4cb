//! The plugin side: take the socket the host passed, answer the handshake,
//! serve, and return when the host goes away or asks the plugin to stop.

use std::os::fd::AsFd;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;

use super::error::PluginError;
use super::handshake::{BOOTSTRAP, HANDSHAKE_METHOD, Hello, SHUTDOWN_METHOD, ServiceInfo};
use super::{FD_ENV, HOST_ENV, PluginService};
use crate::cred::Cred;
use crate::net::Conn;
use crate::rpc::{Server, ServerBuilder};
use crate::sys;

/// How long in-flight calls may take to finish once the host asks the
/// plugin to stop, by default.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The inherited socket is taken once per process.
static TAKEN: AtomicBool = AtomicBool::new(false);

/// Serves `service` as a plugin of the host that started this process, and
/// returns once the host has closed the connection or asked the plugin to
/// stop, after the calls in flight have finished. See [`Serve`] for more
/// services or settings, and [`run`] for a `main` that needs no error
/// handling.
///
/// # Errors
/// [`PluginError::NotLaunchedByHost`] when the program was started by hand;
/// other variants when the inherited socket is unusable.
pub async fn serve(service: impl PluginService) -> Result<(), PluginError> {
    Serve::new().service(service).serve().await
}

/// Like [`serve`], for a `main` that returns [`ExitCode`]: prints a failure
/// (for example "started by hand, not by a host") to stderr and exits 2 for
/// that, 1 for any other failure, 0 after a clean stop.
///
#[cfg_attr(feature = "json", doc = "```no_run")]
#[cfg_attr(not(feature = "json"), doc = "```ignore")]
/// #[uds::service]
/// pub trait Greeter {
///     async fn hello(&self, name: String) -> String;
/// }
/// struct Impl;
/// impl Greeter for Impl {
///     async fn hello(&self, name: String) -> String { format!("hello {name}") }
/// }
///
/// #[tokio::main]
/// async fn main() -> std::process::ExitCode {
///     uds::plugin::run(GreeterServer::new(Impl)).await
/// }
/// ```
pub async fn run(service: impl PluginService) -> ExitCode {
    Serve::new().service(service).run().await
}

/// The plugin side, with several services or other settings.
///
#[cfg_attr(feature = "json", doc = "```no_run")]
#[cfg_attr(not(feature = "json"), doc = "```ignore")]
/// # #[uds::service] pub trait A { async fn a(&self); }
/// # #[uds::service] pub trait B { async fn b(&self); }
/// # struct Impl;
/// # impl A for Impl { async fn a(&self) {} }
/// # impl B for Impl { async fn b(&self) {} }
/// # async fn f() -> Result<(), uds::plugin::PluginError> {
/// uds::plugin::Serve::new()
///     .service(AServer::new(Impl))
///     .service(BServer::new(Impl))
///     .configure(|b| b.max_calls_per_connection(64))
///     .shutdown_grace(std::time::Duration::from_secs(2))
///     .serve()
///     .await
/// # }
/// ```
#[must_use = "a plugin serves nothing until .serve().await or .run().await"]
pub struct Serve {
    builder: ServerBuilder,
    services: Vec<ServiceInfo>,
    grace: Duration,
}

impl std::fmt::Debug for Serve {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serve")
            .field("services", &self.services)
            .field("grace", &self.grace)
            .finish_non_exhaustive()
    }
}

impl Default for Serve {
    fn default() -> Self {
        Self::new()
    }
}

impl Serve {
    /// A plugin serving nothing yet.
    pub fn new() -> Self {
        Serve {
            builder: Server::builder(),
            services: Vec::new(),
            grace: DEFAULT_SHUTDOWN_GRACE,
        }
    }

    /// Adds a service (a generated `…Server`).
    // By value, as `.service(GreeterServer::new(imp))` reads best; the
    // handlers keep their own handles to the implementation.
    #[allow(clippy::needless_pass_by_value)]
    pub fn service<S: PluginService>(mut self, service: S) -> Self {
        self.builder = service.register(self.builder);
        self.services.push(ServiceInfo {
            name: S::SERVICE.to_owned(),
            methods: S::METHODS.iter().map(|m| (*m).to_owned()).collect(),
        });
        self
    }

    /// Adjusts the RPC server's settings (limits, timeouts).
    pub fn configure(mut self, f: impl FnOnce(ServerBuilder) -> ServerBuilder) -> Self {
        self.builder = f(self.builder);
        self
    }

    /// How long calls in flight may take to finish when the host asks the
    /// plugin to stop (default [`DEFAULT_SHUTDOWN_GRACE`]).
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Serves until the host closes the connection or asks the plugin to
    /// stop; see [`serve`].
    ///
    /// # Errors
    /// As [`serve`].
    pub async fn serve(self) -> Result<(), PluginError> {
        let conn = take_host_connection()?;
        let stop = Arc::new(tokio::sync::Notify::new());
        let grace = self.grace;
        let server = self.into_server(&stop)?;
        let mut connection = server.serve_connection(conn);
        tokio::select! {
            () = connection.closed() => {
                tracing::debug!(target: "uds::plugin", "host closed the connection; stopping");
            }
            () = stop.notified() => {
                tracing::debug!(target: "uds::plugin", "host asked the plugin to stop");
                let report = server.shutdown(grace).await;
                if !report.graceful {
                    tracing::warn!(target: "uds::plugin", aborted = report.aborted_calls, ?grace, "calls still running at the end of the grace period were cancelled");
                }
            }
        }
        Ok(())
    }

    /// Serves at a socket path instead of the host's inherited socket, for a
    /// plugin started by something other than its host (a debugger, a
    /// service manager): a host [attaches](super::attach) to it there.
    /// The socket has the listener's defaults (mode 0600, same-user
    /// policy). Returns once a host asks the plugin to stop, after the
    /// calls in flight have finished (the socket file is then removed).
    ///
    /// # Errors
    /// [`PluginError::Net`] if the socket cannot be bound.
    pub async fn serve_at(self, path: impl AsRef<std::path::Path>) -> Result<(), PluginError> {
        let listener = crate::net::Listener::bind(path)?;
        let stop = Arc::new(tokio::sync::Notify::new());
        let grace = self.grace;
        let server = self.into_server(&stop)?;
        server.serve(listener);
        stop.notified().await;
        tracing::debug!(target: "uds::plugin", "a host asked the plugin to stop");
        let report = server.shutdown(grace).await;
        if !report.graceful {
            tracing::warn!(target: "uds::plugin", aborted = report.aborted_calls, ?grace, "calls still running at the end of the grace period were cancelled");
        }
        Ok(())
    }

    /// The RPC server: the services plus the built-in handshake and stop
    /// methods, the latter notifying `stop`.
    fn into_server(self, stop: &Arc<tokio::sync::Notify>) -> Result<Server, PluginError> {
        let hello = Bytes::from(Hello::encode(std::process::id(), &self.services));
        let stop = stop.clone();
        Ok(self
            .builder
            .handler(HANDSHAKE_METHOD, move |_ctx, _data| {
                let hello = hello.clone();
                async move { Ok(hello) }
            })
            .handler(SHUTDOWN_METHOD, move |_ctx, _data| {
                stop.notify_one();
                async { Ok(Bytes::new()) }
            })
            .build()?)
    }

    /// Serves like [`Serve::serve`] and turns the outcome into an exit code
    /// (see [`run`]).
    pub async fn run(self) -> ExitCode {
        match self.serve().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e @ PluginError::NotLaunchedByHost { .. }) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
            Err(e) => {
                eprintln!("plugin failed: {e}");
                ExitCode::FAILURE
            }
        }
    }
}

/// Takes the socket the host passed in the environment, checks that its
/// peer is a process this one may trust (same user, or root), and trades it
/// for a fresh connection whose creator, as the kernel reports it, is this
/// process: the host reads the pid from that and checks it is its child.
fn take_host_connection() -> Result<Conn, PluginError> {
    let value =
        std::env::var(FD_ENV).map_err(|_| PluginError::NotLaunchedByHost { env: FD_ENV })?;
    let bad = |source| PluginError::BadInheritedSocket {
        env: FD_ENV,
        value: value.clone(),
        source,
    };
    let invalid = |what: &str| {
        bad(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            what.to_owned(),
        ))
    };
    let n: i32 = value
        .trim()
        .parse()
        .map_err(|_| invalid("not a descriptor number"))?;
    // The host's pid: the descriptor is taken only if its peer (the
    // socketpair's creator) is that process, so that a program this plugin
    // starts, which inherits the environment but not the descriptor, never
    // takes a descriptor of its own for the host's.
    let host_pid: i32 = std::env::var(HOST_ENV)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| invalid("the host's pid (UDS_PLUGIN_HOST) is missing"))?;
    if TAKEN
        .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
        .is_err()
    {
        return Err(PluginError::AlreadyServing);
    }
    let bootstrap = match sys::process::take_inherited_socket(n, host_pid) {
        Ok(fd) => fd,
        Err(e) => {
            // Nothing was taken: a later try may still succeed.
            TAKEN.store(false, Ordering::SeqCst);
            return Err(bad(e));
        }
    };
    let host = Cred::of_peer(&bootstrap).map_err(|e| bad(std::io::Error::other(e)))?;
    let me = sys::effective_uid();
    if host.uid != me && host.uid != 0 {
        return Err(bad(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "the socket's peer runs as uid {}, not as this user ({me}) or root",
                host.uid
            ),
        )));
    }
    let (ours, theirs) =
        std::os::unix::net::UnixStream::pair().map_err(|e| PluginError::io("socketpair", e))?;
    // A blocking send of a few bytes into an empty socket buffer: it
    // completes at once.
    sys::process::send_fd(bootstrap.as_fd(), BOOTSTRAP, theirs.as_fd()).map_err(bad)?;
    drop(theirs);
    drop(bootstrap);
    Ok(Conn::from_std(ours)?)
}
