//! Errors of the plugin layer.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use crate::net::NetError;
use crate::rpc::{BuildError, RpcError};

/// A plugin process that has exited, and how: what
/// [`Plugin::exited`](super::Plugin::exited) reports. (Calls in flight on it
/// fail with [`RpcError::PeerExited`], which carries the same pid and
/// status.)
#[derive(Debug, Clone, thiserror::Error)]
#[error("plugin {name:?} (pid {pid}) exited: {status}")]
#[non_exhaustive]
pub struct Exited {
    /// The plugin's name (see [`Command::name`](super::Command::name)).
    pub name: String,
    /// Its process id.
    pub pid: u32,
    /// Its exit status: a code, or the signal that killed it.
    pub status: ExitStatus,
}

/// Errors of starting, checking, serving and stopping plugins.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PluginError {
    /// The plugin side was started by hand, not by a host: there is no
    /// inherited socket to serve.
    #[error(
        "this program is a uds plugin: it is started by its host program, which passes it a \
         socket in the {env} environment variable; run the host instead"
    )]
    NotLaunchedByHost {
        /// The environment variable that was not set.
        env: &'static str,
    },
    /// The inherited socket named by the environment is not usable.
    #[error("the plugin socket named by {env}={value:?} is not usable: {source}")]
    BadInheritedSocket {
        /// The environment variable.
        env: &'static str,
        /// Its value.
        value: String,
        /// Why it cannot be used.
        #[source]
        source: std::io::Error,
    },
    /// The plugin side's inherited socket was already taken in this process
    /// (`serve` was called twice).
    #[error("the plugin socket was already taken: call uds::plugin::serve once per process")]
    AlreadyServing,
    /// The plugin program could not be started.
    #[error("could not start plugin program {program:?}: {source}")]
    Spawn {
        /// The program.
        program: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The plugin exited before it completed the handshake.
    #[error(
        "plugin {name:?} (pid {pid}) exited before the handshake: {status}; is it a uds plugin \
         (does its main call uds::plugin::serve)? Its stderr is logged under the `uds::plugin` target"
    )]
    ExitedBeforeHandshake {
        /// The plugin's name.
        name: String,
        /// Its process id.
        pid: u32,
        /// How it exited.
        status: ExitStatus,
    },
    /// The plugin did not complete the handshake in time; it was killed.
    #[error(
        "plugin {name:?} (pid {pid}) did not complete the handshake within {after:?} and was \
         killed; does its main call uds::plugin::serve? (raise Command::handshake_timeout if it \
         is just slow to start)"
    )]
    HandshakeTimeout {
        /// The plugin's name.
        name: String,
        /// Its process id.
        pid: u32,
        /// The timeout.
        after: Duration,
    },
    /// The process that answered the handshake is not the child the host
    /// spawned (the kernel's credentials of its socket name another pid).
    #[error(
        "plugin {name:?}: the handshake came from pid {found}, not from the child we spawned \
         (pid {expected}); a wrapper that forks instead of exec'ing the plugin does this"
    )]
    NotOurChild {
        /// The plugin's name.
        name: String,
        /// The child's pid.
        expected: u32,
        /// The pid the kernel reports for the socket's creator.
        found: i32,
    },
    /// The plugin speaks another version of the plugin protocol.
    #[error(
        "plugin {name:?} speaks plugin protocol {found:?}; this host speaks {expected}: rebuild one of them against the same uds version"
    )]
    VersionMismatch {
        /// The plugin's name.
        name: String,
        /// The host's version.
        expected: u32,
        /// What the plugin said.
        found: String,
    },
    /// The plugin does not serve a service the host asked for.
    #[error("plugin {name:?} does not serve {service:?}; it serves {offered:?}")]
    MissingService {
        /// The plugin's name.
        name: String,
        /// The service asked for.
        service: &'static str,
        /// The services it serves.
        offered: Vec<String>,
    },
    /// The plugin serves the service but lacks some of its methods (it was
    /// built against an older version of the trait).
    #[error(
        "plugin {name:?} serves {service:?} without the methods {missing:?}: it was built \
         against another version of the trait; rebuild it"
    )]
    MissingMethods {
        /// The plugin's name.
        name: String,
        /// The service.
        service: &'static str,
        /// The methods the host expects and the plugin lacks.
        missing: Vec<String>,
    },
    /// The plugin's handshake was not understood.
    #[error("plugin {name:?} sent a malformed handshake: {what}")]
    BadHandshake {
        /// The plugin's name.
        name: String,
        /// What was wrong.
        what: String,
    },
    /// The plugin has exited.
    #[error(transparent)]
    Exited(#[from] Exited),
    /// An RPC to or from the plugin failed.
    #[error("plugin RPC failed: {0}")]
    Rpc(#[from] RpcError),
    /// The plugin side's RPC server could not be built (a method
    /// registered twice, a limit out of range).
    #[error("plugin server: {0}")]
    Build(#[from] BuildError),
    /// The plugin's socket could not be set up.
    #[error("plugin socket: {0}")]
    Net(#[from] NetError),
    /// An OS call failed.
    #[error("{op} failed: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl PluginError {
    pub(crate) fn io(op: &'static str, source: std::io::Error) -> Self {
        PluginError::Io { op, source }
    }
}
