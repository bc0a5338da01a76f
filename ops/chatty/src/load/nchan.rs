//! `chatty load --nchan`: the same load against nginx + nchan, for
//! comparison. Each room is an nchan channel (`<run tag>-<room>`, so every
//! run starts on empty channels); there are no joins, tokens or heartbeats.
//! A guest subscribes with nchan's long-poll (`--transport hold`: `GET
//! <sub>/<channel>` carrying `If-Modified-Since` and `If-None-Match` from the
//! previous answer's `Last-Modified` and `Etag`) or EventSource (`--transport
//! stream`: `Accept: text/event-stream`, `Last-Event-ID` on reconnect). A
//! sender publishes `POST <pub>/<channel>` with a [`Published`] body: its
//! per-room sequence number stands in for the API's seq, so the checker and
//! the delivery histogram (publish acknowledged → seen) are the chat runs'.
//!
//! What the server must be (nginx + nchan, as `ops/bench/push.sh` writes
//! it): a publisher location under `--nchan-pub`, a subscriber location
//! under `--nchan-sub` (`nchan_subscriber longpoll` with
//! `nchan_subscriber_timeout` the hold wait, or `eventsource`), and
//! `nchan_subscriber_first_message oldest` (the default) with a message
//! buffer that holds a room's whole run: a subscriber starts from the
//! channel's first message, whenever it comes.

use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::header::{
    HeaderMap, ACCEPT, CONTENT_TYPE, ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED,
};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Mutex as AsyncMutex};
use tokio::time::{sleep, sleep_until, timeout, Instant};

use super::checker::Reader;
use super::edge::{is_event_stream, status_error, EventStream};
use super::generator::{lock, Ctx, POLL_JITTER};
use super::plan::Transport;
use super::sse::{SseItem, SseParser};
use super::stream::{Reconnect, STREAM_IDLE};
use crate::client::ClientError;

/// Attempts for one publish: a retry may store the message twice (nchan has
/// nothing like the API's `client_id`), which the check then reports.
const PUBLISH_ATTEMPTS: u32 = 3;

/// The body of a published message (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    /// The sending guest.
    pub from: u32,
    /// The sender's message number (1, 2, …).
    pub n: u32,
    /// The room's sequence number: 1, 2, … in publish order.
    pub seq: u64,
    /// When it was sent, Unix milliseconds (for a reader of the raw
    /// channel; latencies are measured on the generator's clock).
    pub sent_ms: u64,
}

/// A client for one nchan server, connecting from one source address.
/// Cheap to clone.
#[derive(Clone, Debug)]
pub struct NchanClient {
    http: reqwest::Client,
    /// `{base}{--nchan-pub}`: a channel id is appended.
    pub_prefix: Arc<str>,
    /// `{base}{--nchan-sub}`.
    sub_prefix: Arc<str>,
    /// Time to the answer's head (a long-poll gets its wait on top).
    timeout: Duration,
}

/// Where a long-poll subscriber is in its channel: the previous answer's
/// `Last-Modified` and `Etag`, sent back as `If-Modified-Since` and
/// `If-None-Match` (none at first: the oldest buffered message).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LongPollCursor {
    pub last_modified: Option<String>,
    pub etag: Option<String>,
}

impl LongPollCursor {
    /// Takes what an answer says of the position (nchan's `408` at the end
    /// of the wait carries an `Etag` and no `Last-Modified`: the old one
    /// stays).
    fn update(&mut self, headers: &HeaderMap) {
        let get = |name| {
            headers
                .get(name)
                .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
        };
        if let Some(v) = get(LAST_MODIFIED) {
            self.last_modified = Some(v.to_owned());
        }
        if let Some(v) = get(ETAG) {
            self.etag = Some(v.to_owned());
        }
    }
}

/// The answer to a long-poll.
#[derive(Debug)]
pub enum LongPoll {
    /// `200`: the next message.
    Message(Bytes),
    /// `408`: the subscriber timeout ended the wait with no message.
    Timeout,
    /// `304`: no message and no wait (an interval-poll location).
    NotModified,
}

