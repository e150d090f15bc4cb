//! Plugin tests that measure the whole process (descriptors, children,
//! memory): in their own test binary, one at a time, so that no other
//! test's descriptors, children or allocations disturb the counts.

use std::time::{Duration, Instant};

use uds::plugin::Command;
use uds_tests::log_capture::LogCapture;
use uds_tests::one_at_a_time;
use uds_tests::plugin_api::TestPluginClient;

const PLUGIN: &str = env!("CARGO_BIN_EXE_uds-test-plugin");

fn plugin() -> Command {
    Command::new(PLUGIN).arg("serve")
}

fn live_children() -> usize {
    uds_tests::child_processes(false)
}

/// Children not reaped count too: every child must be waited for.
fn children_incl_zombies() -> usize {
    uds_tests::child_processes(true)
}

#[test]
fn a_hundred_plugins_started_and_stopped_leave_nothing_behind() {
    one_at_a_time(async {
        // Warm up (first spawn sets up the runtime's child reaping).
        plugin()
            .spawn::<TestPluginClient>()
            .await
            .unwrap()
            .shutdown(Duration::from_secs(5))
            .await
            .unwrap();
        let fds = uds_tests::open_fds();
        let children = live_children();
        for i in 0..100 {
            let p = plugin().spawn::<TestPluginClient>().await.unwrap();
            assert_eq!(
                p.client().echo(format!("{i}")).await.unwrap(),
                format!("{i}")
            );
            if i % 2 == 0 {
                p.shutdown(Duration::from_secs(5)).await.unwrap();
            } else {
                let pid = p.pid();
                drop(p);
                let start = Instant::now();
                while std::path::Path::new(&format!("/proc/{pid}")).exists()
                    && start.elapsed() < Duration::from_secs(2)
                {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
        let start = Instant::now();
        while (uds_tests::open_fds() > fds || children_incl_zombies() > children)
            && start.elapsed() < Duration::from_secs(5)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let now = uds_tests::open_fds();
        assert!(now <= fds, "descriptors back to baseline: {fds} -> {now}");
        assert_eq!(live_children(), children, "processes back to baseline");
        assert_eq!(children_incl_zombies(), children, "every child was reaped");
    });
}

#[test]
fn a_plugin_flooding_stderr_leaves_host_memory_bounded() {
    one_at_a_time(async {
        // A subscriber, so that every piece is formatted as an event (and
        // counted, not kept: what is measured is the host's memory).
        let capture = LogCapture::global();
        let plugin = plugin().spawn::<TestPluginClient>().await.unwrap();
        capture.keep(false);
        let seen = capture.seen();
        uds_tests::trim_heap();
        let before = uds_tests::rss_kib();
        // The peak, not only what is left after: a forwarder that buffered
        // the whole line and freed it would pass an after-the-fact check.
        let peak_known = uds_tests::reset_peak_rss();
        // 100 MiB in one line: forwarded in pieces of MAX_LINE.
        let wrote = plugin
            .client()
            .clone()
            .with_options(uds::rpc::CallOptions::timeout(Duration::from_secs(120)))
            .spew(100)
            .await
            .unwrap();
        assert_eq!(wrote, 100);
        plugin.shutdown(Duration::from_secs(5)).await.unwrap();
        let pieces = capture.seen() - seen;
        capture.keep(true);
        uds_tests::trim_heap();
        let after = uds_tests::rss_kib();
        assert!(
            pieces >= 12_800,
            "the line was forwarded in {pieces} pieces"
        );
        let grew = after.saturating_sub(before);
        if peak_known {
            let peak = uds_tests::peak_rss_kib();
            eprintln!("host peak RSS during the 100 MiB: {peak} KiB (from {before} KiB)");
            assert!(
                peak.saturating_sub(before) < 16 * 1024,
                "host RSS peaked {} KiB above its start",
                peak.saturating_sub(before)
            );
        }
        eprintln!("host RSS {before} KiB -> {after} KiB after the plugin wrote 100 MiB to stderr");
        // The forwarder holds one 8 KiB buffer whatever the plugin writes.
        assert!(grew < 8 * 1024, "host RSS grew by {grew} KiB");
    });
}
