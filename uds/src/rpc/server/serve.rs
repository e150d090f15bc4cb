//! Serving one connection: admit the peer, read request frames until the
//! reading ends (and say why), then drain: answer what never started, stop
//! or await the calls, flush the replies.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::{Instant, Sleep};

use super::conn::ConnState;
use super::dispatch::Session;
use super::in_flight::InFlightCalls;
use super::parked::{MIN_PARKED, ParkLimits, ParkedQueue};
use super::peers::{PeerHold, acquire_slots};
use super::shared::Shared;
use crate::cred::Cred;
use crate::frame::{FrameConfig, FrameError, FrameReader};
use crate::net::{Conn, ReadHalf};
use crate::rpc::defaults::MIN_KEEPALIVE;
use crate::rpc::error::HandlerError;
use crate::rpc::outbox::Outbox;

type Reader = FrameReader<ReadHalf>;

/// Why a connection's read loop ended; decides what happens to the calls
/// in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadEnd {
    /// The server is shutting down: no new requests are read.
    Stopped,
    /// The connection stayed idle past the idle timeout.
    Idle,
    /// The peer closed its side between frames.
    Eof,
    /// Reading failed, the peer broke the framing, or replies can no longer
    /// be written.
    Broken,
}

/// Serves a connection until it ends and every call on it has finished (or
/// been stopped). The connection task's body.
pub(super) async fn serve_conn(shared: Arc<Shared>, conn: Conn) {
    let Some(hold) = admit(&shared, conn.peer_cred()) else {
        // Dropped unread: the peer sees the connection close.
        return;
    };
    let peer = conn.peer_cred().clone();
    let (rd, wr) = conn.into_split();
    let state = Arc::new(ConnState {
        items: super::conn::ItemBudget::default(),
        outbox: Outbox::new(wr, shared.config.write_queue, shared.config.write_stall),
        calls: Arc::new(InFlightCalls::default()),
        max_frame_len: shared.config.max_frame_len,
    });
    let writer = tokio::spawn({
        let state = state.clone();
        async move { state.outbox.run_writer().await }
    });
    let mut reader = FrameReader::with_config(
        rd,
        FrameConfig {
            max_frame_len: shared.config.max_frame_len,
            frame_timeout: shared.config.frame_timeout,
        },
    );
    // Issue 10 item 5 (sec-client): an idle connection gives its read
    // buffers back; see FrameReader::set_idle_release.
    reader.set_idle_release(Some(crate::frame::DEFAULT_IDLE_RELEASE));
    // Requests read but waiting for a call slot. The reader never waits for a
    // slot itself, so cancellations and stream credit keep being read at the
    // limit; only when this queue is full too does it stop reading.
    let limits = ParkLimits {
        connection: shared.config.max_calls_per_conn.max(MIN_PARKED),
        process: shared.config.max_queued_per_process,
        user: shared.config.max_queued_per_user,
    };
    let mut parked = ParkedQueue::new(hold.process.clone(), hold.user.clone(), limits);
    let session = Session {
        permits: Arc::new(Semaphore::new(shared.config.max_calls_per_conn)),
        shared,
        state,
        peer: Arc::new(peer),
        hold,
    };
    let end = read_loop(&session, &mut reader, &mut parked).await;
    drain(&session, &mut reader, writer, &mut parked, end).await;
    // The peer's quotas count this connection until here.
    drop(parked);
    drop(session);
}

/// [`PeerHold::register`], logging a refusal (rate-limited).
fn admit(shared: &Shared, peer: &Cred) -> Option<Arc<PeerHold>> {
    match PeerHold::register(&shared.peers, shared.peer_limits(), peer) {
        Ok(hold) => Some(Arc::new(hold)),
        Err(open) => {
            if let Some(suppressed) = shared.logs.too_many_connections.allow() {
                tracing::warn!(
                    peer = %peer,
                    open,
                    limit = shared.config.max_connections_per_user,
                    suppressed,
                    "closing connection: too many connections from this user"
                );
            }
            None
        }
    }
}

