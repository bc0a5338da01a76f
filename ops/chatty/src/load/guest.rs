//! One guest's life: join, read its room by the run's transport (polls on a
//! jittered timetable with heartbeats alongside, held polls one after
//! another, or an event stream in `stream.rs`), renewing its token before
//! it expires, then leave; answers what it read, for the check. A new
//! transport is one more reading loop.

use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tokio::time::{sleep, sleep_until, Instant};

use chatty_shared::wire::{Event, MessagesPage};

use super::checker::Reader;
use super::generator::{lock, with_retries, Ctx, Room, JOIN_ATTEMPTS, POLL_JITTER};
use super::plan::{PollTimer, Transport};
use super::stream::event_streams;
use crate::client::{ClientError, Held, Poll};

/// How a poll ended, which decides when a held poll's next one goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// A page, or a 304 after the wait the server said it held: ask again
    /// at once.
    Answered,
    /// A 304 the server did not hold (it may ignore the preference): wait
    /// as a timed poll would, rather than ask again in a tight loop.
    NotHeld,
    /// A request failed (counted).
    Failed,
}

/// Where a guest has read to, carried from one poll (or stream) to the next.
pub(super) struct Cursor {
    reader: Reader,
    /// The `after` of the next poll; on a stream, the last event's seq.
    pub(super) after: u64,
    /// The last `ETag` seen, sent as `If-None-Match`.
    etag: String,
    /// Delivery latencies of the page being read (kept to reuse its memory).
    samples: Vec<Duration>,
}

impl Cursor {
    /// `events` (in the order shown) reached the guest at `now`: checks
    /// them, records their delivery latencies and moves the cursor past
    /// the last.
    pub(super) fn read(&mut self, ctx: &Ctx, room: &Room, events: &[Event], now: Instant) {
        let samples = &mut self.samples;
        samples.clear();
        lock(&room.log).observe(&mut self.reader, events, now, |d| samples.push(d));
        if !samples.is_empty() {
            let mut h = lock(&ctx.stats.delivery_latency);
            for d in samples.iter() {
                h.record(*d);
            }
        }
        if let Some(last) = events.last() {
            self.after = self.after.max(last.seq);
        }
    }

    /// A page answered at `now`: read as above; answers whether more pages
    /// follow.
    pub(super) fn read_page(
        &mut self,
        ctx: &Ctx,
        room: &Room,
        page: &MessagesPage,
        now: Instant,
    ) -> bool {
        self.read(ctx, room, &page.events, now);
        self.after = page.seq;
        page.more && !page.events.is_empty()
    }
}

/// A guest's membership: its token, renewed by joining again before it
/// expires, and when its next heartbeat is due (timed polls only).
pub(super) struct Membership {
    pub(super) g: u32,
    nick: String,
    pub(super) token: Arc<str>,
    ttl: Duration,
    refresh_at: Instant,
    /// Whether this guest heartbeats (its transport says).
    beats: bool,
    next_beat: Instant,
}

impl Membership {
    /// Joins (with retries); `None` when the guest could not join.
    async fn join(ctx: &Ctx, g: u32) -> Option<(Membership, Cursor)> {
        let guest = &ctx.guests[g as usize];
        let room = &ctx.rooms[guest.room as usize].name;
        let nick = format!("load{g}");
        let joined = with_retries(&ctx.stats, "join", JOIN_ATTEMPTS, || {
            ctx.client(g).join(room, &nick)
        })
        .await?;
        ctx.stats.joined.fetch_add(1, Relaxed);
        let token: Arc<str> = joined.token.clone().into();
        *lock(&guest.token) = Some(token.clone());
        let ttl = Duration::from_secs(joined.token_ttl_secs.max(1));
        let now = Instant::now();
        let membership = Membership {
            g,
            nick,
            token,
            ttl,
            refresh_at: now + ttl.mul_f64(0.8),
            beats: ctx.plan.transport.heartbeats(),
            next_beat: now + ctx.plan.heartbeat,
        };
        let cursor = Cursor {
            reader: Reader::new(g, joined.seq),
            after: joined.seq,
            etag: joined.etag,
            samples: Vec::new(),
        };
        Some((membership, cursor))
    }

