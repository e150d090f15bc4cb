//! Forwarding a plugin's stdout and stderr into `tracing`, line by line,
//! in bounded memory.

use tokio::io::{AsyncRead, AsyncReadExt};

/// Longest line forwarded as one event; a longer line is cut into pieces of
/// this size, each but the last marked `truncated = true` (a piece may end
/// inside a UTF-8 character, shown as U+FFFD). This bounds the host's memory
/// whatever the plugin writes. A subscriber slower than the plugin's output
/// slows the plugin's writes (the pipe fills), never the host's memory.
pub const MAX_LINE: usize = 8 * 1024;

/// Which of the plugin's outputs a line came from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Which {
    Stdout,
    Stderr,
}

impl Which {
    fn as_str(self) -> &'static str {
        match self {
            Which::Stdout => "stdout",
            Which::Stderr => "stderr",
        }
    }
}

/// Reads `pipe` to its end, emitting one `tracing` event per line (target
/// `uds::plugin`, level INFO, fields `plugin`, `pid`, `stream`).
pub(crate) async fn forward(
    mut pipe: impl AsyncRead + Unpin,
    which: Which,
    plugin: String,
    pid: u32,
) {
    let mut buf = vec![0u8; MAX_LINE];
    let mut filled = 0usize;
    loop {
        let n = match pipe.read(&mut buf[filled..]).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        filled += n;
        let mut start = 0;
        while let Some(pos) = buf[start..filled].iter().position(|&b| b == b'\n') {
            emit(&buf[start..start + pos], which, &plugin, pid, false);
            start += pos + 1;
        }
        if start == 0 && filled == buf.len() {
            // A line longer than the buffer: forward what we have.
            emit(&buf[..filled], which, &plugin, pid, true);
            filled = 0;
        } else {
            buf.copy_within(start..filled, 0);
            filled -= start;
        }
    }
    if filled > 0 {
        emit(&buf[..filled], which, &plugin, pid, false);
    }
}

fn emit(line: &[u8], which: Which, plugin: &str, pid: u32, truncated: bool) {
    let line = String::from_utf8_lossy(line);
    let line = line.strip_suffix('\r').unwrap_or(&line);
    tracing::info!(target: "uds::plugin", plugin, pid, stream = which.as_str(), truncated, "{line}");
}
