//! The host side: spawn a plugin on an inherited socket, check it, supervise
//! it, stop it.

use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::error::PluginError;
use super::handshake::{HANDSHAKE_METHOD, Hello, PROTOCOL_VERSION, ServiceInfo};
use super::output::{self, Which};
use super::supervisor::{Plugin, Restart};
use super::{FD_ENV, HOST_ENV, PluginClient};
use crate::cred::Cred;
use crate::net::Conn;
use crate::rpc::{Client, ClientBuilder, CloseCause, RpcError};
use crate::sys;

/// How long a plugin has, by default, from its start to the end of the
/// handshake.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// After a failed handshake, how long to wait for the child to exit by
/// itself (to report its exit status) before killing it.
const EXIT_REPORT_WAIT: Duration = Duration::from_millis(500);

/// What becomes of a plugin's stdout or stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Output {
    /// Each line becomes a `tracing` event (target `uds::plugin`, level
    /// INFO, with the fields `plugin`, `pid` and `stream`), in bounded
    /// memory (lines over [`MAX_LINE`](super::MAX_LINE) bytes are cut). The default.
    #[default]
    Log,
    /// The plugin writes to the host's own stdout or stderr.
    Inherit,
    /// Discarded.
    Discard,
}

/// Starts plugin processes: a program, its arguments and environment, and how
/// the host checks and supervises it.
///
/// The child gets one end of a socketpair as an inherited descriptor (its
/// number in the `UDS_PLUGIN_FD` environment variable; no filesystem path,
/// so nothing to squat or race), and hands back over it a fresh socket of
/// its own making, whose creator the kernel reports: the host checks that
/// this is the pid it spawned. A handshake then tells the plugin's protocol
/// version, services and methods, checked against the client asked for.
///
#[cfg_attr(feature = "json", doc = "```no_run")]
#[cfg_attr(not(feature = "json"), doc = "```ignore")]
/// # #[uds::service] pub trait Greeter { async fn hello(&self, name: String) -> String; }
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// let plugin = uds::plugin::Command::new("./greeter-plugin")
///     .arg("--verbose")
///     .spawn::<GreeterClient>()
///     .await?;
/// println!("{}", plugin.client().hello("host".into()).await?);
/// let status = plugin.shutdown(std::time::Duration::from_secs(5)).await?;
/// assert!(status.success());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use = "a Command starts nothing until .spawn().await"]
pub struct Command {
    program: PathBuf,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    env_removed: Vec<OsString>,
    env_cleared: bool,
    current_dir: Option<PathBuf>,
    name: Option<String>,
    handshake_timeout: Duration,
    stdout: Output,
    stderr: Output,
    parent_death_kill: bool,
    client: ClientBuilder,
    restart: Option<Restart>,
}

impl Command {
    /// A command that runs `program` (looked up in `PATH` if it has no `/`).
    pub fn new(program: impl AsRef<Path>) -> Self {
        Command {
            program: program.as_ref().to_path_buf(),
            args: Vec::new(),
            envs: Vec::new(),
            env_removed: Vec::new(),
            env_cleared: false,
            current_dir: None,
            name: None,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            stdout: Output::Log,
            stderr: Output::Log,
            parent_death_kill: false,
            client: Client::builder(),
            restart: None,
        }
    }

    /// Adds an argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Adds arguments.
    pub fn args(mut self, args: impl IntoIterator<Item = impl Into<OsString>>) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable for the plugin (on top of the host's).
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// Removes an environment variable the plugin would inherit from the
    /// host.
    pub fn env_remove(mut self, key: impl Into<OsString>) -> Self {
        let key = key.into();
        self.envs.retain(|(k, _)| *k != key);
        self.env_removed.push(key);
        self
    }

    /// Starts the plugin with none of the host's environment (only what
    /// [`Command::env`] sets afterwards, and the plugin's own variables).
    pub fn env_clear(mut self) -> Self {
        self.envs.clear();
        self.env_removed.clear();
        self.env_cleared = true;
        self
    }

    /// The plugin's working directory (default: the host's).
    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.current_dir = Some(dir.as_ref().to_path_buf());
        self
    }

    /// The plugin's name in errors and log events (default: the program's
    /// file name).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// How long the plugin has from its start to the end of the handshake
    /// (default [`DEFAULT_HANDSHAKE_TIMEOUT`]). A plugin that takes longer is
    /// killed and [`PluginError::HandshakeTimeout`] returned.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// What becomes of the plugin's stdout (default [`Output::Log`]).
    pub fn stdout(mut self, output: Output) -> Self {
        self.stdout = output;
        self
    }

