//! The load generator: one task per guest (its life is in `guest.rs`), one
//! open-loop sender spawning each send at its due time, and the run's
//! timeline (ramp → window → drain). Latencies count from when a
//! request was DUE, so a slow server cannot hide its slowness by slowing the
//! generator down (no coordinated omission).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{sleep, sleep_until, Instant};

use super::checker::{message_text, Anomalies, Reader, RoomLog};
use super::edge::EdgeClient;
use super::guest::guest_task;
use super::nchan::{publish_task, subscriber_task, Nchan, NchanClient};
use super::plan::{assign_rooms, Arrivals, SendTimetable, Transport};
use super::report::{Latency, Percentiles};

use crate::client::{ApiClient, ClientError};

/// Poll interval jitter: each interval is the base ±20%.
pub const POLL_JITTER: f64 = 0.2;
/// Attempts for one send (the same `client_id` each time).
const SEND_ATTEMPTS: u32 = 4;
/// Attempts for one join.
pub(super) const JOIN_ATTEMPTS: u32 = 3;

/// What the generator needs to know (validated flags).
#[derive(Debug, Clone)]
pub struct Plan {
    pub guests: usize,
    pub rooms: usize,
    /// Rooms are `{room_prefix}-0`, `{room_prefix}-1`, …
    pub room_prefix: String,
    pub duration: Duration,
    pub send_rate: f64,
    pub arrivals: Arrivals,
    pub poll_interval: Duration,
    /// How guests read their room.
    pub transport: Transport,
    /// What a held poll asks the server to wait at most (`Prefer: wait`).
    pub hold_wait: Duration,
    pub heartbeat: Duration,
    pub ramp: Duration,
    /// Quiet time after the last send resolves, while guests keep polling.
    pub drain: Duration,
    pub seed: u64,
    /// Tag put in every message text so runs never confuse each other.
    pub run_tag: String,
    pub leave: bool,
}

/// Counters and histograms, shared by every task.
#[derive(Debug, Default)]
pub struct Stats {
    pub joined: AtomicU64,
    pub polls: AtomicU64,
    pub poll_requests: AtomicU64,
    pub polls_due_in_window: AtomicU64,
    pub poll_304: AtomicU64,
    /// Heartbeats sent (timed polls only).
    pub heartbeats: AtomicU64,
    /// Streams the edge opened (`200 text/event-stream`).
    pub streams_opened: AtomicU64,
    /// Stream requests after a guest's first (each with `Last-Event-ID`).
    pub stream_reconnects: AtomicU64,
    /// Streams the edge ended (cleanly, as on shutdown), not the guest.
    pub stream_ends: AtomicU64,
    /// Default events read from streams (one per log event).
    pub stream_events: AtomicU64,
    /// Stream requests answered with a JSON page instead.
    pub stream_pages: AtomicU64,
    pub sends_due: AtomicU64,
    pub sends_acked: AtomicU64,
    pub poll_latency: Mutex<Latency>,
    pub send_latency: Mutex<Latency>,
    pub delivery_latency: Mutex<Latency>,
    errors: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
}

impl Stats {
    pub(super) fn error(&self, op: &'static str, e: &ClientError) {
        let mut m = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry((op, e.kind())).or_insert(0) += 1;
    }

    /// Errors as `op:kind → count`.
    pub fn errors(&self) -> BTreeMap<String, u64> {
        let m = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        m.iter()
            .map(|((op, kind), n)| (format!("{op}:{kind}"), *n))
            .collect()
    }

    pub fn error_total(&self) -> u64 {
        self.errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .sum()
    }

