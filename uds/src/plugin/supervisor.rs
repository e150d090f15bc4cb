//! A running plugin: its current process and client, the task that watches
//! it (and restarts it, if asked), and how the host stops it.

use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::PluginClient;
use super::error::{Exited, PluginError};
use super::handshake::{SHUTDOWN_METHOD, ServiceInfo};
use super::host::{Command, Started, check_service, killed};
use crate::rpc::{CallOptions, Client};

/// The shortest wait between a crash and a restart.
const MIN_BACKOFF: Duration = Duration::from_millis(10);

/// When and how often to restart a plugin that crashed (exited with a
/// failure or was killed by a signal). A plugin that exits with success, or
/// that the host stops or kills, is not restarted.
///
/// ```
/// use std::time::Duration;
/// let policy = uds::plugin::Restart::new()
///     .max_restarts(5)
///     .backoff(Duration::from_millis(100), Duration::from_secs(10));
/// # let _ = policy;
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct Restart {
    max_restarts: Option<u32>,
    initial_backoff: Duration,
    max_backoff: Duration,
    reset_after: Duration,
}

impl Default for Restart {
    fn default() -> Self {
        Self::new()
    }
}

impl Restart {
    /// Restarts without limit, waiting 100 ms after the first crash and
    /// doubling the wait after each crash up to 30 s; a plugin that ran for
    /// 60 s before crashing starts the backoff over.
    pub fn new() -> Self {
        Restart {
            max_restarts: None,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
            reset_after: Duration::from_secs(60),
        }
    }

    /// At most `n` restarts (failed starts count); then the plugin stays
    /// down and [`Plugin::exited`] reports its last exit.
    pub fn max_restarts(mut self, n: u32) -> Self {
        self.max_restarts = Some(n);
        self
    }

    /// The wait before the first restart (at least 10 ms, so that a plugin
    /// crashing at start cannot make the host fork in a tight loop), and
    /// the most it grows to.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial.max(MIN_BACKOFF);
        self.max_backoff = max.max(self.initial_backoff);
        self
    }

    /// How long a plugin must have run before a crash for the backoff to
    /// start over from its initial wait.
    pub fn reset_after(mut self, healthy: Duration) -> Self {
        self.reset_after = healthy;
        self
    }
}

/// The process currently behind a [`Plugin`].
#[derive(Debug)]
struct Current<C> {
    client: C,
    rpc: Client,
    pid: u32,
    services: Vec<ServiceInfo>,
}

/// What the supervisor tells the handle.
#[derive(Debug, Clone, Default)]
struct State {
    /// The last exit of a plugin process.
    last_exit: Option<Exited>,
    /// Whether the plugin is down for good (no restart will follow).
    stopped: bool,
    /// Processes started after the first.
    restarts: u32,
    /// Bumped when a new process has taken over.
    generation: u64,
    /// The generation whose process exited last.
    exited_generation: Option<u64>,
}

impl State {
    /// Whether the current process is up (has not exited).
    fn up(&self) -> bool {
        !self.stopped && self.exited_generation.is_none_or(|g| g < self.generation)
    }
}

#[derive(Debug)]
struct Shared<C> {
    name: String,
    current: Mutex<Current<C>>,
    /// Set when the host stops or kills the plugin: no restart.
    stopping: AtomicBool,
}

/// A running plugin process and a typed client over its connection.
///
/// Dropping it kills the process (no orphan); [`Plugin::shutdown`] stops it
/// gracefully. With a [`Restart`] policy a crashed plugin is started again
/// and [`Plugin::client`] returns the new process's client.
#[derive(Debug)]
pub struct Plugin<C> {
    shared: Arc<Shared<C>>,
    state: watch::Receiver<State>,
    kill: CancellationToken,
    supervisor: Option<JoinHandle<()>>,
}

impl<C: PluginClient> Plugin<C> {
    pub(super) fn supervise(command: Command, started: Started<C>) -> Self {
        let kill = CancellationToken::new();
        let (tx, state) = watch::channel(State::default());
        let shared = Arc::new(Shared {
            name: started.name.clone(),
            current: Mutex::new(Current {
                client: started.client.clone(),
                rpc: started.rpc.clone(),
                pid: started.pid,
                services: started.services.clone(),
            }),
            stopping: AtomicBool::new(false),
        });
        let supervisor = tokio::spawn(run_supervisor(
            command,
            started,
            shared.clone(),
            kill.clone(),
            tx,
        ));
        Plugin {
            shared,
            state,
            kill,
            supervisor: Some(supervisor),
        }
    }

