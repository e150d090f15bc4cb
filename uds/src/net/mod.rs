//! Authenticated Unix sockets: [`Listener`], [`connect`], [`pair`] and the
//! [`Conn`] they produce.
//!
//! Every connection knows its peer's kernel credentials ([`Conn::peer_cred`]).
//! The listener applies its [`Policy`](crate::auth::Policy) to each peer
//! before reading anything; the client checks the socket file and then the
//! server's credentials on the connected socket. See the crate docs for the
//! security model.

mod conn;
mod connect;
mod error;
mod listener;
mod path;
mod socket_file;

pub use conn::{Conn, PeerGone, ReadHalf, WriteHalf, WriteOnly};
pub use connect::{BUSY_RETRY_FOR, Connector, connect, pair};
pub use error::{FileKind, Mode, NetError};
pub use listener::{DEFAULT_MODE, Listener, ListenerBuilder, ListenerStats};
pub use path::{max_abstract_name_len, max_path_len};

/// Every fallible call of this module that needs tokio's reactor says so
/// with [`NetError::NoRuntime`] outside a runtime, rather than panicking.
fn require_runtime() -> Result<(), NetError> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(NetError::NoRuntime);
    }
    Ok(())
}
