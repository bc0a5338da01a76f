//! Event streams: `GET …/messages` with `Accept: text/event-stream`,
//! answered by the edge as Server-Sent Events from the same version map,
//! page cache and single fetches as polls.
//!
//! # What a stream carries
//!
//! `retry:` first; then the room's members (`event: members`, the members
//! list) and every log event after the cursor (`id:` its seq, `data:` the
//! event as in a page); then, while open, each new event as the room moves,
//! the members whenever they change (at most once per [`MEMBERS_EVERY`]),
//! and a comment every [`KEEPALIVE`]. The cursor starts at `Last-Event-ID`,
//! else `after`, and only moves forward: no gap, no duplicate. When the edge
//! stops or no API node answers, the stream ends with a `retry:` hint and
//! the client comes back (to this edge or another) with its last id.
//!
//! # Where the events come from
//!
//! A stream parks on both parts of its room ([`Holds::park_stream`]) and
//! reads only when the map says a part moved. Its events come from the
//! room's tail ([`Tails`]) when its cursor lies in it: the tail is brought
//! forward by one page, after the tail's end, fetched once for every stream
//! of the room and framed once. A stream outside the tail (new, or far
//! behind) reads the page after its own cursor from the page cache, else
//! from one fetch per (room, after, version) shared with every poll and
//! stream that wants it ([`Flights`]); that page starts the tail when the
//! room has none. While the map cannot vouch for the room (no bus), a stream
//! asks an API node itself every [`UNKNOWN_PACE`], with `If-None-Match`, as
//! a poll would.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use chatty_shared::wire::{Event, MessagesPage};
use chatty_shared::{parse_decimal, Resource, RoomVersion};
use http::header;
use pingora::http::ResponseHeader;
use pingora::prelude::Session;
use tokio::time::Instant;

use crate::fetch::{Answer, FetchError, Fetcher};
use crate::flights::{follow, Flight, FlightKey, Flights, Seat};
use crate::hold::{Parked, Woken};
use crate::metrics::{metrics, StreamEnd};
use crate::pages::{PageCache, MAX_PAGE_BYTES};
use crate::refusal::Refusal;
use crate::tails::{Chunk, Reach, Tails};

mod members;
use crate::versions::{Known, Refresh, RoomHash, VersionMap};

/// A comment this often keeps intermediaries from closing a quiet stream.
pub const KEEPALIVE: Duration = Duration::from_secs(15);
/// How often a stream asks a node itself while the map cannot vouch.
pub const UNKNOWN_PACE: Duration = Duration::from_secs(2);
/// Members sent at most this often (a join or leave moves them).
pub const MEMBERS_EVERY: Duration = Duration::from_secs(1);
/// The reconnect hint at the start, in milliseconds.
const RETRY_MS: u64 = 2000;
/// The reconnect hint when the edge stops: soon, to another edge.
const RETRY_STOPPING_MS: u64 = 250;
/// Longest a write may wait for a client that does not read.
const WRITE_LIMIT: Duration = Duration::from_secs(30);
/// Budget of the rooms' tails kept for streams.
const TAILS_BYTES: usize = 32 << 20;
/// How long a stream stays open while every read of its room fails (a node
/// answers 503, or none answers); past it the stream ends with a `retry:`
/// hint, and its client comes back, to this edge or another.
const FAILING_LIMIT: Duration = Duration::from_secs(10);
/// Budget of the members lists kept framed for streams, and the largest
/// kept.
const MEMBERS_CACHE_BYTES: usize = 16 << 20;
const MAX_MEMBERS_BYTES: usize = 512 << 10;
/// Added to the time a stream sleeps before it looks at the map again.
const LOOK_SLACK: Duration = Duration::from_millis(1);

/// True when the request asks for an event stream.
pub fn wants_stream<'a>(accept: impl IntoIterator<Item = &'a [u8]>) -> bool {
    accept.into_iter().any(|v| {
        v.split(|b| *b == b',').any(|t| {
            let t = t.split(|b| *b == b';').next().unwrap_or_default();
            t.trim_ascii().eq_ignore_ascii_case(b"text/event-stream")
        })
    })
}

/// The seq of `Last-Event-ID`, if it is one.
pub fn last_event_id(value: Option<&[u8]>) -> Option<u64> {
    parse_decimal(std::str::from_utf8(value?).ok()?.trim())
}

/// What [`Streams::bring_forward`] did.
enum Forward {
    /// The tail moved (maybe past the version asked for).
    Moved,
    /// No page yet: the fetch it followed kept none.
    NotYet,
    /// The tail cannot be brought forward by one page.
    Cannot,
}