/// Reads and handles request frames, and starts queued requests as slots
/// free up, until the reading ends; returns why.
async fn read_loop(s: &Session, reader: &mut Reader, parked: &mut ParkedQueue) -> ReadEnd {
    let Session {
        shared,
        state,
        peer,
        hold,
        permits,
    } = s;
    let mut keepalives = tokio::time::interval(MIN_KEEPALIVE);
    keepalives.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The events that happen once are watched for the connection's life,
    // not set up again for every frame (each set-up takes locks).
    let stop = shared.stop_accepting.cancelled();
    let broken = state.outbox.broken();
    tokio::pin!(stop, broken);
    let mut idle = IdleTimer::new(shared.config.idle_timeout);
    loop {
        // A full queue stops the reading (backpressure), unless running
        // client streams need their items: new requests are then refused.
        let can_read = state.items.has_room() && (parked.has_room() || state.calls.taking_items());
        let frame = tokio::select! {
            biased;
            () = &mut stop => return ReadEnd::Stopped,
            // Replies can no longer be written (the peer stopped reading, or
            // the connection broke): stop reading requests too and close,
            // rather than run handlers whose replies go nowhere.
            () = &mut broken => {
                if let Some(suppressed) = shared.logs.write_failed.allow() {
                    tracing::debug!(peer = %peer, suppressed, "closing connection: replies cannot be written");
                }
                return ReadEnd::Broken;
            }
            slots = acquire_slots(permits, hold, &shared.calls), if !parked.is_empty() => {
                if let (Some(slots), Some(call)) = (slots, parked.pop()) {
                    s.start_queued(call, slots, !parked.is_empty()).await;
                }
                continue;
            }
            () = idle.fired() => {
                if idle.is_over(!state.calls.is_idle() || !parked.is_empty()) {
                    if let Some(suppressed) = shared.logs.idle.allow() {
                        tracing::debug!(peer = %peer, suppressed, "closing idle connection");
                    }
                    return ReadEnd::Idle;
                }
                continue;
            }
            // A stream waiting for a slot hears keep-alives, so that a busy
            // server is not taken for a dead one.
            _ = keepalives.tick(), if parked.wants_keepalives() => {
                parked.send_keepalives(&state.outbox, Instant::now());
                continue;
            }
            // Handlers hold too many bytes of items: wait until they take some.
            () = state.items.room(), if !state.items.has_room() => continue,
            f = reader.read_frame(), if can_read => f,
        };
        idle.saw_frame();
        let body = match frame_body(shared, peer, frame) {
            Ok(body) => body,
            Err(end) => return end,
        };
        let more_at_hand = reader.frame_ready();
        tokio::select! {
            biased;
            // A frame read is handled, even if the server starts stopping.
            () = s.handle_frame(parked, body, more_at_hand) => {}
            () = &mut stop => return ReadEnd::Stopped,
        }
        // Frames already in the read buffer are handed out without touching
        // the socket, so without this a peer that keeps the buffer full
        // (cancellations, bad frames, cheap calls) would hold this worker
        // thread and starve every other connection on it. Each frame costs
        // a unit of tokio's cooperative budget; when it runs out, the task
        // yields to the others.
        tokio::task::coop::consume_budget().await;
    }
}

/// The end of a connection: answers the requests that never started,
/// stops the calls if nobody can read their replies, waits for the rest
/// (until a hard stop), and lets the writer flush.
async fn drain<T>(
    s: &Session,
    reader: &mut Reader,
    mut writer: JoinHandle<T>,
    parked: &mut ParkedQueue,
    end: ReadEnd,
) {
    let Session { shared, state, .. } = s;
    let broken = end == ReadEnd::Broken;
    // Requests that never got a slot are answered, with their ids.
    if !broken {
        while let Some(call) = parked.pop() {
            state
                .reply(call.env.id, Err(HandlerError::shutting_down()))
                .await;
        }
    }
    // Calls still taking the client's items can never have them now (a
    // stopping server goes on reading, so its client streams can finish).
    if end != ReadEnd::Stopped {
        s.fail_unreadable_items(CLIENT_STOPPED).await;
    }
    // A broken connection, or a peer that closed both directions (not just
    // its writing side): nobody will read replies, so stop the calls now.
    if broken || (end == ReadEnd::Eof && peer_fully_closed(reader).await) {
        state.outbox.break_with("the connection ended");
        state.calls.cancel_all();
    }
    let wait = async {
        tokio::select! {
            () = state.calls.wait_drained() => true,
            () = state.outbox.broken() => {
                state.calls.cancel_all();
                false
            }
            () = shared.hard_stop.cancelled() => {
                shared.aborted.fetch_add(state.calls.cancel_all(), Ordering::Relaxed);
                false
            }
        }
    };
    let drained = if end == ReadEnd::Stopped {
        refuse_while(s, reader, parked, wait).await
    } else {
        wait.await
    };
    // Shutting down, every call answered: the connection's last frame says
    // so (id 0, `reason` 2), so that a call the client sends as it closes
    // fails at once with `ShuttingDown` (it did not run), not with a bare
    // "connection closed". Not after a hard stop: calls cut short then may
    // have run in part.
    if end == ReadEnd::Stopped && drained {
        state.reply(0, Err(HandlerError::shutting_down())).await;
    }
    state.outbox.finish();
    tokio::select! {
        _ = &mut writer => {}
        () = shared.hard_stop.cancelled() => writer.abort(),
    }
}

