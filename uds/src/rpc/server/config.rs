//! The server's limits and timeouts, their defaults, and their checks.

use std::time::Duration;

use tokio::sync::Semaphore;

use crate::frame::{DEFAULT_MAX_FRAME_LEN, FrameConfig};
use crate::rpc::DEFAULT_CLIENT_STREAM_WINDOW;
use crate::rpc::defaults::{
    DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CALLS, DEFAULT_MAX_CALLS_PER_CONNECTION,
    DEFAULT_MAX_CALLS_PER_PROCESS, DEFAULT_MAX_CALLS_PER_USER, DEFAULT_MAX_CONNECTIONS_PER_USER,
    DEFAULT_MAX_QUEUED_PER_PROCESS, DEFAULT_MAX_QUEUED_PER_USER, DEFAULT_MAX_TIMEOUT,
    DEFAULT_WRITE_QUEUE, DEFAULT_WRITE_STALL, MAX_STREAM_CREDIT,
};
use crate::rpc::error::BuildError;

/// Limits and timeouts of a server.
#[derive(Debug, Clone)]
pub(super) struct Config {
    pub(super) max_calls_per_conn: usize,
    pub(super) max_calls: usize,
    pub(super) max_frame_len: usize,
    pub(super) frame_timeout: Option<Duration>,
    pub(super) idle_timeout: Option<Duration>,
    pub(super) write_queue: usize,
    pub(super) write_stall: Duration,
    pub(super) default_timeout: Option<Duration>,
    pub(super) max_timeout: Option<Duration>,
    pub(super) max_stream_duration: Option<Duration>,
    pub(super) max_calls_per_process: usize,
    pub(super) max_calls_per_user: usize,
    pub(super) max_queued_per_process: usize,
    pub(super) max_queued_per_user: usize,
    pub(super) max_connections_per_user: usize,
    pub(super) client_stream_window: u32,
    /// See [`ServerBuilder::calls_on_the_spot`](super::ServerBuilder::calls_on_the_spot).
    pub(super) calls_on_the_spot: bool,
}

impl Config {
    /// Checks the limits, and makes `write_queue` at least 1 byte.
    pub(super) fn validate(&mut self) -> Result<(), BuildError> {
        let max = Semaphore::MAX_PERMITS;
        let call_limits = [
            ("max_calls", self.max_calls),
            ("max_calls_per_connection", self.max_calls_per_conn),
            ("max_calls_per_process", self.max_calls_per_process),
            ("max_calls_per_user", self.max_calls_per_user),
        ];
        let limits = call_limits
            .into_iter()
            .map(|(setting, value)| (setting, value, max))
            .chain([
                (
                    "max_connections_per_user",
                    self.max_connections_per_user,
                    usize::MAX,
                ),
                (
                    "client_stream_window",
                    self.client_stream_window as usize,
                    MAX_STREAM_CREDIT as usize,
                ),
            ]);
        for (setting, value, max) in limits {
            if value == 0 || value > max {
                return Err(BuildError::OutOfRange {
                    setting,
                    value,
                    min: 1,
                    max,
                });
            }
        }
        self.write_queue = self.write_queue.max(1);
        Ok(())
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_calls_per_conn: DEFAULT_MAX_CALLS_PER_CONNECTION,
            max_calls: DEFAULT_MAX_CALLS,
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            frame_timeout: FrameConfig::default().frame_timeout,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            write_queue: DEFAULT_WRITE_QUEUE,
            write_stall: DEFAULT_WRITE_STALL,
            default_timeout: None,
            max_timeout: Some(DEFAULT_MAX_TIMEOUT),
            max_stream_duration: None,
            max_calls_per_process: DEFAULT_MAX_CALLS_PER_PROCESS,
            max_calls_per_user: DEFAULT_MAX_CALLS_PER_USER,
            max_queued_per_process: DEFAULT_MAX_QUEUED_PER_PROCESS,
            max_queued_per_user: DEFAULT_MAX_QUEUED_PER_USER,
            max_connections_per_user: DEFAULT_MAX_CONNECTIONS_PER_USER,
            client_stream_window: DEFAULT_CLIENT_STREAM_WINDOW,
            calls_on_the_spot: true,
        }
    }
}