impl NchanClient {
    /// A client for `base`, publishing under `pub_path` and subscribing
    /// under `sub_path`, connecting from `source` when given, keeping up to
    /// `idle` connections for reuse.
    pub fn new(
        base: &str,
        pub_path: &str,
        sub_path: &str,
        source: Option<IpAddr>,
        timeout: Duration,
        idle: usize,
    ) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(idle)
            .local_address(source)
            .build()
            .map_err(|e| ClientError::Other(e.to_string()))?;
        let base = base.trim_end_matches('/');
        Ok(Self {
            http,
            pub_prefix: format!("{base}{pub_path}").into(),
            sub_prefix: format!("{base}{sub_path}").into(),
            timeout,
        })
    }

    /// Publishes `body` to `channel`: `201` (subscribers present) or `202`
    /// (none) is acknowledged.
    pub async fn publish(&self, channel: &str, body: Vec<u8>) -> Result<(), ClientError> {
        let resp = self
            .http
            .post(format!("{}{channel}", self.pub_prefix))
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "text/json")
            .body(body)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(ClientError::from_reqwest)?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map_err(ClientError::from_reqwest)?;
        match status {
            StatusCode::CREATED | StatusCode::ACCEPTED => Ok(()),
            _ => Err(status_error(status, &headers, &body)),
        }
    }

    /// One long-poll from `cursor`, which moves on with the answer; `wait`
    /// is what the server holds it at most (its subscriber timeout).
    pub async fn long_poll(
        &self,
        channel: &str,
        cursor: &mut LongPollCursor,
        wait: Duration,
    ) -> Result<LongPoll, ClientError> {
        let mut req = self
            .http
            .get(format!("{}{channel}", self.sub_prefix))
            .timeout(self.timeout + wait);
        if let Some(v) = &cursor.last_modified {
            req = req.header(IF_MODIFIED_SINCE, v.as_str());
        }
        if let Some(v) = &cursor.etag {
            req = req.header(IF_NONE_MATCH, v.as_str());
        }
        let resp = req.send().await.map_err(ClientError::from_reqwest)?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map_err(ClientError::from_reqwest)?;
        match status {
            StatusCode::OK => {
                cursor.update(&headers);
                Ok(LongPoll::Message(body))
            }
            StatusCode::REQUEST_TIMEOUT => {
                cursor.update(&headers);
                Ok(LongPoll::Timeout)
            }
            StatusCode::NOT_MODIFIED => Ok(LongPoll::NotModified),
            _ => Err(status_error(status, &headers, &body)),
        }
    }

    /// Opens `channel`'s EventSource stream, from after `last_event_id`
    /// when given (a reconnect), else from the oldest buffered message.
    pub async fn event_source(
        &self,
        channel: &str,
        last_event_id: Option<&str>,
    ) -> Result<EventStream, ClientError> {
        let mut req = self
            .http
            .get(format!("{}{channel}", self.sub_prefix))
            .header(ACCEPT, "text/event-stream");
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let resp = match timeout(self.timeout, req.send()).await {
            Err(_) => return Err(ClientError::Timeout),
            Ok(r) => r.map_err(ClientError::from_reqwest)?,
        };
        let status = resp.status();
        if status == StatusCode::OK && is_event_stream(resp.headers()) {
            return Ok(EventStream::new(resp));
        }
        let headers = resp.headers().clone();
        let body = match timeout(self.timeout, resp.bytes()).await {
            Err(_) => return Err(ClientError::Timeout),
            Ok(b) => b.map_err(ClientError::from_reqwest)?,
        };
        let status = if status == StatusCode::OK {
            // A 200 that is not a stream: not what an eventsource
            // location answers.
            return Err(ClientError::Decode(format!(
                "200 without text/event-stream: {:?}",
                String::from_utf8_lossy(&body[..body.len().min(100)])
            )));
        } else {
            status
        };
        Err(status_error(status, &headers, &body))
    }
}

/// The nchan side of a run: clients, and per room its channel and the
/// publishing turn.
pub struct Nchan {
    /// One client per source address; guest `g` uses `clients[g % len]`.
    clients: Vec<NchanClient>,
    /// Channel id of each room.
    channels: Vec<String>,
    /// Per room, the last sequence number published. Held across the
    /// publish, so nchan receives a room's messages in sequence order (two
    /// publishes in flight at once could arrive the other way round).
    published: Vec<AsyncMutex<u64>>,
}

