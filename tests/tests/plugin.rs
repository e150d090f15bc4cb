//! Plugins as real child processes: `uds::plugin::Command` on the host side,
//! `uds::plugin::serve` in `uds-test-plugin`.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use uds::plugin::{Command, PluginError, Restart};
use uds::rpc::RpcError;
use uds_tests::log_capture::LogCapture;
use uds_tests::plugin_api::{AdminClient, TestPluginClient};

const PLUGIN: &str = env!("CARGO_BIN_EXE_uds-test-plugin");
const HOST: &str = env!("CARGO_BIN_EXE_uds-test-host");

/// Tests here count this process's children: they run one at a time, so
/// that one test's plugins are not counted as another's leftovers.
static ALONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn plugin(mode: &str) -> Command {
    Command::new(PLUGIN).arg(mode).name(format!("test-{mode}"))
}

fn alive(pid: u32) -> bool {
    uds_tests::process_alive(pid)
}

/// Waits up to `limit` for `pid` to be gone.
async fn gone_within(pid: u32, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if !alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    !alive(pid)
}

fn live_children() -> usize {
    uds_tests::child_processes(false)
}

#[tokio::test]
async fn a_plugin_serves_its_trait_and_stops_gracefully() {
    let _alone = ALONE.lock().await;
    let plugin = plugin("serve-both")
        .spawn::<TestPluginClient>()
        .await
        .unwrap();
    let client = plugin.client();
    assert_eq!(client.echo("hi".into()).await.unwrap(), "hi");
    assert_eq!(client.pid().await.unwrap(), plugin.pid());
    let items: Vec<u32> = client
        .count(5, 1)
        .await
        .unwrap()
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(items, vec![0, 1, 2, 3, 4]);
    assert_eq!(plugin.services(), vec!["TestPlugin", "Admin"]);
    assert!(plugin.try_status().is_none());
    // A call in flight when the host asks the plugin to stop still finishes.
    let slow = tokio::spawn({
        let client = client.clone();
        async move { client.slow(300).await }
    });
    // The call has reached the plugin (it counts what it serves).
    let admin: AdminClient = plugin.client_for().unwrap();
    let start = Instant::now();
    while admin.served().await.unwrap() < 3 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "slow() never arrived"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let pid = plugin.pid();
    let status = plugin.shutdown(Duration::from_secs(5)).await.unwrap();
    assert!(status.success(), "clean exit: {status}");
    assert_eq!(
        slow.await.unwrap().unwrap(),
        300,
        "the call in flight finished"
    );
    assert!(!alive(pid));
}

#[tokio::test]
async fn one_plugin_serves_several_services_on_one_connection() {
    let _alone = ALONE.lock().await;
    let plugin = plugin("serve-both")
        .spawn::<TestPluginClient>()
        .await
        .unwrap();
    plugin.client().echo("a".into()).await.unwrap();
    let admin: AdminClient = plugin.client_for().unwrap();
    assert_eq!(admin.served().await.unwrap(), 1);
    let only = plugin_spawn_err::<AdminClient>("serve").await;
    assert!(
        matches!(&only, PluginError::MissingService { service: "Admin", offered, .. } if offered == &["TestPlugin"]),
        "{only}"
    );
}

async fn plugin_spawn_err<C: uds::plugin::PluginClient>(mode: &str) -> PluginError {
    let before = live_children();
    let err = plugin(mode).spawn::<C>().await.err().unwrap();
    // Whatever failed, no process is left behind.
    let start = Instant::now();
    while live_children() > before && start.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        live_children() <= before,
        "a child was left behind after: {err}"
    );
    err
}