    /// When [`Membership::tick`] has something to do: the next heartbeat,
    /// or without heartbeats the token's renewal.
    pub(super) fn next_due(&self) -> Instant {
        if self.beats {
            self.next_beat
        } else {
            self.refresh_at
        }
    }

    /// At [`Membership::next_due`]: join again when the token is about to
    /// expire (reading on from where the guest was), else send a heartbeat
    /// without waiting for it. Answers whether the token was renewed.
    pub(super) async fn tick(&mut self, ctx: &Arc<Ctx>, now: Instant) -> bool {
        if self.beats && now >= self.next_beat {
            self.next_beat += ctx.plan.heartbeat;
        }
        let g = self.g;
        let guest = &ctx.guests[g as usize];
        let room_idx = guest.room as usize;
        if now >= self.refresh_at {
            let room = &ctx.rooms[room_idx].name;
            if let Some(again) = with_retries(&ctx.stats, "join", JOIN_ATTEMPTS, || {
                ctx.client(g).join(room, &self.nick)
            })
            .await
            {
                self.token = again.token.into();
                *lock(&guest.token) = Some(self.token.clone());
                self.refresh_at = Instant::now() + self.ttl.mul_f64(0.8);
                return true;
            }
            // Try again a heartbeat interval later (the token still has a
            // fifth of its life).
            self.refresh_at = Instant::now() + ctx.plan.heartbeat;
            return false;
        }
        if !self.beats {
            return false;
        }
        ctx.stats.heartbeats.fetch_add(1, Relaxed);
        let ctx = ctx.clone();
        let token = self.token.clone();
        tokio::spawn(async move {
            let room = &ctx.rooms[room_idx].name;
            if let Err(e) = ctx.client(g).heartbeat(room, &token).await {
                ctx.stats.error("heartbeat", &e);
            }
        });
        false
    }

    /// Drives `work` to its end while heartbeats go out (and the token is
    /// renewed) when due; `None` when told to stop first (`work` is then
    /// dropped).
    pub(super) async fn beating<T>(
        &mut self,
        ctx: &Arc<Ctx>,
        stop: &mut watch::Receiver<bool>,
        work: impl Future<Output = T>,
    ) -> Option<T> {
        tokio::pin!(work);
        loop {
            if *stop.borrow() {
                return None;
            }
            tokio::select! {
                out = &mut work => return Some(out),
                _ = sleep_until(self.next_due()) => {
                    self.tick(ctx, Instant::now()).await;
                }
                _ = stop.changed() => return None,
            }
        }
    }
}

/// One guest: join at `join_at`, then read and heartbeat until told to stop;
/// answers what it read, for the final check.
pub(super) async fn guest_task(
    ctx: Arc<Ctx>,
    g: u32,
    join_at: Instant,
    mut stop: watch::Receiver<bool>,
) -> Option<Reader> {
    sleep_until(join_at).await;
    let room = &ctx.rooms[ctx.guests[g as usize].room as usize];
    let (mut membership, mut cursor) = Membership::join(&ctx, g).await?;
    let (m, c, s) = (&mut membership, &mut cursor, &mut stop);
    match ctx.plan.transport {
        Transport::Poll => timed_polls(&ctx, room, m, c, s).await,
        Transport::Hold => held_polls(&ctx, room, m, c, s).await,
        Transport::Stream => event_streams(&ctx, room, m, c, s).await,
    }
    if ctx.plan.leave {
        if let Err(e) = ctx.client(g).leave(&room.name, &membership.token).await {
            ctx.stats.error("leave", &e);
        }
    }
    Some(cursor.reader)
}

