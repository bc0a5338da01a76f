//! `--transport stream`: a guest reads its room from the edge's event
//! stream (contract: "Event stream (served by the edge only)"). Each default
//! event is one log event, checked and timed like a poll's page; when the
//! stream ends or fails the guest asks again with `Last-Event-ID` after the
//! `retry:` hint (jittered, bounded, longer after each failure in a row); an
//! answer that is not a stream (a JSON page: the edge is full, or the
//! target is an API node) is read as a poll's and the stream asked for
//! again a poll interval later. The stream carries the guest's token, so no
//! heartbeats; a renewed token opens a new stream with it.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use chatty_shared::wire::Event;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tokio::time::{sleep, sleep_until, timeout, Instant};

use super::edge::Opened;
use super::generator::{Ctx, Room, POLL_JITTER};
use super::guest::{Cursor, Membership};
use super::sse::{SseItem, SseParser};
use crate::client::ClientError;

/// The reconnect delay until the stream says otherwise (the contract's
/// `retry: 2000`).
pub const DEFAULT_RETRY: Duration = Duration::from_secs(2);
/// Bounds of a reconnect delay, whatever the hint or the failures in a row.
pub const MIN_RETRY: Duration = Duration::from_millis(10);
pub const MAX_RETRY: Duration = Duration::from_secs(30);
/// A stream silent this long is dead: the edge sends a keepalive every 15 s.
pub const STREAM_IDLE: Duration = Duration::from_secs(45);

/// When to ask for the stream again.
#[derive(Debug)]
pub struct Reconnect {
    /// The last `retry:` the edge sent.
    hint: Duration,
    /// Failures since the last stream that opened.
    failures: u32,
    rng: StdRng,
}

