//! The attacker of the socket-file tests, run as another user: in a tight
//! loop, it renames every `.uds*` staging directory it sees in a directory
//! it can write away and puts a symlink in its place, alternately to a
//! directory of its own (where `s` links to a victim file) and to a victim
//! directory (where `s` is a victim file), so that a listener that
//! re-resolves the staging path would chmod, chown or unlink a victim. It
//! also plants a symlink at the lock file's name now and then, for one pass.
//!
//! `uds-swapper <parent> <decoy-dir> <victim-dir> <lock-name> <stop-file>`:
//! runs until `<stop-file>` exists (or 120 s pass), then prints
//! `swapped N` (N = staging directories swapped).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [parent, decoy, victim_dir, lock_name, stop] = args.as_slice() else {
        eprintln!("usage: uds-swapper <parent> <decoy-dir> <victim-dir> <lock-name> <stop-file>");
        std::process::exit(2);
    };
    let started = Instant::now();
    let mut swapped = 0u64;
    let mut planted: Vec<PathBuf> = Vec::new();
    let mut round = 0u64;
    while !stop.exists() && started.elapsed() < Duration::from_secs(120) {
        round += 1;
        let Ok(entries) = std::fs::read_dir(parent) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(text) = name.to_str() else { continue };
            if !text.starts_with(".uds") {
                continue;
            }
            let here = parent.join(&name);
            let is_dir = std::fs::symlink_metadata(&here).is_ok_and(|m| m.is_dir());
            if !is_dir {
                continue;
            }
            let away = parent.join(format!(".moved{swapped}"));
            if std::fs::rename(&here, &away).is_err() {
                continue;
            }
            let target: &Path = if swapped.is_multiple_of(2) {
                decoy
            } else {
                victim_dir
            };
            if std::os::unix::fs::symlink(target, &here).is_ok() {
                planted.push(here);
            }
            swapped += 1;
        }
        // Now and then the lock file's name is a symlink to the decoy's
        // victim link, for one pass.
        let lock = parent.join(lock_name);
        if round.is_multiple_of(512) {
            let _ = std::os::unix::fs::symlink(decoy.join("s"), &lock);
        } else if round % 512 == 1 {
            let _ = std::fs::remove_file(&lock);
        }
        // Keep the directory small: old plants are removed.
        if planted.len() > 32 {
            for p in planted.drain(..16) {
                let _ = std::fs::remove_file(p);
            }
        }
    }
    for p in planted {
        let _ = std::fs::remove_file(p);
    }
    println!("swapped {swapped}");
}