/// `--transport poll`: a poll on a jittered timetable (each due one interval
/// after the last was due), heartbeats between them.
async fn timed_polls(
    ctx: &Arc<Ctx>,
    room: &Room,
    membership: &mut Membership,
    cursor: &mut Cursor,
    stop: &mut watch::Receiver<bool>,
) {
    let seed = ctx.plan.seed ^ u64::from(membership.g) << 20;
    let mut timer = PollTimer::new(Instant::now(), ctx.plan.poll_interval, POLL_JITTER, seed);
    loop {
        if *stop.borrow() {
            break;
        }
        let due = timer.due();
        tokio::select! {
            _ = sleep_until(due.min(membership.next_due())) => {}
            _ = stop.changed() => break,
        }
        let now = Instant::now();
        if now >= membership.next_due() {
            membership.tick(ctx, now).await;
        }
        if now >= due {
            timer.advance();
            poll_once(ctx, room, membership.g, cursor, due, None).await;
        }
    }
}

/// `--transport hold`: a held poll carrying the guest's token (so no
/// heartbeats), and the next as soon as it is answered (a 304 when the wait
/// ended, or a page); after an error, or a 304 the server did not hold, a
/// jittered poll interval first, as a timed poll would wait.
async fn held_polls(
    ctx: &Arc<Ctx>,
    room: &Room,
    membership: &mut Membership,
    cursor: &mut Cursor,
    stop: &mut watch::Receiver<bool>,
) {
    let g = membership.g;
    let mut rng = StdRng::seed_from_u64(ctx.plan.seed ^ u64::from(g) << 20);
    let wait = Some(ctx.plan.hold_wait);
    loop {
        let token = membership.token.clone();
        let hold = wait.map(|w| (w, &*token));
        let poll = poll_once(ctx, room, g, cursor, Instant::now(), hold);
        match membership.beating(ctx, stop, poll).await {
            None => return,
            Some(Outcome::Answered) => continue,
            Some(Outcome::NotHeld | Outcome::Failed) => {}
        }
        let factor = rng.gen_range(1.0 - POLL_JITTER..=1.0 + POLL_JITTER);
        let backoff = sleep(ctx.plan.poll_interval.mul_f64(factor));
        if membership.beating(ctx, stop, backoff).await.is_none() {
            return;
        }
    }
}

/// One poll due at `due` by guest `g`: asks for events after the cursor with
/// the last ETag, following `more` pages; with `hold` (a wait and the
/// guest's token), its first request is held that long at most. Its latency
/// runs from `due` to its last answer.
async fn poll_once(
    ctx: &Ctx,
    room: &Room,
    g: u32,
    cursor: &mut Cursor,
    due: Instant,
    mut hold: Option<(Duration, &str)>,
) -> Outcome {
    let stats = &ctx.stats;
    if due >= ctx.window_start && due < ctx.window_end {
        stats.polls_due_in_window.fetch_add(1, Relaxed);
    }
    let client = ctx.client(g);
    let mut outcome = Outcome::Answered;
    loop {
        let (after, etag) = (cursor.after, &mut cursor.etag);
        let answer: Result<Poll, ClientError> = match hold.take() {
            Some((wait, token)) => ctx
                .edge(g)
                .poll_held(&room.name, after, etag, wait, token)
                .await
                .map(|Held { poll, applied }| {
                    if !applied && matches!(poll, Poll::NotModified) {
                        outcome = Outcome::NotHeld;
                    }
                    poll
                }),
            None => client.poll(&room.name, after, etag).await,
        };
        let now = Instant::now();
        let more = match answer {
            Ok(Poll::NotModified) => {
                stats.poll_requests.fetch_add(1, Relaxed);
                stats.poll_304.fetch_add(1, Relaxed);
                false
            }
            Ok(Poll::Page(page)) => {
                stats.poll_requests.fetch_add(1, Relaxed);
                cursor.read_page(ctx, room, &page, now)
            }
            Err(e) => {
                stats.error("poll", &e);
                return Outcome::Failed;
            }
        };
        if !more {
            stats.polls.fetch_add(1, Relaxed);
            lock(&stats.poll_latency).record(now - due);
            return outcome;
        }
    }
}