    fn current<R>(&self, f: impl FnOnce(&Current<C>) -> R) -> R {
        // A poisoned lock only means a panic elsewhere while swapping; the
        // value is still whole.
        let current = self
            .shared
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&current)
    }

    /// The typed client of the current plugin process (a cheap clone: every
    /// clone shares the connection). After a restart it is the new
    /// process's: a client kept from before keeps the dead connection and
    /// fails with [`RpcError::PeerExited`](crate::rpc::RpcError::PeerExited);
    /// call `client()` (or [`Plugin::running`]) again for each piece of work
    /// when a [`Restart`] policy is set.
    pub fn client(&self) -> C {
        self.current(|c| c.client.clone())
    }

    /// A typed client for another service the plugin serves (a plugin may
    /// implement several traits), over the same connection.
    ///
    /// # Errors
    /// [`PluginError::MissingService`] or [`PluginError::MissingMethods`] if
    /// the plugin's handshake did not offer it.
    pub fn client_for<D: PluginClient>(&self) -> Result<D, PluginError> {
        let (rpc, services) = self.current(|c| (c.rpc.clone(), c.services.clone()));
        check_service::<D>(&self.shared.name, &services)?;
        Ok(D::from_rpc(rpc))
    }

    /// The untyped RPC client over the current process's connection.
    pub fn rpc(&self) -> Client {
        self.current(|c| c.rpc.clone())
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The current plugin process's id.
    pub fn pid(&self) -> u32 {
        self.current(|c| c.pid)
    }

    /// The services the plugin said it serves.
    pub fn services(&self) -> Vec<String> {
        self.current(|c| c.services.iter().map(|s| s.name.clone()).collect())
    }

    /// How many times the plugin was started again after a crash.
    pub fn restarts(&self) -> u32 {
        self.state.borrow().restarts
    }

    /// The last exit of a plugin process (a crash that was restarted, or the
    /// final one), if any.
    pub fn last_exit(&self) -> Option<Exited> {
        self.state.borrow().last_exit.clone()
    }

    /// The plugin's exit status once it is down for good (exited with no
    /// restart to follow).
    pub fn try_status(&self) -> Option<ExitStatus> {
        let state = self.state.borrow();
        if state.stopped {
            state.last_exit.as_ref().map(|e| e.status)
        } else {
            None
        }
    }

    /// Waits until the plugin is down for good and tells how it last exited.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn exited(&self) -> Exited {
        let mut rx = self.state.clone();
        let last = match rx.wait_for(|s| s.stopped).await {
            Ok(state) => state.last_exit.clone(),
            Err(_) => None,
        };
        // No recorded exit: the supervisor went with its runtime, whose
        // kill-on-drop kills the child.
        last.unwrap_or_else(|| Exited {
            name: self.shared.name.clone(),
            pid: self.pid(),
            status: killed(),
        })
    }

    /// Waits until a plugin process is up after the last crash (at once if
    /// it is up) and returns its client.
    ///
    /// # Errors
    /// The plugin's last [`Exited`] if it is down for good.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn running(&self) -> Result<C, Exited> {
        let mut rx = self.state.clone();
        loop {
            let (up, stopped) = {
                let s = rx.borrow_and_update();
                (s.up(), s.stopped)
            };
            // A process that just died has closed its connection before its
            // exit status is read: a closed connection is not up either.
            let up = up && !self.rpc().is_closed();
            if stopped {
                return Err(self.exited().await);
            }
            if up {
                return Ok(self.client());
            }
            if rx.changed().await.is_err() {
                return Err(self.exited().await);
            }
        }
    }

    /// Kills the plugin (`SIGKILL`) without waiting and without restarting
    /// it; see [`Plugin::exited`].
    pub fn kill(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.kill.cancel();
    }

    /// Stops the plugin gracefully: asks it to stop (a built-in control
    /// method, not one of yours), lets its calls in flight finish, and waits
    /// for it to exit; kills it if it has not exited after `grace`. Never
    /// restarts it. Returns its exit status.
    ///
    /// The plugin gives its calls in flight its own grace period
    /// ([`Serve::shutdown_grace`](super::Serve::shutdown_grace), 5 s by
    /// default) and cancels what is left then; `grace` here bounds how long
    /// the host waits for all of it.
    ///
    /// # Errors
    /// None today (an unreachable plugin is killed); the `Result` leaves room
    /// for reporting a failed stop.
    pub async fn shutdown(self, grace: Duration) -> Result<ExitStatus, PluginError> {
        self.shared.stopping.store(true, Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + grace;
        if !self.state.borrow().up() {
            // Crashed and waiting to restart: there is nothing to ask, and no
            // new process must be started.
            self.kill.cancel();
        } else if self.try_status().is_none() {
            let rpc = self.rpc();
            let ask = rpc.call_with(SHUTDOWN_METHOD, Bytes::new(), CallOptions::timeout(grace));
            // A plugin already gone or wedged is killed below.
            let _ = tokio::time::timeout_at(deadline, ask).await;
        }
        let exited = if let Ok(exited) = tokio::time::timeout_at(deadline, self.exited()).await {
            exited
        } else {
            tracing::warn!(target: "uds::plugin", plugin = %self.shared.name, pid = self.pid(), ?grace, "plugin did not exit within its grace period; killing it");
            self.kill.cancel();
            self.exited().await
        };
        Ok(exited.status)
    }
}