    /// What becomes of the plugin's stderr (default [`Output::Log`]).
    pub fn stderr(mut self, output: Output) -> Self {
        self.stderr = output;
        self
    }

    /// Linux only (ignored elsewhere): the kernel kills the plugin with
    /// `SIGKILL` if the host dies, even by `SIGKILL` (`PR_SET_PDEATHSIG`).
    /// Off by default.
    ///
    /// The kernel sends the signal when the *thread* that spawned the plugin
    /// exits, so spawn from a thread that lives as long as the host (a
    /// runtime's worker threads do; `spawn_blocking` threads do not). Without
    /// this, a plugin still notices a dead host: its connection closes, and
    /// [`serve`](super::serve) returns once its calls in flight are done.
    pub fn kill_on_host_death(mut self, yes: bool) -> Self {
        self.parent_death_kill = yes;
        self
    }

    /// The settings of the RPC client over the plugin's connection (default
    /// [`Client::builder`]'s).
    pub fn client(mut self, builder: ClientBuilder) -> Self {
        self.client = builder;
        self
    }

    /// Restarts the plugin after a crash (an exit that is not a success),
    /// with backoff (default: no restart). The new process's client is used
    /// by [`Plugin::client`] from then on; calls in flight during the crash
    /// still fail with it: nothing is retried for you.
    pub fn restart(mut self, policy: Restart) -> Self {
        self.restart = Some(policy);
        self
    }

    pub(super) fn restart_policy(&self) -> Option<&Restart> {
        self.restart.as_ref()
    }

    /// The child's command: the program, its arguments and environment,
    /// the socket `fd` let through `exec`.
    fn std_command(&self, fd: std::os::fd::RawFd) -> std::process::Command {
        let mut cmd = std::process::Command::new(&self.program);
        if self.env_cleared {
            cmd.env_clear();
        }
        for key in &self.env_removed {
            cmd.env_remove(key);
        }
        cmd.args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .env(FD_ENV, fd.to_string())
            .env(HOST_ENV, std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(stdio(self.stdout))
            .stderr(stdio(self.stderr));
        if let Some(dir) = &self.current_dir {
            cmd.current_dir(dir);
        }
        sys::process::inherit_fd_in_child(&mut cmd, fd, self.parent_death_kill);
        cmd
    }

    pub(super) fn display_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            self.program.file_name().map_or_else(
                || self.program.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            )
        })
    }

    /// Starts the plugin, waits for its handshake, checks it serves `C`'s
    /// service with all of `C`'s methods, and returns it with a typed client.
    /// Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// [`PluginError::Spawn`] if the program cannot be started;
    /// [`PluginError::ExitedBeforeHandshake`], [`PluginError::HandshakeTimeout`],
    /// [`PluginError::NotOurChild`], [`PluginError::VersionMismatch`],
    /// [`PluginError::MissingService`] or [`PluginError::MissingMethods`] if
    /// the plugin does not check out; the child is then killed and reaped,
    /// never left behind.
    ///
    /// # Cancel safety
    /// Dropping the future kills the child.
    pub async fn spawn<C: PluginClient>(&self) -> Result<Plugin<C>, PluginError> {
        let started = self.start::<C>().await?;
        Ok(Plugin::supervise(self.clone(), started))
    }

    /// Starts the child and checks it; the child is killed and reaped on
    /// every error, and by `kill_on_drop` if the future is dropped.
    pub(super) async fn start<C: PluginClient>(&self) -> Result<Started<C>, PluginError> {
        let name = self.display_name();
        let (host_end, mut child_end) =
            std::os::unix::net::UnixStream::pair().map_err(|e| PluginError::io("socketpair", e))?;
        if child_end.as_raw_fd() < 3 {
            // A host that closed its stdio would hand its socket over as
            // fd 0-2, which the child's stdio then replaces: move it up
            // (std's try_clone duplicates to 3 or above, close-on-exec).
            child_end = child_end
                .try_clone()
                .map_err(|e| PluginError::io("duplicate the plugin's socket", e))?;
        }
        let mut cmd = tokio::process::Command::from(self.std_command(child_end.as_raw_fd()));
        cmd.kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|source| PluginError::Spawn {
            program: self.program.clone(),
            source,
        })?;
        // Only the child holds its end now: its death ends the connection.
        drop(child_end);
        let Some(pid) = child.id() else {
            let status = child.wait().await.unwrap_or_else(|_| killed());
            return Err(PluginError::ExitedBeforeHandshake {
                name,
                pid: 0,
                status,
            });
        };
        let forwarders = forward_output(&mut child, &name, pid);
        // The client's calls fail with the child's exit status, not a bare
        // "connection closed", once the supervisor has read it.
        let (exit_tx, exit_rx) = watch::channel(None::<ExitStatus>);
        let client = self.client.clone().close_cause(CloseCause::new(move || {
            let mut exit = exit_rx.clone();
            async move {
                let status = *exit.wait_for(Option::is_some).await.ok()?;
                status.map(|status| RpcError::PeerExited { pid, status })
            }
        }));
        let greeted = tokio::select! {
            r = tokio::time::timeout(self.handshake_timeout, greet(host_end, pid, &name, client)) => r,
            status = child.wait() => {
                let status = status.unwrap_or_else(|_| killed());
                return Err(PluginError::ExitedBeforeHandshake { name, pid, status });
            }
        };
        let (rpc, hello) = match greeted {
            Ok(Ok(ok)) => ok,
            Ok(Err(err @ PluginError::NotOurChild { .. })) => {
                kill_and_reap(&mut child).await;
                return Err(err);
            }
            Ok(Err(err)) => {
                // If the child is on its way out, its exit status says more.
                let status = tokio::time::timeout(EXIT_REPORT_WAIT, child.wait()).await;
                if let Ok(Ok(status)) = status {
                    return Err(PluginError::ExitedBeforeHandshake { name, pid, status });
                }
                kill_and_reap(&mut child).await;
                return Err(err);
            }
            Err(_elapsed) => {
                kill_and_reap(&mut child).await;
                return Err(PluginError::HandshakeTimeout {
                    name,
                    pid,
                    after: self.handshake_timeout,
                });
            }
        };
        if let Err(err) = check::<C>(&name, &hello) {
            kill_and_reap(&mut child).await;
            return Err(err);
        }
        Ok(Started {
            client: C::from_rpc(rpc.clone()),
            rpc,
            name,
            pid,
            services: hello.services,
            child,
            exit: exit_tx,
            forwarders: forwarders.disarm(),
        })
    }
}

