//! Runs every example and checks what it prints.

use std::path::PathBuf;
use std::process::Command;

/// The built example binary (cargo test builds examples before running
/// tests; build it if it is missing).
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir")
        .join("examples");
    let path = dir.join(name);
    if !path.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "uds-examples", "--example", name])
            .status()
            .expect("run cargo");
        assert!(status.success(), "building example {name}");
    }
    path
}

fn run(name: &str) -> String {
    let out = Command::new(example(name)).output().expect("run example");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "example {name} failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn hello_greets_by_uid() {
    let out = run("hello");
    assert!(out.contains("client: hello plugin, you are uid"), "{out}");
    assert!(out.contains("accepted: 1, denied: 0"), "{out}");
}

#[test]
fn plugin_host_runs_a_separate_plugin_binary() {
    let plugin = example("greeter_plugin");
    // Run by hand, the plugin says it needs its host.
    let by_hand = Command::new(&plugin).output().expect("run plugin");
    assert_eq!(by_hand.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&by_hand.stderr).contains("started by its host"));
    let out = run("plugin_host");
    for want in [
        "host: started plugin greeter (pid ",
        "host: hello world, from plugin pid ",
        "host: counted [1, 2, 3]",
        "host: call during the crash failed: ",
        "exited: exit status: 3",
        "host: restarted as pid ",
        "host: hello again, from plugin pid ",
        "host: plugin stopped with exit status: 0",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
}

#[test]
fn plugin_host_talks_to_its_child_and_shuts_it_down() {
    let out = run("plugin");
    for want in [
        "host: connected to plugin process",
        "host: plugin upper 1.0",
        "host: transform -> HELLO PLUGIN",
        "host: transform of nothing -> application error: nothing to transform",
        "host: progress 5/5",
        "host: plugin exited with exit status: 0",
        "host: done",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
}

#[test]
fn calculator_json_runs() {
    let out = run("calculator_json");
    for want in [
        "2 + 3 = 5",
        "7 / 2 = 3",
        "1 / 0 -> division by zero",
        "sum = 10",
        "ticks [0, 1, 2]",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
}

#[test]
fn calculator_proto_runs() {
    let out = run("calculator_proto");
    assert!(out.contains("40 + 2 = 42"), "{out}");
    assert!(out.contains("1 / 0 -> division by zero"), "{out}");
}

#[test]
fn echo_echoes_every_concurrent_call() {
    let out = run("echo");
    assert!(out.contains("100 of 100 concurrent calls echoed"), "{out}");
    assert!(out.contains("graceful = true"), "{out}");
}