/// Why a stream could not be read.
enum Failed {
    /// A node answered something other than a page (404, 503, …): passed on
    /// to a client that has no stream yet.
    Refused(Answer),
    /// No node answered.
    NoNode(FetchError),
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failed::Refused(a) => write!(f, "a node answered {}", a.status),
            Failed::NoNode(e) => e.fmt(f),
        }
    }
}

impl From<FetchError> for Failed {
    fn from(e: FetchError) -> Self {
        Failed::NoNode(e)
    }
}

/// A page read for a stream: `None` body for a `304`.
struct Page {
    version: Option<RoomVersion>,
    body: Option<Bytes>,
    /// The fetch this stream led, landed (its followers told) when dropped.
    _flight: Option<Flight>,
}

/// Where one stream is in its room.
struct Cursor {
    /// Seq of the last event sent.
    seq: u64,
    /// The version read up to, once a whole page said it.
    version: Option<RoomVersion>,
    /// The members version sent, and the earliest time they are read
    /// again.
    members: Option<u64>,
    members_next: Instant,
}

/// The room a stream reads.
pub struct StreamRoom {
    pub key: RoomHash,
    /// `/v1/sites/{site}/rooms/{room}`.
    pub base: String,
}

/// What the edge's streams share. See the module docs.
pub struct Streams {
    map: Arc<VersionMap>,
    pages: Arc<PageCache>,
    flights: Arc<Flights>,
    tails: Tails,
    members: PageCache,
    member_flights: Arc<Flights>,
    fetcher: Arc<Fetcher>,
}

impl Streams {
    pub fn new(
        map: Arc<VersionMap>,
        pages: Arc<PageCache>,
        flights: Arc<Flights>,
        fetcher: Arc<Fetcher>,
    ) -> Self {
        Self {
            map,
            pages,
            flights,
            tails: Tails::new(TAILS_BYTES),
            members: PageCache::with_limit(MEMBERS_CACHE_BYTES, MAX_MEMBERS_BYTES),
            member_flights: Arc::default(),
            fetcher,
        }
    }

    /// Serves one stream from `after` until the client goes, the edge
    /// stops or no node answers.
    pub async fn serve(
        &self,
        session: &mut Session,
        room: &StreamRoom,
        after: u64,
        parked: Parked,
    ) -> pingora::Result<()> {
        let mut cursor = Cursor {
            seq: after,
            version: None,
            members: None,
            members_next: Instant::now(),
        };
        // The first read comes before the header, so that a room the API
        // does not know, or no node at all, is answered as a poll would be.
        let mut out = BytesMut::new();
        // What the map vouches for lets the first page come from the cache
        // (or the fetch in flight for it) like any other.
        let known =
            match self
                .map
                .answerable(room.key, Resource::Messages, self.map.now(), Refresh::Leave)
            {
                Some(Known::Messages(v)) => Some(v),
                _ => None,
            };
        match self.read(room, &mut cursor, known, &mut out).await {
            Ok(()) => {}
            Err(Failed::Refused(answer)) => return pass_on(session, answer).await,
            Err(Failed::NoNode(e)) => {
                tracing::debug!(error = %e, "no node for a new stream");
                Refusal::NO_HEALTHY_NODE.respond(session).await;
                return Ok(());
            }
        }
        self.members_if_moved(room, &mut cursor, &mut out).await;
        session
            .write_response_header(Box::new(stream_header()?), false)
            .await?;
        let mut head = BytesMut::new();
        retry(&mut head, RETRY_MS);
        head.extend_from_slice(&out);
        if !write(session, head.freeze()).await {
            metrics().stream_end(StreamEnd::Gone);
            return Ok(());
        }
        let end = self.follow_room(session, room, &mut cursor, &parked).await;
        metrics().stream_end(end);
        if end != StreamEnd::Gone {
            let mut bye = BytesMut::new();
            retry(&mut bye, RETRY_STOPPING_MS);
            let _ = tokio::time::timeout(
                WRITE_LIMIT,
                session.write_response_body(Some(bye.freeze()), true),
            )
            .await;
        }
        Ok(())
    }