#[tokio::test]
async fn killing_the_plugin_fails_every_call_in_flight_at_once() {
    let _alone = ALONE.lock().await;
    let plugin = plugin("serve").spawn::<TestPluginClient>().await.unwrap();
    let client = plugin.client().clone();
    let mut calls = Vec::new();
    for _ in 0..8 {
        let client = client.clone();
        calls.push(tokio::spawn(async move {
            let r = client.slow(60_000).await;
            (r, Instant::now())
        }));
    }
    let mut stream = client.count(1_000_000, 10).await.unwrap();
    assert_eq!(stream.next().await.unwrap().unwrap(), 0);
    let streamed = tokio::spawn(async move {
        loop {
            match stream.next().await {
                Some(Ok(_)) => {}
                Some(Err(e)) => return (Some(e), Instant::now()),
                None => return (None, Instant::now()),
            }
        }
    });
    // Every call has reached the plugin.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let killed_at = Instant::now();
    uds_tests::kill9(plugin.pid());
    let mut worst = Duration::ZERO;
    for call in calls {
        let (r, at) = call.await.unwrap();
        // The exit itself, with the signal: not a bare "connection closed".
        match r.unwrap_err() {
            RpcError::PeerExited { pid, status } => {
                assert_eq!(pid, plugin.pid());
                assert_eq!(
                    std::os::unix::process::ExitStatusExt::signal(&status),
                    Some(9)
                );
            }
            other => panic!("{other:?}"),
        }
        worst = worst.max(at - killed_at);
    }
    let (err, at) = streamed.await.unwrap();
    assert!(
        err.is_some(),
        "the stream ended with an error, not a clean end"
    );
    worst = worst.max(at - killed_at);
    let exited = plugin.exited().await;
    eprintln!("8 calls and a stream failed within {worst:?} of kill -9; {exited}");
    assert!(worst < Duration::from_millis(100), "took {worst:?}");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&exited.status),
        Some(9)
    );
    assert_eq!(plugin.try_status(), Some(exited.status));
}

#[tokio::test]
async fn dropping_the_plugin_kills_it() {
    let _alone = ALONE.lock().await;
    let plugin = plugin("serve").spawn::<TestPluginClient>().await.unwrap();
    let pid = plugin.pid();
    assert!(alive(pid));
    drop(plugin);
    assert!(
        gone_within(pid, Duration::from_secs(2)).await,
        "pid {pid} still running"
    );
}

/// Runs the test host, which starts a plugin, and kills the host with
/// SIGKILL: the plugin must not outlive it.
/// Runs the test host, which starts a plugin in `mode`, kills the host with
/// SIGKILL, and returns the plugin's pid and whether it was gone within
/// `wait`.
async fn host_killed(mode: &str, pdeathsig: bool, wait: Duration) -> (u32, bool) {
    let mut args = vec![PLUGIN, mode];
    if pdeathsig {
        args.push("pdeathsig");
    }
    let mut host = tokio::process::Command::new(HOST)
        .args(&args)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = tokio::io::BufReader::new(host.stdout.take().unwrap());
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(20),
        tokio::io::AsyncBufReadExt::read_line(&mut out, &mut line),
    )
    .await
    .unwrap()
    .unwrap();
    let pid: u32 = line.trim().parse().unwrap();
    assert!(alive(pid));
    host.start_kill().unwrap();
    host.wait().await.unwrap();
    (pid, gone_within(pid, wait).await)
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_plugin_dies_with_its_host_by_parent_death_signal() {
    let _alone = ALONE.lock().await;
    // A plugin that ignores its connection closing: only the signal stops
    // it. Without the signal it outlives its host (which shows the test
    // can fail) ...
    let (pid, gone) = host_killed("stubborn", false, Duration::from_secs(1)).await;
    assert!(
        !gone,
        "a stubborn plugin outlives its host without the signal"
    );
    uds_tests::kill9(pid);
    // ... and with it, it does not.
    let (pid, gone) = host_killed("stubborn", true, Duration::from_secs(5)).await;
    assert!(
        gone,
        "plugin {pid} outlived its SIGKILLed host despite PR_SET_PDEATHSIG"
    );
}

#[tokio::test]
async fn a_plugin_exits_when_its_host_is_gone() {
    let _alone = ALONE.lock().await;
    // No parent-death signal: the plugin sees its connection close.
    let (pid, gone) = host_killed("serve", false, Duration::from_secs(5)).await;
    assert!(gone, "plugin {pid} outlived its SIGKILLed host");
}