impl<C> Drop for Plugin<C> {
    fn drop(&mut self) {
        // The supervisor kills and reaps the child; if the runtime is gone,
        // tokio's kill-on-drop of the child does.
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.kill.cancel();
        drop(self.supervisor.take());
    }
}

/// Watches the current child; publishes each exit; restarts after a crash
/// if the policy says so.
async fn run_supervisor<C: PluginClient>(
    command: Command,
    mut started: Started<C>,
    shared: Arc<Shared<C>>,
    kill: CancellationToken,
    tx: watch::Sender<State>,
) {
    let policy = command.restart_policy().cloned();
    let mut backoff = policy
        .as_ref()
        .map_or(Duration::ZERO, |p| p.initial_backoff);
    loop {
        let began = tokio::time::Instant::now();
        let pid = started.pid;
        let status = tokio::select! {
            s = started.child.wait() => s,
            () = kill.cancelled() => {
                let _ = started.child.start_kill();
                started.child.wait().await
            }
        };
        let status = status.unwrap_or_else(|err| {
            tracing::warn!(target: "uds::plugin", plugin = %shared.name, pid, %err, "could not read the plugin's exit status");
            killed()
        });
        started.exit.send_replace(Some(status));
        // Calls fail now even if a descendant keeps the socket open.
        started
            .rpc
            .fail_with(&crate::rpc::RpcError::PeerExited { pid, status });
        let exited = Exited {
            name: shared.name.clone(),
            pid,
            status,
        };
        if status.success() {
            tracing::debug!(target: "uds::plugin", plugin = %shared.name, pid, %status, "plugin exited");
        } else {
            tracing::warn!(target: "uds::plugin", plugin = %shared.name, pid, %status, "plugin exited");
        }
        // The old process's output tasks end at its pipes' end; a grandchild
        // holding them must not keep them alive.
        for f in started.forwarders.drain(..) {
            f.abort();
        }
        let Some(policy) = policy.as_ref().filter(|_| {
            !status.success() && !shared.stopping.load(Ordering::SeqCst) && !kill.is_cancelled()
        }) else {
            tx.send_modify(|s| {
                s.last_exit = Some(exited);
                s.exited_generation = Some(s.generation);
                s.stopped = true;
            });
            return;
        };
        tx.send_modify(|s| {
            s.last_exit = Some(exited.clone());
            s.exited_generation = Some(s.generation);
        });
        if began.elapsed() >= policy.reset_after {
            backoff = policy.initial_backoff;
        }
        // Start a new process, with backoff, until one passes its checks or
        // the policy's limit is reached.
        let Some(next) = restart(&command, policy, &mut backoff, &shared, &kill, &tx).await else {
            tx.send_modify(|s| s.stopped = true);
            return;
        };
        tracing::info!(target: "uds::plugin", plugin = %shared.name, old_pid = pid, pid = next.pid, "plugin restarted after a crash");
        {
            let mut current = shared
                .current
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            *current = Current {
                client: next.client.clone(),
                rpc: next.rpc.clone(),
                pid: next.pid,
                services: next.services.clone(),
            };
        }
        started = next;
        tx.send_modify(|s| s.generation += 1);
    }
}

/// Starts a new process after a crash: waits out the backoff, starts and
/// checks, and tries again (with a longer wait) until one passes, the
/// policy's limit is reached, or the plugin is being stopped (`None`).
async fn restart<C: PluginClient>(
    command: &Command,
    policy: &Restart,
    backoff: &mut Duration,
    shared: &Shared<C>,
    kill: &CancellationToken,
    tx: &watch::Sender<State>,
) -> Option<Started<C>> {
    loop {
        let used = tx.borrow().restarts;
        if policy.max_restarts.is_some_and(|max| used >= max) {
            tracing::warn!(target: "uds::plugin", plugin = %shared.name, restarts = used, "plugin crashed and its restart limit is reached; it stays down");
            return None;
        }
        tokio::select! {
            () = tokio::time::sleep(*backoff) => {}
            () = kill.cancelled() => return None,
        }
        // Stopped while waiting (shutdown, kill or drop): no new process.
        if shared.stopping.load(Ordering::SeqCst) {
            return None;
        }
        *backoff = (*backoff * 2).min(policy.max_backoff);
        tx.send_modify(|s| s.restarts += 1);
        let attempt = tokio::select! {
            r = command.start::<C>() => r,
            () = kill.cancelled() => return None,
        };
        match attempt {
            Ok(next) => return Some(next),
            Err(err) => {
                tracing::warn!(target: "uds::plugin", plugin = %shared.name, %err, retry_in = ?*backoff, "restarting the plugin failed");
            }
        }
    }
}
