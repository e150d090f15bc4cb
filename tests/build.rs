//! Marks a build made as root with `cfg(uds_root)`, so that the tests that
//! start processes as another user are `#[ignore]`d (shown as "ignored",
//! not passed) when built and run as an ordinary user. CI runs as root.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(uds_root)");
    println!("cargo::rerun-if-changed=build.rs");
    if effective_uid() == Some(0) {
        println!("cargo::rustc-cfg=uds_root");
    }
}

/// The effective uid from `/proc/self/status` (Linux), else from `id -u`.
fn effective_uid() -> Option<u32> {
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        let uids = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
        return uids.split_whitespace().nth(1)?.parse().ok();
    }
    let out = std::process::Command::new("id").arg("-u").output().ok()?;
    String::from_utf8(out.stdout).ok()?.trim().parse().ok()
}