#[tokio::test]
async fn a_plugin_lacking_methods_is_refused_with_their_names() {
    let _alone = ALONE.lock().await;
    let err = plugin_spawn_err::<TestPluginClient>("old").await;
    match &err {
        PluginError::MissingMethods {
            service, missing, ..
        } => {
            assert_eq!(*service, "TestPlugin");
            assert_eq!(missing, &["/TestPlugin/crash"]);
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("rebuild"), "{err}");
}

#[tokio::test]
async fn a_plugin_that_exits_before_the_handshake_reports_its_status() {
    let _alone = ALONE.lock().await;
    let err = plugin_spawn_err::<TestPluginClient>("exit-early").await;
    match err {
        PluginError::ExitedBeforeHandshake { status, .. } => assert_eq!(status.code(), Some(3)),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_plugin_that_never_handshakes_times_out_and_is_killed() {
    let _alone = ALONE.lock().await;
    let started = Instant::now();
    let err = plugin("never")
        .handshake_timeout(Duration::from_millis(500))
        .spawn::<TestPluginClient>()
        .await
        .err()
        .unwrap();
    let PluginError::HandshakeTimeout { pid, .. } = err else {
        panic!("{err:?}");
    };
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        uds_tests::process_reaped(pid),
        "the child {pid} was killed and reaped"
    );
}

#[tokio::test]
async fn a_wrapper_that_forks_is_not_our_child() {
    let _alone = ALONE.lock().await;
    let err = plugin_spawn_err::<TestPluginClient>("fork").await;
    assert!(matches!(err, PluginError::NotOurChild { .. }), "{err:?}");
}

#[tokio::test]
async fn a_missing_program_is_a_spawn_error() {
    let _alone = ALONE.lock().await;
    let err = Command::new("/nonexistent/plugin")
        .spawn::<TestPluginClient>()
        .await
        .err()
        .unwrap();
    assert!(matches!(err, PluginError::Spawn { .. }), "{err:?}");
}

#[test]
fn a_plugin_run_by_hand_says_it_needs_its_host() {
    let _alone = ALONE.blocking_lock();
    let out = std::process::Command::new(PLUGIN)
        .env_remove(uds::plugin::FD_ENV)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("started by its host"), "{said}");
}

#[tokio::test]
async fn a_call_that_crashes_the_plugin_gets_the_crash() {
    let _alone = ALONE.lock().await;
    let plugin = plugin("serve").spawn::<TestPluginClient>().await.unwrap();
    let err = plugin.client().crash(7).await.unwrap_err();
    assert!(
        matches!(err, RpcError::PeerExited { status, .. } if status.code() == Some(7)),
        "{err:?}"
    );
    assert!(err.to_string().contains("exit status: 7"), "{err}");
    assert_eq!(plugin.exited().await.status.code(), Some(7));
    // Later calls fail at once, with the same exit.
    let err = plugin.client().echo("x".into()).await.unwrap_err();
    assert!(matches!(err, RpcError::PeerExited { .. }), "{err:?}");
}

#[tokio::test]
async fn stderr_lines_reach_tracing_with_the_plugins_fields() {
    let _alone = ALONE.lock().await;
    let capture = LogCapture::global();
    let plugin = plugin("serve").spawn::<TestPluginClient>().await.unwrap();
    plugin.client().say("first line".into()).await.unwrap();
    plugin.client().say("second line".into()).await.unwrap();
    let pid = plugin.pid().to_string();
    let lines = |c: &LogCapture| {
        c.events(|e| {
            e.target == "uds::plugin"
                && e.fields.get("pid") == Some(&pid)
                && e.fields.get("stream").map(String::as_str) == Some("stderr")
        })
    };
    let start = Instant::now();
    while lines(&capture).len() < 2 && start.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let got = lines(&capture);
    let messages: Vec<&str> = got.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(messages, vec!["first line", "second line"]);
    assert_eq!(
        got[0].fields.get("plugin").map(String::as_str),
        Some("test-serve")
    );
    plugin.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn a_crashed_plugin_is_restarted_with_backoff_and_later_calls_succeed() {
    let _alone = ALONE.lock().await;
    let plugin = plugin("crash-on-3")
        .restart(Restart::new().backoff(Duration::from_millis(200), Duration::from_secs(1)))
        .spawn::<TestPluginClient>()
        .await
        .unwrap();
    let first_pid = plugin.pid();
    let client = plugin.client();
    assert_eq!(client.echo("1".into()).await.unwrap(), "1");
    assert_eq!(client.echo("2".into()).await.unwrap(), "2");
    // The crashing call gets the crash, not a silent retry.
    let err = client.echo("3".into()).await.unwrap_err();
    let crashed_at = Instant::now();
    assert!(
        matches!(err, RpcError::PeerExited { status, .. } if status.code() == Some(3)),
        "{err:?}"
    );
    let fresh = plugin.running().await.unwrap();
    let waited = crashed_at.elapsed();
    assert!(
        waited >= Duration::from_millis(150),
        "restarted after {waited:?}: backoff"
    );
    assert_eq!(plugin.restarts(), 1);
    assert_eq!(plugin.last_exit().unwrap().status.code(), Some(3));
    assert_eq!(plugin.last_exit().unwrap().pid, first_pid);
    assert_ne!(plugin.pid(), first_pid);
    assert!(plugin.try_status().is_none(), "not down for good");
    // Later calls succeed, on the new process, through either client.
    assert_eq!(fresh.echo("4".into()).await.unwrap(), "4");
    assert_eq!(plugin.client().pid().await.unwrap(), plugin.pid());
    let pid = plugin.pid();
    let status = plugin.shutdown(Duration::from_secs(5)).await.unwrap();
    assert!(status.success(), "a stop is not a crash: {status}");
    assert!(!alive(pid) && !alive(first_pid));
}

#[tokio::test]
async fn restarts_stop_at_the_policys_limit() {
    let _alone = ALONE.lock().await;
    let plugin = plugin("crash-on-1")
        .restart(
            Restart::new()
                .max_restarts(2)
                .backoff(Duration::from_millis(10), Duration::from_millis(20)),
        )
        .spawn::<TestPluginClient>()
        .await
        .unwrap();
    let mut pids = vec![plugin.pid()];
    for round in 0..3 {
        let client = plugin
            .running()
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert!(
            client.echo("x".into()).await.is_err(),
            "round {round} crashes"
        );
        if round < 2 {
            let next = plugin.running().await.unwrap();
            drop(next);
            pids.push(plugin.pid());
        }
    }
    let exited = plugin.running().await.unwrap_err();
    assert_eq!(exited.status.code(), Some(3));
    assert_eq!(plugin.restarts(), 2);
    assert_eq!(plugin.try_status().and_then(|s| s.code()), Some(3));
    pids.dedup();
    assert_eq!(pids.len(), 3, "three processes: {pids:?}");
    for pid in pids {
        assert!(!alive(pid));
    }
}

#[tokio::test]
async fn a_host_attaches_to_a_plugin_serving_a_socket_path() {
    let _alone = ALONE.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plugin.sock");
    let mut child = tokio::process::Command::new(PLUGIN)
        .arg("serve-at")
        .arg(&path)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    uds_tests::eventually(
        "the plugin's socket appears",
        Duration::from_secs(10),
        || path.exists(),
    )
    .await;
    let attached = uds::plugin::attach::<TestPluginClient>(&path)
        .await
        .unwrap();
    assert_eq!(attached.pid(), child.id().unwrap(), "the kernel's pid");
    assert_eq!(attached.client().echo("hi".into()).await.unwrap(), "hi");
    let admin: AdminClient = attached.client_for().unwrap();
    assert_eq!(admin.served().await.unwrap(), 1);
    assert_eq!(attached.services(), ["TestPlugin", "Admin"]);
    attached.shutdown(Duration::from_secs(5)).await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
    assert!(!path.exists(), "the plugin removed its socket");
    let err = uds::plugin::attach::<TestPluginClient>(&path)
        .await
        .unwrap_err();
    assert!(matches!(err, PluginError::Net(_)), "{err:?}");
}