    /// Writes what the room's moves bring until the stream ends.
    async fn follow_room(
        &self,
        session: &mut Session,
        room: &StreamRoom,
        cursor: &mut Cursor,
        parked: &Parked,
    ) -> StreamEnd {
        let key = room.key;
        let mut keepalive = Instant::now() + KEEPALIVE;
        // When the map's word is due for a look: kept across wake-ups, so
        // that wakes which bring nothing (a bus that keeps reconnecting)
        // cannot put the look off.
        let mut look_at = self.next_look(key);
        // Since when every read failed.
        let mut failing: Option<Instant> = None;
        loop {
            let (messages, members) = (cursor.version, cursor.members);
            let members_next = cursor.members_next;
            let members_moved =
                || match self
                    .map
                    .answerable(key, Resource::Members, self.map.now(), Refresh::Leave)
                {
                    Some(Known::Members(v)) => Some(v) != members,
                    _ => false,
                };
            // Until the members may be sent again (at most one list a
            // second), the stream does not listen to their moves, and looks
            // at them once that time comes.
            let members_wait = Instant::now() < members_next;
            let until = match members_wait {
                true => keepalive.min(look_at).min(members_next),
                false => keepalive.min(look_at),
            };
            // After a failed read, the messages wait for the look.
            let backing_off = failing.is_some();
            let unchanged = || {
                let now = self.map.now();
                let same_messages = backing_off
                    || match self
                        .map
                        .answerable(key, Resource::Messages, now, Refresh::Leave)
                    {
                        Some(Known::Messages(v)) => !newer(v, messages),
                        _ => true,
                    };
                same_messages && !(members_moved() && Instant::now() >= members_next)
            };
            let wait = async {
                match members_wait {
                    true => parked.wait_for_messages(until, unchanged).await,
                    false => parked.wait(until, unchanged).await,
                }
            };
            let woken = tokio::select! {
                woken = wait => woken,
                _ = session.read_body_or_idle(true) => return StreamEnd::Gone,
            };
            let mut out = BytesMut::new();
            if woken == Woken::Closing {
                return StreamEnd::Shutdown;
            }
            let due = Instant::now() >= look_at;
            if Instant::now() >= keepalive {
                out.extend_from_slice(b": keepalive\n\n");
                keepalive = Instant::now() + KEEPALIVE;
            }
            let moved = match backing_off && !due {
                true => None,
                false => self.moved(key, cursor, due),
            };
            if let Some(known) = moved {
                match self.read(room, cursor, known, &mut out).await {
                    Ok(()) => {
                        failing = None;
                        look_at = self.next_look(key);
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "a stream could not read its room");
                        let since = *failing.get_or_insert_with(Instant::now);
                        if since.elapsed() >= FAILING_LIMIT {
                            return StreamEnd::Upstream;
                        }
                        // What was read before the failure still goes out
                        // (the cursor stands after it); the rest is read
                        // again at the next move, or at the unknown pace.
                        look_at = Instant::now() + UNKNOWN_PACE;
                    }
                }
            } else if due {
                look_at = self.next_look(key);
            }
            self.members_if_moved(room, cursor, &mut out).await;
            if out.is_empty() {
                continue;
            }
            let pushed = (woken == Woken::Moved)
                .then(|| parked.last_move())
                .flatten();
            if !write(session, out.freeze()).await {
                return StreamEnd::Gone;
            }
            if let Some(at) = pushed {
                metrics().push.observe(at.elapsed().as_secs_f64());
            }
        }
    }

    /// When to look at the map again without a wake-up: once its word on
    /// the room's messages is due for a refresh, or at the unknown pace.
    fn next_look(&self, key: RoomHash) -> Instant {
        let look = self
            .map
            .settled_for(key, Resource::Messages, self.map.now())
            .map_or(UNKNOWN_PACE, |d| d + LOOK_SLACK);
        Instant::now() + look
    }

    /// Whether the messages must be read after a wake-up: `Some(version)`
    /// the map vouches for (a move), `Some(None)` when it does not and the
    /// look is `due` (read from a node, with `If-None-Match`, as a poll
    /// would, which also renews the map's word).
    fn moved(&self, key: RoomHash, cursor: &Cursor, due: bool) -> Option<Option<RoomVersion>> {
        // Only a look that is due may take on the refresh of the map's word.
        let refresh = if due { Refresh::Claim } else { Refresh::Leave };
        match self
            .map
            .answerable(key, Resource::Messages, self.map.now(), refresh)
        {
            Some(Known::Messages(v)) if !newer(v, cursor.version) => None,
            Some(Known::Messages(v)) => Some(Some(v)),
            _ if due || cursor.version.is_none() => Some(None),
            _ => None,
        }
    }

    /// Reads the events after the cursor, page after page, into `out`;
    /// `known` is the version the map vouches for, if any.
    async fn read(
        &self,
        room: &StreamRoom,
        cursor: &mut Cursor,
        mut known: Option<RoomVersion>,
        out: &mut BytesMut,
    ) -> Result<(), Failed> {
        // The tail's end when this read last brought it forward: again
        // only while that moves it (a fetch it followed may have kept an
        // older page than the map's version).
        let mut brought: Option<RoomVersion> = None;
        loop {
            let (key, after) = (room.key, cursor.seq);
            if let Some(v) = known {
                match self.tails.reach(key, after, v) {
                    Reach::Framed(framed, at) => {
                        out.extend_from_slice(&framed);
                        cursor.seq = at.seq;
                        cursor.version = Some(at);
                        return Ok(());
                    }
                    Reach::Behind(end) if brought.is_none_or(|b| b.seq < end.seq) => {
                        brought = Some(end);
                        match self.bring_forward(room, end, v).await? {
                            Forward::Moved => continue,
                            // No page yet (the fetch it followed failed):
                            // the next wake or look reads it.
                            Forward::NotYet => return Ok(()),
                            Forward::Cannot => {}
                        }
                    }
                    Reach::Behind(_) | Reach::Outside => {}
                }
            }
            // Conditional only when the cursor stands exactly at a version.
            let have = cursor.version.filter(|v| v.seq == after);
            let page = self.page(room, after, have, known).await?;
            let Some(body) = &page.body else {
                return Ok(());
            };
            let page_of = parse_page(body)?;
            let chunk = frame_page(&page_of, after);
            out.extend_from_slice(chunk.bytes());
            cursor.seq = cursor.seq.max(page_of.seq);
            if !page_of.more {
                cursor.version = page.version;
                if let Some(v) = page.version {
                    self.tails.put(key, after, v, chunk);
                }
                return Ok(());
            }
            known = None;
        }
    }

    /// Brings the room's tail from `end` to `v` with the page after `end`:
    /// one fetch for every stream of the room, framed by the one that led
    /// it while the others wait for the tail.
    async fn bring_forward(
        &self,
        room: &StreamRoom,
        end: RoomVersion,
        v: RoomVersion,
    ) -> Result<Forward, Failed> {
        let page = self.page(room, end.seq, Some(end), Some(v)).await?;
        if matches!(self.tails.reach(room.key, end.seq, v), Reach::Framed(..)) {
            return Ok(Forward::Moved);
        }
        let Some(body) = &page.body else {
            return Ok(Forward::NotYet);
        };
        let page_of = parse_page(body)?;
        match (page_of.more, page.version) {
            (false, Some(to)) => {
                self.tails
                    .put(room.key, end.seq, to, frame_page(&page_of, end.seq));
                Ok(Forward::Moved)
            }
            // More than a page came at once: each stream reads on its own.
            _ => Ok(Forward::Cannot),
        }
    }

    /// The page after `after`: from the cache at `known`, else from the
    /// fetch in flight for it, else from a node: conditional on `have` only
    /// when the map cannot vouch for the room (a node that has not yet
    /// heard of a move the edge heard of would answer `304`).
    async fn page(
        &self,
        room: &StreamRoom,
        after: u64,
        have: Option<RoomVersion>,
        known: Option<RoomVersion>,
    ) -> Result<Page, Failed> {
        let key = room.key;
        let have = have.filter(|_| known.is_none());
        let cached = |v: RoomVersion| {
            self.pages.get(key, after, v).map(|body| Page {
                version: Some(v),
                body: Some(body),
                _flight: None,
            })
        };
        if let Some(page) = known.and_then(cached) {
            return Ok(page);
        }
        // Follow the fetch in flight. When it lands with nothing kept (it
        // failed, or its page was too large to keep), the stream has
        // nothing yet and reads again at its next wake or look, when one
        // stream leads again: the others never all ask the nodes at once,
        // which under load turned one failed fetch into thousands.
        let flight = match self.flights.board(FlightKey {
            room: key,
            after,
            version: known,
        }) {
            Seat::Lead(flight) => flight,
            Seat::Follow(landed) => {
                return Ok(follow(landed).await.and_then(cached).unwrap_or(Page {
                    version: None,
                    body: None,
                    _flight: None,
                }))
            }
        };
        let etag = have.map(|v| v.etag());
        let sent_at = self.map.now();
        let path = format!("{}/messages?after={after}", room.base);
        let answer = self
            .fetcher
            .get(&path, etag.as_ref().map(|e| e.as_str()))
            .await?;
        let version = match answer
            .etag
            .as_deref()
            .and_then(|e| self.map.observe_etag(key, Resource::Messages, e, sent_at))
        {
            Some(Known::Messages(v)) => Some(v),
            _ => None,
        };
        match answer.status {
            200 => {
                if let (Some(v), true) = (version, answer.body.len() <= MAX_PAGE_BYTES) {
                    self.pages.put(key, after, v, answer.body.clone());
                    flight.kept(v);
                }
                Ok(Page {
                    version,
                    body: Some(answer.body),
                    _flight: Some(flight),
                })
            }
            304 => Ok(Page {
                version: version.or(have),
                body: None,
                _flight: Some(flight),
            }),
            _ => Err(Failed::Refused(answer)),
        }
    }
}