impl Nchan {
    /// The channels of `rooms` (names) for the run tagged `run_tag`.
    pub fn new(clients: Vec<NchanClient>, run_tag: &str, rooms: &[String]) -> Self {
        assert!(!clients.is_empty(), "a run needs at least one client");
        Self {
            clients,
            channels: rooms.iter().map(|r| channel_id(run_tag, r)).collect(),
            published: rooms.iter().map(|_| AsyncMutex::new(0)).collect(),
        }
    }

    fn client(&self, g: u32) -> &NchanClient {
        &self.clients[g as usize % self.clients.len()]
    }
}

/// A room's channel: the run tag keeps runs apart (and nchan's
/// `nchan_subscriber_first_message oldest` then starts at the run's first
/// message). Word characters and `-` only.
pub fn channel_id(run_tag: &str, room: &str) -> String {
    format!("{run_tag}-{room}")
}

/// Parses a message body; `None` if it is not a [`Published`].
pub fn read_published(body: &[u8]) -> Option<Published> {
    serde_json::from_slice(body).ok()
}

/// Guest `g` sends its next message, due at `due`: publishes it with the
/// room's next sequence number and, once acknowledged, tells the room's log
/// (as a chat send's 201 does).
pub(super) async fn publish_task(ctx: Arc<Ctx>, g: u32, due: Instant) {
    let Some(nchan) = ctx.nchan.as_ref() else {
        return;
    };
    let guest = &ctx.guests[g as usize];
    let room_idx = guest.room as usize;
    let n = guest.sent.fetch_add(1, Relaxed) + 1;
    let mut last = nchan.published[room_idx].lock().await;
    let seq = *last + 1;
    let sent_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let body = serde_json::to_vec(&Published {
        from: g,
        n,
        seq,
        sent_ms,
    })
    .expect("a Published serialises");
    let channel = &nchan.channels[room_idx];
    let mut acked = false;
    // Whether nchan may hold the message although no attempt was
    // acknowledged: then its seq is spent (readers would see a gap, or it).
    let mut maybe_stored = false;
    for attempt in 1..=PUBLISH_ATTEMPTS {
        match nchan.client(g).publish(channel, body.clone()).await {
            Ok(()) => {
                acked = true;
                break;
            }
            Err(e) => {
                ctx.stats.error("send", &e);
                maybe_stored |= !matches!(e, ClientError::Status { .. });
                // A timed-out publish may have been stored: no retry.
                if attempt == PUBLISH_ATTEMPTS
                    || !e.is_transient()
                    || matches!(e, ClientError::Timeout)
                {
                    break;
                }
                sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
        }
    }
    if acked || maybe_stored {
        *last = seq;
    }
    drop(last);
    if !acked {
        return;
    }
    let now = Instant::now();
    ctx.stats.sends_acked.fetch_add(1, Relaxed);
    lock(&ctx.stats.send_latency).record(now - due);
    let room = &ctx.rooms[room_idx];
    let mut zeros = 0u32;
    lock(&room.log).acknowledge(g, n, seq, now, |_| zeros += 1);
    if zeros > 0 {
        let mut h = lock(&ctx.stats.delivery_latency);
        for _ in 0..zeros {
            h.record(Duration::ZERO);
        }
    }
}

/// What one subscriber has read, checked as it reads.
struct Seen {
    reader: Reader,
    samples: Vec<Duration>,
}

impl Seen {
    /// `messages` (in the order shown) reached the guest at `now`.
    fn read(&mut self, ctx: &Ctx, room_idx: usize, messages: &[Published], now: Instant) {
        let samples = &mut self.samples;
        samples.clear();
        {
            let mut log = lock(&ctx.rooms[room_idx].log);
            let mut record = |d| samples.push(d);
            for m in messages {
                log.observe_one(
                    &mut self.reader,
                    m.seq,
                    Some((m.from, m.n)),
                    now,
                    &mut record,
                );
            }
        }
        if !samples.is_empty() {
            let mut h = lock(&ctx.stats.delivery_latency);
            for d in samples.iter() {
                h.record(*d);
            }
        }
    }
}

/// One subscriber: starts at `start_at`, reads its room's channel by the
/// run's transport until told to stop; answers what it read, for the check.
pub(super) async fn subscriber_task(
    ctx: Arc<Ctx>,
    g: u32,
    start_at: Instant,
    mut stop: watch::Receiver<bool>,
) -> Option<Reader> {
    sleep_until(start_at).await;
    let nchan = ctx.nchan.as_ref()?;
    let guest = &ctx.guests[g as usize];
    let room_idx = guest.room as usize;
    // The channel is new and read from its first message: the reader
    // expects every seq from 1.
    let mut seen = Seen {
        reader: Reader::new(g, 0),
        samples: Vec::new(),
    };
    ctx.stats.joined.fetch_add(1, Relaxed);
    guest.started.store(true, Relaxed);
    let client = nchan.client(g);
    let channel = &nchan.channels[room_idx];
    let sub = Sub {
        ctx: &ctx,
        client,
        channel,
        room_idx,
        g,
    };
    match ctx.plan.transport {
        Transport::Hold => sub.long_polls(&mut seen, &mut stop).await,
        Transport::Stream => sub.event_source(&mut seen, &mut stop).await,
        // Refused with --nchan (LoadArgs::validate).
        Transport::Poll => {}
    }
    Some(seen.reader)
}

/// What a subscriber's loops share.
struct Sub<'a> {
    ctx: &'a Ctx,
    client: &'a NchanClient,
    channel: &'a str,
    room_idx: usize,
    g: u32,
}

