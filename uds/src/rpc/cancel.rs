//! [`Cancellation`]: a call's cancellation signal, for work outside the
//! handler's future.

use tokio_util::sync::CancellationToken;

/// Fires when a call is cancelled: the client dropped it, its deadline
/// passed, the server stopped it at shutdown, or it finished. Returned by
/// [`Context::cancellation`](super::Context::cancellation) for work that
/// runs outside the handler's future (a thread, a `spawn_blocking`
/// closure), which cancellation of the future itself cannot reach.
///
/// Cheap to clone; every clone sees the same signal. Once fired it stays
/// fired.
#[derive(Debug, Clone, Default)]
pub struct Cancellation {
    // A private tokio-util token: its type is not part of this API.
    token: CancellationToken,
}

impl Cancellation {
    /// A signal not yet fired.
    pub(crate) fn new() -> Self {
        Cancellation::default()
    }

    /// A signal already fired (the call is over).
    pub(crate) fn fired() -> Self {
        let c = Cancellation::new();
        c.fire();
        c
    }

    /// Fires the signal; idempotent.
    pub(crate) fn fire(&self) {
        self.token.cancel();
    }

    /// Whether the call has been cancelled (or has ended).
    #[must_use]
    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Completes once the call is cancelled (at once if it already is).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future loses nothing, and a new call to
    /// `cancelled` completes as this one would have.
    pub async fn cancelled(&self) {
        self.token.cancelled().await;
    }
}

#[cfg(test)]
mod tests {
    use super::Cancellation;

    #[tokio::test]
    async fn every_clone_sees_the_signal_and_it_stays_fired() {
        let c = Cancellation::new();
        let other = c.clone();
        assert!(!other.is_cancelled());
        c.fire();
        assert!(other.is_cancelled());
        other.cancelled().await;
        c.fire();
        assert!(c.is_cancelled());
        assert!(Cancellation::fired().is_cancelled());
    }
}