/// The header of a stream.
fn stream_header() -> pingora::Result<ResponseHeader> {
    let mut resp = ResponseHeader::build(200, Some(5))?;
    resp.insert_header(header::CONTENT_TYPE, "text/event-stream")?;
    // Never stored: a stream has no validator and no end.
    resp.insert_header(header::CACHE_CONTROL, "no-store")?;
    resp.insert_header("x-accel-buffering", "no")?;
    resp.insert_header(header::TRANSFER_ENCODING, "chunked")?;
    Ok(resp)
}

/// Answers a request that gets no stream with what the node said.
async fn pass_on(session: &mut Session, answer: Answer) -> pingora::Result<()> {
    let mut resp = ResponseHeader::build(answer.status, Some(4))?;
    resp.insert_header(header::CONTENT_TYPE, "application/json")?;
    resp.insert_header(header::CONTENT_LENGTH, answer.body.len())?;
    if let Some(r) = answer.retry_after {
        resp.insert_header(header::RETRY_AFTER, r)?;
    }
    session.set_keepalive(None);
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(answer.body), true).await
}

/// Writes part of a stream; false when the client is gone or stopped
/// reading.
async fn write(session: &mut Session, bytes: Bytes) -> bool {
    let written = session.write_response_body(Some(bytes), false);
    matches!(tokio::time::timeout(WRITE_LIMIT, written).await, Ok(Ok(())))
}

