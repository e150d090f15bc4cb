//! What a handler knows about its call.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::in_flight::CallHandle;
use crate::cred::Cred;
use crate::rpc::cancel::Cancellation;

/// The context of one call: who is calling, until when, and whether the call
/// was cancelled.
///
/// Cancellation (the client dropped the call, its deadline passed, or the
/// server is shutting down past its grace period) drops the handler's future
/// at its next `.await`, like any Rust future cancellation. Work that runs
/// outside the future — a thread, a `spawn_blocking` closure — can watch
/// [`Context::cancellation`].
#[derive(Debug, Clone)]
pub struct Context {
    pub(super) peer: Arc<Cred>,
    pub(super) deadline: Option<Instant>,
    /// The call's entry in its connection's table: its id and cancellation.
    pub(super) call: CallHandle,
}

impl Context {
    /// The caller's kernel credentials.
    pub fn peer(&self) -> &Cred {
        &self.peer
    }

    /// The call id the client chose.
    pub fn call_id(&self) -> u32 {
        self.call.id()
    }

    /// When the call's deadline passes, if it has one: the client's, or the
    /// server's cap (`max_timeout`, or `max_stream_duration` for a stream)
    /// if that comes sooner.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Time left until the deadline (`None`: no deadline).
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// A signal fired when this call is cancelled (or ends), for work
    /// outside the handler's future. Created on first use; cheap to clone.
    pub fn cancellation(&self) -> Cancellation {
        self.call.cancellation()
    }
}

/// The type of a `#[uds::service]` method's context argument:
/// implemented only for `&Context`, so that a context argument of another
/// type is reported on that type. Generated code uses it; there is no need
/// to name it.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not the call context: the context argument is `&uds::Context`",
    label = "expected `&uds::Context`",
    note = "write `ctx: &uds::Context` right after `&self`; data arguments are taken by value"
)]
pub trait FromContext<'a> {
    /// The context, as the handler takes it.
    fn from_context(ctx: &'a Context) -> Self;
}

impl<'a> FromContext<'a> for &'a Context {
    fn from_context(ctx: &'a Context) -> Self {
        ctx
    }
}