/// Runs `work` unless told to stop first (`None`).
async fn unless_stopped<T>(
    stop: &mut watch::Receiver<bool>,
    work: impl std::future::Future<Output = T>,
) -> Option<T> {
    if *stop.borrow() {
        return None;
    }
    tokio::select! {
        out = work => Some(out),
        _ = stop.changed() => None,
    }
}

impl Sub<'_> {
    /// `--transport hold`: long-polls one after another; after a failure or
    /// a `304` (a location that does not hold), a jittered poll interval
    /// first, as the chat runs' held polls do.
    async fn long_polls(&self, seen: &mut Seen, stop: &mut watch::Receiver<bool>) {
        let ctx = self.ctx;
        let stats = &ctx.stats;
        let mut rng = StdRng::seed_from_u64(ctx.plan.seed ^ u64::from(self.g) << 20);
        let mut cursor = LongPollCursor::default();
        let wait = ctx.plan.hold_wait;
        loop {
            let due = Instant::now();
            if due >= ctx.window_start && due < ctx.window_end {
                stats.polls_due_in_window.fetch_add(1, Relaxed);
            }
            let poll = self.client.long_poll(self.channel, &mut cursor, wait);
            let Some(answer) = unless_stopped(stop, poll).await else {
                return;
            };
            let now = Instant::now();
            let again_at_once = match answer {
                Ok(answer) => {
                    stats.poll_requests.fetch_add(1, Relaxed);
                    stats.polls.fetch_add(1, Relaxed);
                    lock(&stats.poll_latency).record(now - due);
                    match answer {
                        LongPoll::Message(body) => {
                            match read_published(&body) {
                                Some(m) => seen.read(ctx, self.room_idx, &[m], now),
                                None => stats.error("poll", &undecodable(&body)),
                            }
                            true
                        }
                        LongPoll::Timeout => {
                            stats.poll_304.fetch_add(1, Relaxed);
                            true
                        }
                        LongPoll::NotModified => {
                            stats.poll_304.fetch_add(1, Relaxed);
                            false
                        }
                    }
                }
                Err(e) => {
                    stats.error("poll", &e);
                    false
                }
            };
            if again_at_once {
                continue;
            }
            let factor = rng.gen_range(1.0 - POLL_JITTER..=1.0 + POLL_JITTER);
            let backoff = sleep(ctx.plan.poll_interval.mul_f64(factor));
            if unless_stopped(stop, backoff).await.is_none() {
                return;
            }
        }
    }

    /// `--transport stream`: EventSource streams one after another, each
    /// reconnect carrying the last event's id as `Last-Event-ID`, after the
    /// jittered delay of the chat runs' streams.
    async fn event_source(&self, seen: &mut Seen, stop: &mut watch::Receiver<bool>) {
        let stats = &self.ctx.stats;
        let seed = self.ctx.plan.seed ^ u64::from(self.g) << 20;
        let mut reconnect = Reconnect::new(seed);
        let mut last_id: Option<String> = None;
        let mut first = true;
        loop {
            if !first {
                stats.stream_reconnects.fetch_add(1, Relaxed);
            }
            first = false;
            let read = self.read_stream(seen, &mut last_id, &mut reconnect);
            let Some(retry_after) = unless_stopped(stop, read).await else {
                return;
            };
            let delay = reconnect.delay(retry_after);
            if unless_stopped(stop, sleep(delay)).await.is_none() {
                return;
            }
        }
    }

    /// One EventSource request, read to its end; answers a `Retry-After`
    /// when a failure carried one.
    async fn read_stream(
        &self,
        seen: &mut Seen,
        last_id: &mut Option<String>,
        reconnect: &mut Reconnect,
    ) -> Option<Duration> {
        let stats = &self.ctx.stats;
        let failed = |e: ClientError| {
            let retry_after = match &e {
                ClientError::Status {
                    retry_after: Some(s),
                    ..
                } => Some(Duration::from_secs(*s)),
                _ => None,
            };
            stats.error("stream", &e);
            retry_after
        };
        let mut body = match self
            .client
            .event_source(self.channel, last_id.as_deref())
            .await
        {
            Ok(body) => body,
            Err(e) => {
                reconnect.failed();
                return failed(e);
            }
        };
        stats.streams_opened.fetch_add(1, Relaxed);
        reconnect.opened();
        let mut parser = SseParser::new();
        let mut messages: Vec<Published> = Vec::new();
        loop {
            let chunk = match timeout(STREAM_IDLE, body.chunk()).await {
                Err(_) => return failed(ClientError::Timeout),
                Ok(Err(e)) => return failed(e),
                Ok(Ok(None)) => {
                    stats.stream_ends.fetch_add(1, Relaxed);
                    return None;
                }
                Ok(Ok(Some(chunk))) => chunk,
            };
            let mut bad: Option<ClientError> = None;
            let parsed = parser.feed(&chunk, &mut |item| match item {
                _ if bad.is_some() => {}
                SseItem::Retry(hint) => reconnect.set_hint(hint),
                SseItem::Comment => {}
                SseItem::Event(e) if e.is_default() => match read_published(e.data.as_bytes()) {
                    Some(m) => {
                        messages.push(m);
                        *last_id = e.id;
                    }
                    None => bad = Some(undecodable(e.data.as_bytes())),
                },
                // nchan's `event: ping` (nchan_eventsource_ping_interval).
                SseItem::Event(_) => {}
            });
            if !messages.is_empty() {
                stats
                    .stream_events
                    .fetch_add(messages.len() as u64, Relaxed);
                seen.read(self.ctx, self.room_idx, &messages, Instant::now());
                messages.clear();
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
}

fn undecodable(body: &[u8]) -> ClientError {
    ClientError::Decode(format!(
        "not a published message: {:?}",
        String::from_utf8_lossy(&body[..body.len().min(100)])
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn published_round_trips() {
        let m = Published {
            from: 3,
            n: 2,
            seq: 17,
            sent_ms: 1_700_000_000_000,
        };
        let body = serde_json::to_vec(&m).unwrap();
        assert_eq!(read_published(&body), Some(m));
        assert_eq!(read_published(b"{\"a\":1}"), None);
        assert_eq!(read_published(b"hello"), None);
    }

    #[test]
    fn channels_are_per_run() {
        assert_eq!(channel_id("L1p2", "load-3"), "L1p2-load-3");
        assert_ne!(channel_id("L1p2", "load-3"), channel_id("L1p3", "load-3"));
    }

    #[test]
    fn the_long_poll_cursor_follows_the_answers() {
        let mut c = LongPollCursor::default();
        let mut h = HeaderMap::new();
        h.insert(
            LAST_MODIFIED,
            HeaderValue::from_static("Mon, 07 Dec 2026 16:09:41 GMT"),
        );
        h.insert(ETAG, HeaderValue::from_static("0"));
        c.update(&h);
        assert_eq!(
            c.last_modified.as_deref(),
            Some("Mon, 07 Dec 2026 16:09:41 GMT")
        );
        assert_eq!(c.etag.as_deref(), Some("0"));
        // nchan's 408: an Etag, no Last-Modified.
        let mut t = HeaderMap::new();
        t.insert(ETAG, HeaderValue::from_static("1"));
        c.update(&t);
        assert_eq!(
            c.last_modified.as_deref(),
            Some("Mon, 07 Dec 2026 16:09:41 GMT")
        );
        assert_eq!(c.etag.as_deref(), Some("1"));
    }
}
