//! Attaching to a plugin that was started elsewhere and serves a socket
//! path (go-plugin's "reattach"): the same handshake and checks as a
//! spawned plugin, without the process supervision.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;

use super::PluginClient;
use super::error::PluginError;
use super::handshake::{HANDSHAKE_METHOD, Hello, PROTOCOL_VERSION, SHUTDOWN_METHOD, ServiceInfo};
use super::host::{DEFAULT_HANDSHAKE_TIMEOUT, check, check_service};
use crate::net::Connector;
use crate::rpc::{CallOptions, Client};

/// A plugin this host attached to at a socket path (see [`attach`]).
#[derive(Debug)]
pub struct Attached<C> {
    client: C,
    rpc: Client,
    name: String,
    pid: u32,
    services: Vec<ServiceInfo>,
}

/// Attaches to a plugin serving at `path` (started with
/// [`Serve::serve_at`](super::Serve::serve_at)), with the default client
/// checks of [`Connector`] (the socket is this user's, not open to others,
/// and the process listening runs as this user). The handshake is checked
/// as for a spawned plugin, and the pid it names must be the pid the kernel
/// reports for the listening process.
///
/// There is no child to supervise: when the plugin exits, calls fail with
/// the connection's close.
///
/// # Errors
/// [`PluginError::Net`] if the connection or its checks fail;
/// [`PluginError::HandshakeTimeout`] if no handshake comes within
/// [`DEFAULT_HANDSHAKE_TIMEOUT`]; the handshake errors of
/// [`Command::spawn`](super::Command::spawn).
///
/// # Cancel safety
/// Cancel safe.
pub async fn attach<C: PluginClient>(path: impl AsRef<Path>) -> Result<Attached<C>, PluginError> {
    let path = path.as_ref();
    let name = path.display().to_string();
    let conn = Connector::new()
        .timeout(DEFAULT_HANDSHAKE_TIMEOUT)
        .connect(path)
        .await?;
    let pid = u32::try_from(conn.peer_cred().pid).unwrap_or(0);
    let rpc = Client::new(conn);
    let ask = rpc.call_with(
        HANDSHAKE_METHOD,
        Bytes::from(format!("uds-plugin {PROTOCOL_VERSION}\n")),
        CallOptions::timeout(DEFAULT_HANDSHAKE_TIMEOUT),
    );
    let reply = match ask.await {
        Ok(reply) => reply,
        Err(crate::rpc::RpcError::DeadlineExceeded { .. }) => {
            return Err(PluginError::HandshakeTimeout {
                name,
                pid,
                after: DEFAULT_HANDSHAKE_TIMEOUT,
            });
        }
        Err(e) => return Err(e.into()),
    };
    let hello = Hello::parse(&reply).map_err(|what| PluginError::BadHandshake {
        name: name.clone(),
        what,
    })?;
    check::<C>(&name, &hello)?;
    if hello.pid != pid {
        return Err(PluginError::BadHandshake {
            name,
            what: format!(
                "it says it is pid {}, but the process listening is pid {pid}",
                hello.pid
            ),
        });
    }
    Ok(Attached {
        client: C::from_rpc(rpc.clone()),
        rpc,
        name,
        pid,
        services: hello.services,
    })
}

impl<C: PluginClient> Attached<C> {
    /// The typed client (a cheap clone; clones share the connection).
    pub fn client(&self) -> C {
        self.client.clone()
    }

    /// A typed client for another service the plugin serves.
    ///
    /// # Errors
    /// [`PluginError::MissingService`] or [`PluginError::MissingMethods`] if
    /// the plugin's handshake did not offer it.
    pub fn client_for<D: PluginClient>(&self) -> Result<D, PluginError> {
        check_service::<D>(&self.name, &self.services)?;
        Ok(D::from_rpc(self.rpc.clone()))
    }

    /// The plugin's process id, as the kernel reports it.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The services the plugin said it serves.
    pub fn services(&self) -> Vec<String> {
        self.services.iter().map(|s| s.name.clone()).collect()
    }

    /// Asks the plugin to stop (it finishes its calls in flight and its
    /// `serve_at` returns), waiting up to `grace` for it to acknowledge.
    ///
    /// # Errors
    /// [`PluginError::Rpc`] if the plugin did not acknowledge in time.
    pub async fn shutdown(self, grace: Duration) -> Result<(), PluginError> {
        self.rpc
            .call_with(SHUTDOWN_METHOD, Bytes::new(), CallOptions::timeout(grace))
            .await?;
        Ok(())
    }
}