/// While the calls of a stopping server's connection finish (`wait`), keeps
/// reading its requests and answers each new call at once with "shutting
/// down" (code 4, `reason` 2: it did not run); cancellations and stream
/// credit still reach the calls in flight. Returns what `wait` returned.
async fn refuse_while(
    s: &Session,
    reader: &mut Reader,
    parked: &mut ParkedQueue,
    wait: impl Future<Output = bool>,
) -> bool {
    tokio::pin!(wait);
    loop {
        tokio::select! {
            biased;
            drained = &mut wait => return drained,
            frame = reader.read_frame() => {
                if let Ok(Some(body)) = frame {
                    s.refuse_frame(parked, body).await;
                } else {
                    // The peer is gone or broke the framing: just finish.
                    s.fail_unreadable_items(CLIENT_STOPPED).await;
                    return wait.await;
                }
            }
        }
    }
}

/// What a call still taking items is told when its client's items can no
/// longer come.
const CLIENT_STOPPED: &str = "the client stopped sending before the end of the call's items";

/// The body of a frame read, or how the reading ended (logged, at most once
/// a second per kind).
fn frame_body(
    shared: &Shared,
    peer: &Cred,
    frame: Result<Option<Bytes>, FrameError>,
) -> Result<Bytes, ReadEnd> {
    match frame {
        Ok(Some(body)) => Ok(body),
        Ok(None) => Err(ReadEnd::Eof),
        Err(FrameError::Io(e)) => {
            if let Some(suppressed) = shared.logs.read_failed.allow() {
                tracing::debug!(peer = %peer, %e, suppressed, "connection read failed");
            }
            Err(ReadEnd::Broken)
        }
        Err(e) => {
            if let Some(suppressed) = shared.logs.bad_framing.allow() {
                tracing::warn!(peer = %peer, %e, suppressed, "closing connection: bad framing");
            }
            Err(ReadEnd::Broken)
        }
    }
}

async fn peer_fully_closed(reader: &Reader) -> bool {
    reader
        .get_ref()
        .peer_hung_up(Duration::from_millis(10))
        .await
}

/// The idle timeout of a connection, reset at most once a period rather
/// than for every frame (a reset takes the timer's lock): when it fires, a
/// connection that read a frame in the period, or had a call in flight or
/// waiting, is given another whole period; one that had neither is idle. So
/// a connection is closed after at least the timeout of silence with no
/// call, and at most about twice that.
struct IdleTimer {
    period: Option<Duration>,
    sleep: Option<Pin<Box<Sleep>>>,
    /// A frame was read, or calls were in flight, since the timer was set.
    active: bool,
}

impl IdleTimer {
    fn new(period: Option<Duration>) -> Self {
        IdleTimer {
            period,
            sleep: period.map(|p| Box::pin(tokio::time::sleep(p))),
            active: false,
        }
    }

    /// Completes when the period is up (never without a timeout).
    async fn fired(&mut self) {
        match &mut self.sleep {
            Some(sleep) => sleep.as_mut().await,
            None => std::future::pending().await,
        }
    }

    fn saw_frame(&mut self) {
        self.active = true;
    }

    /// After [`fired`](Self::fired): whether the connection is idle;
    /// otherwise the timer is set for another period. `busy`: calls are in
    /// flight or waiting (a whole period must then pass after they end).
    fn is_over(&mut self, busy: bool) -> bool {
        if !self.active && !busy {
            return true;
        }
        self.active = busy;
        if let (Some(sleep), Some(period)) = (&mut self.sleep, self.period) {
            sleep.as_mut().reset(Instant::now() + period);
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A period with a frame, or with calls in flight, is not idle; after
    /// calls, a whole quiet period must pass; no timeout, never idle.
    #[tokio::test(start_paused = true)]
    async fn the_idle_timer_closes_only_after_a_whole_quiet_period() {
        let period = Duration::from_secs(10);
        let mut idle = IdleTimer::new(Some(period));
        let began = Instant::now();
        idle.saw_frame();
        idle.fired().await;
        assert_eq!(began.elapsed(), period);
        assert!(!idle.is_over(false), "a frame was read in the period");
        idle.fired().await;
        assert!(!idle.is_over(true), "a call is in flight");
        idle.fired().await;
        assert!(!idle.is_over(false), "the call may have ended just now");
        idle.fired().await;
        assert!(idle.is_over(false));
        assert_eq!(began.elapsed(), 4 * period);

        let mut never = IdleTimer::new(None);
        let fired = tokio::time::timeout(Duration::from_secs(3600), never.fired()).await;
        assert!(fired.is_err(), "no timeout: never fires");
    }
}