impl Reconnect {
    pub fn new(seed: u64) -> Self {
        Self {
            hint: DEFAULT_RETRY,
            failures: 0,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// A stream opened: failures in a row start again from zero.
    pub fn opened(&mut self) {
        self.failures = 0;
    }

    /// A request or a stream failed.
    pub fn failed(&mut self) {
        self.failures += 1;
    }

    /// The stream said `retry: <ms>`.
    pub fn set_hint(&mut self, hint: Duration) {
        self.hint = hint;
    }

    /// The delay before the next request: the hint doubled for each failure
    /// in a row beyond the first, bounded, then spread over ½…1½ of itself
    /// so that streams an edge ended together do not come back together;
    /// `retry_after` (a 503's `Retry-After`) is a floor.
    pub fn delay(&mut self, retry_after: Option<Duration>) -> Duration {
        let doublings = self.failures.saturating_sub(1).min(16);
        let base = self
            .hint
            .saturating_mul(1 << doublings)
            .clamp(MIN_RETRY, MAX_RETRY);
        let base = base.max(retry_after.unwrap_or_default().min(MAX_RETRY));
        base.mul_f64(self.rng.gen_range(0.5..1.5))
    }
}

/// How one stream request ended.
#[derive(Debug)]
enum End {
    /// The edge ended the stream (shutdown, upstream failure): come back
    /// after the hint.
    Ended,
    /// The request or the stream failed (counted); `Retry-After` if any.
    Failed(Option<Duration>),
    /// A JSON page came instead; more pages follow when true.
    Page(bool),
}

/// `--transport stream`: streams one after another until told to stop.
pub(super) async fn event_streams(
    ctx: &Arc<Ctx>,
    room: &Room,
    membership: &mut Membership,
    cursor: &mut Cursor,
    stop: &mut watch::Receiver<bool>,
) {
    let g = membership.g;
    let stats = &ctx.stats;
    let seed = ctx.plan.seed ^ u64::from(g) << 20;
    let mut reconnect = Reconnect::new(seed);
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5757);
    let mut first = true;
    loop {
        if *stop.borrow() {
            return;
        }
        let last_event_id = if first {
            None
        } else {
            stats.stream_reconnects.fetch_add(1, Relaxed);
            Some(cursor.after)
        };
        first = false;
        let token = membership.token.clone();
        let end = {
            let read = read_stream(ctx, room, g, cursor, &token, last_event_id, &mut reconnect);
            tokio::pin!(read);
            loop {
                tokio::select! {
                    end = &mut read => break Some(end),
                    _ = sleep_until(membership.next_due()) => {
                        // A renewed token: the edge reports presence with
                        // the token the stream carries, so open one with it.
                        if membership.tick(ctx, Instant::now()).await {
                            break None;
                        }
                    }
                    _ = stop.changed() => return,
                }
            }
        };
        let delay = match end {
            None | Some(End::Page(true)) => continue,
            Some(End::Ended) => reconnect.delay(None),
            Some(End::Failed(retry_after)) => reconnect.delay(retry_after),
            Some(End::Page(false)) => ctx
                .plan
                .poll_interval
                .mul_f64(rng.gen_range(1.0 - POLL_JITTER..=1.0 + POLL_JITTER)),
        };
        if membership.beating(ctx, stop, sleep(delay)).await.is_none() {
            return;
        }
    }
}

/// One stream request, read to its end.
async fn read_stream(
    ctx: &Ctx,
    room: &Room,
    g: u32,
    cursor: &mut Cursor,
    token: &str,
    last_event_id: Option<u64>,
    reconnect: &mut Reconnect,
) -> End {
    let stats = &ctx.stats;
    let failed = |e: ClientError| {
        let retry_after = match &e {
            ClientError::Status {
                retry_after: Some(s),
                ..
            } => Some(Duration::from_secs(*s)),
            _ => None,
        };
        stats.error("stream", &e);
        End::Failed(retry_after)
    };
    let opened = ctx
        .edge(g)
        .open_stream(&room.name, cursor.after, last_event_id, token)
        .await;
    let mut body = match opened {
        Err(e) => {
            reconnect.failed();
            return failed(e);
        }
        Ok(Opened::Page(page)) => {
            stats.stream_pages.fetch_add(1, Relaxed);
            stats.poll_requests.fetch_add(1, Relaxed);
            return End::Page(cursor.read_page(ctx, room, &page, Instant::now()));
        }
        Ok(Opened::Stream(body)) => body,
    };
    stats.streams_opened.fetch_add(1, Relaxed);
    reconnect.opened();
    let mut parser = SseParser::new();
    let mut events: Vec<Event> = Vec::new();
    loop {
        let chunk = match timeout(STREAM_IDLE, body.chunk()).await {
            Err(_) => return failed(ClientError::Timeout),
            Ok(Err(e)) => return failed(e),
            Ok(Ok(None)) => {
                stats.stream_ends.fetch_add(1, Relaxed);
                return End::Ended;
            }
            Ok(Ok(Some(chunk))) => chunk,
        };
        let mut bad: Option<ClientError> = None;
        let parsed = parser.feed(&chunk, &mut |item| match item {
            _ if bad.is_some() => {}
            SseItem::Retry(hint) => reconnect.set_hint(hint),
            SseItem::Comment => {}
            SseItem::Event(e) if e.is_default() => match read_event(&e.data, e.id.as_deref()) {
                Ok(ev) => events.push(ev),
                Err(e) => bad = Some(e),
            },
            // `members`: the room's members, which the check does not use.
            SseItem::Event(_) => {}
        });
        if !events.is_empty() {
            stats.stream_events.fetch_add(events.len() as u64, Relaxed);
            cursor.read(ctx, room, &events, Instant::now());
            events.clear();
        }
        if let Err(e) = parsed {
            return failed(ClientError::Decode(e.to_string()));
        }
        if let Some(e) = bad {
            // Reconnecting from the last good event asks for it again.
            return failed(e);
        }
    }
}

/// A default event: one log event as JSON, its `id` its seq.
fn read_event(data: &str, id: Option<&str>) -> Result<Event, ClientError> {
    let ev: Event = serde_json::from_str(data).map_err(|e| ClientError::Decode(e.to_string()))?;
    match id.map(str::parse::<u64>) {
        Some(Ok(seq)) if seq == ev.seq => Ok(ev),
        _ => Err(ClientError::Decode(format!(
            "event seq {} under id {id:?}",
            ev.seq
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_delays_are_jittered_and_bounded() {
        let mut r = Reconnect::new(1);
        for _ in 0..100 {
            let d = r.delay(None);
            assert!(
                d >= Duration::from_secs(1) && d < Duration::from_secs(3),
                "{d:?}"
            );
        }
        r.hint = Duration::from_millis(100);
        r.failures = 3;
        for _ in 0..100 {
            let d = r.delay(None);
            assert!(d >= Duration::from_millis(200) && d < Duration::from_millis(600));
        }
        r.failures = 1000;
        assert!(r.delay(None) < MAX_RETRY.mul_f64(1.5));
        r.failures = 0;
        r.hint = Duration::ZERO;
        assert!(r.delay(None) >= MIN_RETRY / 2);
        let d = r.delay(Some(Duration::from_secs(5)));
        assert!(d >= Duration::from_millis(2500), "{d:?}");
    }

    #[test]
    fn events_need_their_seq_as_id() {
        let data = r#"{"seq":5,"kind":"message","member_id":"m","nick":"n","text":"t","at_ms":0}"#;
        assert_eq!(read_event(data, Some("5")).unwrap().seq, 5);
        assert!(read_event(data, Some("6")).is_err());
        assert!(read_event(data, None).is_err());
        assert!(read_event("{", Some("5")).is_err());
    }
}