/// Starts forwarding the child's piped stdout and stderr into `tracing`.
fn forward_output(child: &mut tokio::process::Child, name: &str, pid: u32) -> AbortOnDrop {
    let mut tasks = Vec::new();
    if let Some(out) = child.stdout.take() {
        tasks.push(tokio::spawn(output::forward(
            out,
            Which::Stdout,
            name.to_owned(),
            pid,
        )));
    }
    if let Some(err) = child.stderr.take() {
        tasks.push(tokio::spawn(output::forward(
            err,
            Which::Stderr,
            name.to_owned(),
            pid,
        )));
    }
    AbortOnDrop(tasks)
}

/// Output tasks of a child that has not passed its checks yet: stopped if
/// it does not (a grandchild holding the pipes must not keep them alive).
struct AbortOnDrop(Vec<JoinHandle<()>>);

impl AbortOnDrop {
    fn disarm(mut self) -> Vec<JoinHandle<()>> {
        std::mem::take(&mut self.0)
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// A plugin process that passed its checks.
pub(super) struct Started<C> {
    pub(super) client: C,
    pub(super) rpc: Client,
    pub(super) name: String,
    pub(super) pid: u32,
    pub(super) services: Vec<ServiceInfo>,
    pub(super) child: tokio::process::Child,
    /// Where the supervisor publishes the child's exit status (read by the
    /// client's close cause).
    pub(super) exit: watch::Sender<Option<ExitStatus>>,
    pub(super) forwarders: Vec<JoinHandle<()>>,
}

fn stdio(output: Output) -> Stdio {
    match output {
        Output::Log => Stdio::piped(),
        Output::Inherit => Stdio::inherit(),
        Output::Discard => Stdio::null(),
    }
}

/// The status reported for a child whose real status could not be read: it
/// was killed (with the runtime, or by us).
pub(super) fn killed() -> ExitStatus {
    ExitStatus::from_raw(9)
}

async fn kill_and_reap(child: &mut tokio::process::Child) {
    let _ = child.start_kill();
    let _ = child.wait().await;
}

/// Receives the plugin's own socket over the inherited one, checks its
/// creator is our child, and asks for the handshake over it.
async fn greet(
    host_end: std::os::unix::net::UnixStream,
    pid: u32,
    name: &str,
    client: ClientBuilder,
) -> Result<(Client, Hello), PluginError> {
    host_end
        .set_nonblocking(true)
        .map_err(|e| PluginError::io("set_nonblocking", e))?;
    let boot = tokio::net::UnixStream::from_std(host_end)
        .map_err(|e| PluginError::io("register plugin socket", e))?;
    let mut buf = [0u8; 64];
    let (len, fd) = loop {
        boot.readable()
            .await
            .map_err(|e| PluginError::io("wait for the plugin", e))?;
        match boot.try_io(tokio::io::Interest::READABLE, || {
            sys::process::recv_fd(boot.as_fd(), &mut buf)
        }) {
            Ok(got) => break got,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(PluginError::io("receive the plugin's socket", e)),
        }
    };
    let bad = |what: &str| PluginError::BadHandshake {
        name: name.to_owned(),
        what: what.to_owned(),
    };
    let Some(fd) = fd else {
        return Err(bad(if len == 0 {
            "the plugin closed its socket without handing over a connection"
        } else {
            "the plugin's first message carried no socket"
        }));
    };
    if &buf[..len] != super::handshake::BOOTSTRAP {
        return Err(bad(
            "the plugin's first message is not a uds plugin greeting",
        ));
    }
    let stream = std::os::unix::net::UnixStream::from(fd);
    let creator = Cred::of_peer(&stream).map_err(|_| PluginError::BadHandshake {
        name: name.to_owned(),
        what: "the plugin handed over something that is not a connected socket".to_owned(),
    })?;
    if u32::try_from(creator.pid).ok() != Some(pid) {
        return Err(PluginError::NotOurChild {
            name: name.to_owned(),
            expected: pid,
            found: creator.pid,
        });
    }
    let rpc = client.build(Conn::from_std(stream)?);
    let reply = rpc
        .call(
            HANDSHAKE_METHOD,
            Bytes::from(format!("uds-plugin {PROTOCOL_VERSION}\n")),
        )
        .await?;
    let hello = Hello::parse(&reply).map_err(|what| PluginError::BadHandshake {
        name: name.to_owned(),
        what,
    })?;
    Ok((rpc, hello))
}

/// Checks the handshake against what the host expects of `C`.
pub(super) fn check<C: PluginClient>(name: &str, hello: &Hello) -> Result<(), PluginError> {
    if hello.version != PROTOCOL_VERSION.to_string() {
        return Err(PluginError::VersionMismatch {
            name: name.to_owned(),
            expected: PROTOCOL_VERSION,
            found: hello.version.clone(),
        });
    }
    check_service::<C>(name, &hello.services)
}

pub(super) fn check_service<C: PluginClient>(
    name: &str,
    services: &[ServiceInfo],
) -> Result<(), PluginError> {
    let Some(found) = services.iter().find(|s| s.name == C::SERVICE) else {
        return Err(PluginError::MissingService {
            name: name.to_owned(),
            service: C::SERVICE,
            offered: services.iter().map(|s| s.name.clone()).collect(),
        });
    };
    let missing: Vec<String> = C::METHODS
        .iter()
        .filter(|m| !found.methods.iter().any(|f| f == *m))
        .map(|m| (*m).to_owned())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(PluginError::MissingMethods {
            name: name.to_owned(),
            service: C::SERVICE,
            missing,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone)]
    struct Api;

    impl PluginClient for Api {
        const SERVICE: &'static str = "Api";
        const METHODS: &'static [&'static str] = &["/Api/a", "/Api/b"];
        fn from_rpc(_client: Client) -> Self {
            Api
        }
    }

    fn hello(version: &str, methods: &[&str]) -> Hello {
        Hello {
            version: version.to_owned(),
            pid: 1,
            services: vec![ServiceInfo {
                name: "Api".into(),
                methods: methods.iter().map(|m| (*m).to_owned()).collect(),
            }],
        }
    }

    #[test]
    fn another_protocol_version_is_refused_with_both_versions() {
        let err = check::<Api>("p", &hello("2", &["/Api/a", "/Api/b"])).unwrap_err();
        match &err {
            PluginError::VersionMismatch {
                expected, found, ..
            } => {
                assert_eq!((*expected, found.as_str()), (PROTOCOL_VERSION, "2"));
            }
            other => panic!("{other:?}"),
        }
        let text = err.to_string();
        assert!(
            text.contains("\"2\"") && text.contains(&PROTOCOL_VERSION.to_string()),
            "{text}"
        );
    }

    #[test]
    fn the_handshake_must_name_every_method() {
        assert!(check::<Api>("p", &hello("1", &["/Api/a", "/Api/b", "/Api/extra"])).is_ok());
        match check::<Api>("p", &hello("1", &["/Api/a"])).unwrap_err() {
            PluginError::MissingMethods { missing, .. } => assert_eq!(missing, ["/Api/b"]),
            other => panic!("{other:?}"),
        }
    }
}