fn retry(out: &mut BytesMut, ms: u64) {
    let _ = write!(out, "retry: {ms}\n\n");
}

/// Whether the map's `version` is past what a stream has read: a stream
/// may be ahead of the map, having read a tail the map has not heard of.
fn newer(version: RoomVersion, read: Option<RoomVersion>) -> bool {
    read.is_none_or(|r| r.epoch != version.epoch || r.seq < version.seq)
}

/// A page a node answered, or why it is not one.
fn parse_page(body: &[u8]) -> Result<MessagesPage, Failed> {
    serde_json::from_slice(body).map_err(|_| {
        tracing::warn!("an API node answered a page that is not one");
        Failed::NoNode(FetchError::NoNode)
    })
}

/// The page's events after `after`, framed.
fn frame_page(page: &MessagesPage, after: u64) -> Chunk {
    let mut chunk = Chunk::default();
    for event in page.events.iter().filter(|e| e.seq > after) {
        chunk.push(event.seq, |out| frame_event(out, event));
    }
    chunk
}

/// One log event: `id:` its seq, `data:` the event as in a page.
fn frame_event(out: &mut BytesMut, event: &Event) {
    let _ = write!(out, "id: {}\ndata: ", event.seq);
    serde_json::to_writer((&mut *out).writer(), event).expect("an event serialises");
    out.extend_from_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    use super::members::frame_members;
    use super::*;
    use chatty_shared::wire::EventKind;

    #[test]
    fn who_wants_a_stream() {
        let yes = |v: &str| wants_stream([v.as_bytes()]);
        assert!(yes("text/event-stream"));
        assert!(yes("application/json, TEXT/Event-Stream;q=0.9"));
        assert!(!yes("application/json"));
        assert!(!yes("text/event-streams"));
        assert!(!wants_stream([]));
        assert_eq!(last_event_id(Some(b" 42 ")), Some(42));
        assert_eq!(last_event_id(Some(b"x")), None);
        assert_eq!(last_event_id(None), None);
    }

    #[test]
    fn frames() {
        let mut out = BytesMut::new();
        retry(&mut out, 2000);
        let event = Event {
            seq: 7,
            kind: EventKind::Message,
            member_id: "m1".into(),
            nick: "ann".into(),
            text: "two\nlines".into(),
            client_id: Some("c1".into()),
            deletes: None,
            at_ms: 1,
        };
        frame_event(&mut out, &event);
        frame_members(&mut out, b"{\"members\":\n[]}");
        let text = std::str::from_utf8(&out).unwrap();
        assert_eq!(
            text,
            "retry: 2000\n\nid: 7\ndata: {\"seq\":7,\"kind\":\"message\",\"member_id\":\"m1\",\"nick\":\"ann\",\"text\":\"two\\nlines\",\"client_id\":\"c1\",\"at_ms\":1}\n\nevent: members\ndata: {\"members\": []}\n\n"
        );
    }
}