    pub fn percentiles(l: &Mutex<Latency>) -> Percentiles {
        l.lock().unwrap_or_else(|p| p.into_inner()).percentiles()
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(super) struct Room {
    pub(super) name: String,
    pub(super) log: Mutex<RoomLog>,
}

pub(super) struct Guest {
    pub(super) room: u32,
    /// The guest's current token, once it has joined (senders read it).
    pub(super) token: Mutex<Option<Arc<str>>>,
    /// With nchan (no joins): the guest has started reading its room.
    pub(super) started: AtomicBool,
    /// Messages the guest has sent so far.
    pub(super) sent: AtomicU32,
}

impl Guest {
    /// Whether the guest is in its room, so may be picked to send.
    fn can_send(&self) -> bool {
        self.started.load(Relaxed) || lock(&self.token).is_some()
    }
}

/// What a run loads.
pub enum Target {
    /// Chatty: one API client per source address, and as many edge clients
    /// for the held polls and streams that carry a guest's token.
    Chatty {
        clients: Vec<ApiClient>,
        edges: Vec<EdgeClient>,
    },
    /// nginx + nchan (`nchan.rs`): one client per source address.
    Nchan(Vec<NchanClient>),
}

/// What every task of a run shares.
pub(super) struct Ctx {
    /// One client per source address; guest `g` uses `clients[g % len]`.
    clients: Vec<ApiClient>,
    /// The same for held polls and streams (they carry the guest's token).
    edges: Vec<EdgeClient>,
    /// With nchan, its clients and channels (`clients` and `edges` are then
    /// empty: guests make no request of Chatty's).
    pub(super) nchan: Option<Nchan>,
    pub(super) plan: Plan,
    pub(super) rooms: Vec<Room>,
    pub(super) guests: Vec<Guest>,
    pub(super) stats: Arc<Stats>,
    pub(super) window_start: Instant,
    pub(super) window_end: Instant,
}

/// What a finished run hands to the report.
#[derive(Debug)]
pub struct RunResult {
    pub window: Duration,
    pub elapsed: Duration,
    pub anomalies: Anomalies,
    /// The first anomalies, described.
    pub notes: Vec<String>,
    pub acknowledged_in_logs: usize,
}

/// Runs the whole plan against `target` (Chatty's clients and edges as
/// many, at least one, guest `g` using `clients[g % len]` and
/// `edges[g % len]`; or nchan's). `stats` may be watched while it runs (the
/// progress line does).
pub async fn run(target: Target, plan: Plan, stats: Arc<Stats>) -> RunResult {
    let t0 = Instant::now();
    let ctx = Ctx::new(target, plan, stats, t0);
    let (stop_tx, stop_rx) = watch::channel(false);

    let mut guest_tasks = Vec::with_capacity(ctx.plan.guests);
    for g in 0..ctx.plan.guests {
        let offset = ctx.plan.ramp.mul_f64(g as f64 / ctx.plan.guests as f64);
        let ctx = ctx.clone();
        let stop = stop_rx.clone();
        let (g, start) = (g as u32, t0 + offset);
        guest_tasks.push(if ctx.nchan.is_some() {
            tokio::spawn(subscriber_task(ctx, g, start, stop))
        } else {
            tokio::spawn(guest_task(ctx, g, start, stop))
        });
    }
    run_sends(&ctx).await;
    sleep_until(Instant::now().max(ctx.window_end) + ctx.plan.drain).await;
    let _ = stop_tx.send(true);

    let mut readers: Vec<Vec<Reader>> = (0..ctx.plan.rooms).map(|_| Vec::new()).collect();
    for (g, task) in guest_tasks.into_iter().enumerate() {
        if let Ok(Some(reader)) = task.await {
            readers[ctx.guests[g].room as usize].push(reader);
        }
    }
    let mut result = RunResult {
        window: ctx.window_end - ctx.window_start,
        elapsed: Duration::ZERO,
        anomalies: Anomalies::default(),
        notes: Vec::new(),
        acknowledged_in_logs: 0,
    };
    for (room, readers) in ctx.rooms.iter().zip(&readers) {
        result.add_room(room, readers);
    }
    result.elapsed = t0.elapsed();
    result
}

impl Ctx {
    /// The run's rooms and guests (each guest placed in its room), with the
    /// measured window starting after the ramp.
    fn new(target: Target, plan: Plan, stats: Arc<Stats>, t0: Instant) -> Arc<Ctx> {
        let window_start = t0 + plan.ramp;
        let window_end = window_start + plan.duration;
        let assignment = assign_rooms(plan.guests, plan.rooms, plan.seed);
        let names: Vec<String> = (0..plan.rooms)
            .map(|k| format!("{}-{k}", plan.room_prefix))
            .collect();
        let (clients, edges, nchan) = match target {
            Target::Chatty { clients, edges } => {
                assert!(!clients.is_empty(), "a run needs at least one client");
                assert_eq!(clients.len(), edges.len(), "one edge client per client");
                (clients, edges, None)
            }
            Target::Nchan(clients) => {
                let nchan = Nchan::new(clients, &plan.run_tag, &names);
                (Vec::new(), Vec::new(), Some(nchan))
            }
        };
        let rooms = names
            .into_iter()
            .map(|name| Room {
                name,
                log: Mutex::new(RoomLog::new(&plan.run_tag)),
            })
            .collect();
        let guests = assignment
            .iter()
            .map(|&room| Guest {
                room,
                token: Mutex::new(None),
                started: AtomicBool::new(false),
                sent: AtomicU32::new(0),
            })
            .collect();
        Arc::new(Ctx {
            clients,
            edges,
            nchan,
            plan,
            rooms,
            guests,
            stats,
            window_start,
            window_end,
        })
    }
}

impl Ctx {
    /// The client guest `g` makes its requests with.
    pub(super) fn client(&self, g: u32) -> &ApiClient {
        &self.clients[g as usize % self.clients.len()]
    }

    /// The client guest `g` holds polls and opens streams with.
    pub(super) fn edge(&self, g: u32) -> &EdgeClient {
        &self.edges[g as usize % self.edges.len()]
    }
}

/// Sends, on their own timetable through the window; then waits for every
/// send to resolve.
async fn run_sends(ctx: &Arc<Ctx>) {
    let timetable = SendTimetable::new(ctx.plan.send_rate, ctx.plan.arrivals, ctx.plan.seed);
    let mut pick = StdRng::seed_from_u64(ctx.plan.seed ^ 0x00c0_ffee);
    let mut sends = JoinSet::new();
    open_loop(ctx.window_start, ctx.window_end, timetable, |due| {
        ctx.stats.sends_due.fetch_add(1, Relaxed);
        if let Some(g) = pick_guest(ctx, &mut pick) {
            let ctx = ctx.clone();
            if ctx.nchan.is_some() {
                sends.spawn(publish_task(ctx, g, due));
            } else {
                sends.spawn(send_task(ctx, g, due));
            }
        } else {
            let e = ClientError::Other("no guest has joined".into());
            ctx.stats.error("send", &e);
        }
        while sends.try_join_next().is_some() {}
    })
    .await;
    while sends.join_next().await.is_some() {}
}

impl RunResult {
    /// Checks one room's log against what its readers read, and adds up.
    fn add_room(&mut self, room: &Room, readers: &[Reader]) {
        let mut log = lock(&room.log);
        log.finish(readers);
        self.acknowledged_in_logs += log.acknowledged();
        let a = &log.anomalies;
        self.anomalies.missing += a.missing;
        self.anomalies.duplicated += a.duplicated;
        self.anomalies.out_of_order += a.out_of_order;
        self.anomalies.lost_acknowledged += a.lost_acknowledged;
        for n in &log.notes {
            if self.notes.len() < 50 {
                self.notes.push(format!("{}: {n}", room.name));
            }
        }
    }
}

/// Calls `fire(due)` at each due time `start + offset` of `timetable` before
/// `end`, never waiting for what `fire` started: the open loop. When the
/// runtime wakes late, `fire` still gets the time the event was due.
pub async fn open_loop(
    start: Instant,
    end: Instant,
    timetable: impl Iterator<Item = Duration>,
    mut fire: impl FnMut(Instant),
) {
    for offset in timetable {
        let due = start + offset;
        if due >= end {
            break;
        }
        sleep_until(due).await;
        fire(due);
    }
}

fn pick_guest(ctx: &Ctx, rng: &mut StdRng) -> Option<u32> {
    let n = ctx.guests.len();
    if n == 0 {
        return None;
    }
    for _ in 0..32 {
        let g = rng.gen_range(0..n);
        if ctx.guests[g].can_send() {
            return Some(g as u32);
        }
    }
    // Few guests joined: take the first one that did.
    let start = rng.gen_range(0..n);
    (0..n)
        .map(|i| (start + i) % n)
        .find(|&g| ctx.guests[g].can_send())
        .map(|g| g as u32)
}

/// Retries `op` while it fails with a transient error, up to `attempts`,
/// counting every failure under `name`.
pub(super) async fn with_retries<T, F, Fut>(
    stats: &Stats,
    name: &'static str,
    attempts: u32,
    mut op: F,
) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ClientError>>,
{
    for attempt in 1..=attempts {
        match op().await {
            Ok(v) => return Some(v),
            Err(e) => {
                stats.error(name, &e);
                if attempt == attempts || !e.is_transient() {
                    return None;
                }
                let backoff = match &e {
                    ClientError::Status {
                        retry_after: Some(s),
                        ..
                    } => Duration::from_secs((*s).min(5)),
                    _ => Duration::from_millis(200 * u64::from(attempt)),
                };
                sleep(backoff).await;
            }
        }
    }
    None
}

async fn send_task(ctx: Arc<Ctx>, g: u32, due: Instant) {
    let guest = &ctx.guests[g as usize];
    let room = &ctx.rooms[guest.room as usize];
    let Some(token) = lock(&guest.token).clone() else {
        return;
    };
    let n = guest.sent.fetch_add(1, Relaxed) + 1;
    let text = message_text(g, n, &ctx.plan.run_tag);
    let client_id = format!("{}-{g}-{n}", ctx.plan.run_tag);
    let sent = with_retries(&ctx.stats, "send", SEND_ATTEMPTS, || {
        ctx.client(g).send(&room.name, &token, &text, &client_id)
    })
    .await;
    let Some(event) = sent else {
        return;
    };
    let now = Instant::now();
    ctx.stats.sends_acked.fetch_add(1, Relaxed);
    lock(&ctx.stats.send_latency).record(now - due);
    let mut zeros = 0u32;
    lock(&room.log).acknowledge(g, n, event.seq, now, |_| zeros += 1);
    if zeros > 0 {
        let mut h = lock(&ctx.stats.delivery_latency);
        for _ in 0..zeros {
            h.record(Duration::ZERO);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::plan::PollTimer;
    use std::sync::Mutex as StdMutex;

    /// Sends are fired at their due times even when each takes far longer
    /// than the gap between them, and their latency counts from the due time.
    #[tokio::test(start_paused = true)]
    async fn sends_follow_the_timetable_not_the_server() {
        let start = Instant::now() + Duration::from_secs(1);
        let end = start + Duration::from_secs(10);
        let fired: Arc<StdMutex<Vec<(Instant, Instant)>>> = Arc::default();
        let latencies: Arc<StdMutex<Vec<Duration>>> = Arc::default();
        let mut tasks = JoinSet::new();
        let timetable = SendTimetable::new(5.0, Arrivals::Even, 1);
        open_loop(start, end, timetable, |due| {
            fired.lock().unwrap().push((due, Instant::now()));
            let latencies = latencies.clone();
            tasks.spawn(async move {
                // A server that takes 3 s to answer each send.
                sleep(Duration::from_secs(3)).await;
                latencies.lock().unwrap().push(Instant::now() - due);
            });
        })
        .await;
        while tasks.join_next().await.is_some() {}
        let fired = fired.lock().unwrap();
        assert_eq!(fired.len(), 50, "5/s for 10 s");
        for (i, (due, at)) in fired.iter().enumerate() {
            assert_eq!(*due, start + Duration::from_millis(200 * i as u64));
            assert_eq!(at, due, "fired on time, not after the previous answer");
        }
        let latencies = latencies.lock().unwrap();
        assert!(latencies.iter().all(|l| *l == Duration::from_secs(3)));
    }

    /// A poll that comes late because the previous one was slow has its
    /// latency counted from when it was due.
    #[tokio::test(start_paused = true)]
    async fn late_polls_count_from_their_due_time() {
        let start = Instant::now();
        let mut timer = PollTimer::new(start, Duration::from_secs(1), 0.0, 1);
        let mut latencies = Vec::new();
        let mut dues = Vec::new();
        for i in 0..4 {
            let due = timer.due();
            sleep_until(due).await;
            timer.advance();
            dues.push(due);
            // The first poll takes 2.5 s, the others 100 ms.
            let took = if i == 0 { 2500 } else { 100 };
            sleep(Duration::from_millis(took)).await;
            latencies.push(Instant::now() - due);
        }
        // Due times stay on the timetable: one interval apart.
        for w in dues.windows(2) {
            assert_eq!(w[1] - w[0], Duration::from_secs(1));
        }
        let ms: Vec<u128> = latencies.iter().map(|d| d.as_millis()).collect();
        // Poll 2 was due 1 s after poll 1 but could only start at 2.5 s.
        assert_eq!(ms, vec![2500, 1600, 700, 100]);
    }
}
