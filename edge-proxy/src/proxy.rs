//! The `ProxyHttp`: answers an unchanged poll with 304 from the version map
//! (holding it first while it prefers to wait, until its room moves), a poll
//! one message behind from the page cache, forwards everything else to a
//! healthy API node (one fetch per room, version and page at a time), and
//! learns room versions (and pages) from the answers it forwards.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use chatty_shared::parse_decimal;
use chatty_shared::{if_none_match, RoomVersion};
use chatty_shared::{parse_room_path, Resource};
use http::{header, Method};
use pingora::http::ResponseHeader;
use pingora::prelude::{HttpPeer, ProxyHttp, Session};
use pingora::proxy::FailToProxy;
use pingora::{Error, ErrorType};

use crate::fetch::Fetcher;
use crate::flights::{follow, Flight, FlightKey, Flights, Seat};
use crate::hold::{preferred_wait, Holds, Parked, Woken};
use crate::metrics::{metrics, Rejection, Release};
use crate::pages::{PageCache, MAX_PAGE_BYTES};
use crate::presence::{bearer, Here, Presence};
use crate::refusal::Refusal;
use crate::stream::{last_event_id, wants_stream, StreamRoom, Streams};
use crate::upstreams::{self, Upstreams};
use crate::versions::{Known, Refresh, RoomHash, Tick, VersionMap};

/// Connect timeout to an API node.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest wait for an API node's next bytes.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest life of an idle pooled connection to an API node.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Routes of the API nodes for the edge alone, refused to clients.
const INTERNAL: &str = "/v1/internal/";
/// Most nodes one idempotent request is tried on.
const MAX_TRIES: usize = 3;
/// Added to the time a held poll sleeps before it looks at the map again,
/// so it wakes past the map's millisecond boundary.
const LOOK_SLACK: Duration = Duration::from_millis(1);

/// What happened to a request, for `chatty_edge_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Outcome {
    #[default]
    Forwarded,
    ShortCircuit,
    /// A 200 from the page cache.
    Cached,
    Rejected,
    /// A held poll whose client went away: nothing to answer.
    Gone,
    /// An event stream.
    Streamed,
}

/// A forwarded poll's answer on its way into the page cache.
#[derive(Debug)]
struct PageFill {
    after: u64,
    version: RoomVersion,
    body: BytesMut,
}

/// Per-request state.
#[derive(Debug, Default)]
pub struct Ctx {
    room: Option<(RoomHash, Resource)>,
    outcome: Outcome,
    /// When the request was last sent to a node: the authority vouches for
    /// the version in its answer from that moment on.
    sent_at: Option<Tick>,
    upstream_start: Option<Instant>,
    tried: Vec<SocketAddr>,
    body_bytes: u64,
    /// `after` of a `GET …/messages` whose answer may be kept as a page.
    after: Option<u64>,
    fill: Option<PageFill>,
    /// The wait applied to a poll that was held (`Preference-Applied`).
    held: Option<Duration>,
    /// The fetch this request makes for the polls that follow it.
    flight: Option<Flight>,
    /// The map vouches for a newer version than the poll names: asked
    /// without its `If-None-Match`, so that a node that has not yet heard
    /// of the move reads the room instead of answering `304`.
    unconditional: bool,
    /// When the edge heard of the move that released this held poll.
    moved_at: Option<tokio::time::Instant>,
    /// The guest this held poll or stream keeps present.
    here: Option<Here>,
}

/// How holding a poll ended.
enum Held {
    /// Decide again: its part moved, or the map's word is due for a look.
    Again,
    /// Answer `304` now.
    Answer,
    /// The client closed the connection.
    Gone,
}

/// What the map and the If-None-Match of a poll say, before the page cache.
enum Decision {
    /// Unchanged: `304` with this version (at once, or after holding it).
    NotModified(Known),
    /// The map vouches for another version than the one asked about.
    Changed(Known),
    /// The map does not vouch for the room now.
    Unknown,
}

/// The edge's proxy logic.
pub struct EdgeProxy {
    map: Arc<VersionMap>,
    holds: Arc<Holds>,
    flights: Arc<Flights>,
    pages: Arc<PageCache>,
    streams: Streams,
    presence: Arc<Presence>,
    upstreams: Arc<Upstreams>,
    max_body_bytes: u64,
    not_modified: ResponseHeader,
}

impl EdgeProxy {
    /// `page_cache_bytes` bounds the page cache (0: none); `holds` keeps
    /// the polls and streams parked until their room moves; `presence`
    /// gathers the guests they keep present.
    pub fn new(
        (map, holds, presence): (Arc<VersionMap>, Arc<Holds>, Arc<Presence>),
        (upstreams, fetcher): (Arc<Upstreams>, Arc<Fetcher>),
        max_body_bytes: u64,
        page_cache_bytes: usize,
    ) -> Self {
        let mut not_modified = ResponseHeader::build(304, Some(2)).expect("static status");
        not_modified
            .insert_header(header::CACHE_CONTROL, "no-cache")
            .expect("static header");
        let flights = Arc::new(Flights::default());
        let pages = Arc::new(PageCache::new(page_cache_bytes));
        Self {
            streams: Streams::new(map.clone(), pages.clone(), flights.clone(), fetcher),
            map,
            holds,
            flights,
            pages,
            presence,
            upstreams,
            max_body_bytes,
            not_modified,
        }
    }

    /// Answers a poll from the page cache; false when there is no page of
    /// `after` for `version`, the room's current one.
    async fn serve_page(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        key: RoomHash,
        after: u64,
        version: RoomVersion,
    ) -> pingora::Result<bool> {
        let Some(body) = self.pages.get(key, after, version) else {
            return Ok(false);
        };
        let mut resp = ResponseHeader::build(200, Some(5))?;
        resp.insert_header(header::CONTENT_TYPE, "application/json")?;
        resp.insert_header(header::CONTENT_LENGTH, body.len())?;
        resp.insert_header(header::CACHE_CONTROL, "no-cache")?;
        resp.insert_header(header::ETAG, version.etag().as_str())?;
        applied(&mut resp, ctx)?;
        session.write_response_header(Box::new(resp), false).await?;
        pushed(ctx);
        session.write_response_body(Some(body), true).await?;
        Ok(true)
    }

    /// Answers `304` with `known`'s ETag.
    async fn not_modified(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        known: Known,
    ) -> pingora::Result<()> {
        let mut resp = Box::new(self.not_modified.clone());
        resp.insert_header(header::ETAG, known.etag().as_str())?;
        applied(&mut resp, ctx)?;
        ctx.outcome = Outcome::ShortCircuit;
        session.write_response_header(resp, true).await
    }

    /// What the map says of a poll and its If-None-Match.
    fn decide(&self, session: &Session, key: RoomHash, part: Resource) -> Decision {
        // One look at the map: `None` (unknown, stale, or this request
        // re-confirms the entry) means forward.
        let now = self.map.now();
        let Some(known) = self.map.answerable(key, part, now, Refresh::Claim) else {
            return Decision::Unknown;
        };
        let asked = session
            .req_header()
            .headers
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .map(|v| v.as_bytes());
        if if_none_match(asked, known.etag().as_bytes()) {
            Decision::NotModified(known)
        } else {
            Decision::Changed(known)
        }
    }

    /// Holds an unchanged poll that prefers to wait until `until`, taking
    /// its place among the held ones on the first call (none left: it is
    /// answered at once).
    async fn hold(
        &self,
        session: &mut Session,
        (parked, ctx): (&mut Option<Parked>, &mut Ctx),
        (key, part, known): (RoomHash, Resource, Known),
        (until, wait): (Instant, Duration),
    ) -> Held {
        if parked.is_none() {
            *parked = self.holds.park(key, part);
            if parked.is_some() {
                ctx.held = Some(wait);
            }
        }
        let Some(place) = parked.as_ref() else {
            return Held::Answer;
        };
        let now = self.map.now();
        let look = self.map.settled_for(key, part, now).unwrap_or_default();
        let next = until.min(Instant::now() + look + LOOK_SLACK);
        let unchanged = || {
            self.map
                .answerable(key, part, self.map.now(), Refresh::Leave)
                == Some(known)
        };
        // A GET has no body: any read ends only when the client goes away.
        let woken = tokio::select! {
            woken = place.wait(next.into(), unchanged) => Some(woken),
            _ = session.read_body_or_idle(true) => None,
        };
        let (why, held) = match woken {
            Some(Woken::Moved) => return Held::Again,
            Some(Woken::Timer) if Instant::now() < until => return Held::Again,
            Some(Woken::Timer) => (Release::Timeout, Held::Answer),
            Some(Woken::Closing) => (Release::Shutdown, Held::Answer),
            None => (Release::Gone, Held::Gone),
        };
        *parked = None;
        metrics().release(why);
        held
    }

    /// Answers a `GET` of a room part: `304` (held first while it prefers to
    /// `wait`), a page from the cache, or (false) forwarded; a miss first
    /// waits for a fetch of the same page in flight.
    async fn answer_poll(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        (key, part): (RoomHash, Resource),
        wait: Option<Duration>,
    ) -> pingora::Result<bool> {
        let until = wait.map(|w| (Instant::now() + w, w));
        let mut parked = None;
        let mut followed = false;
        loop {
            let known = match self.decide(session, key, part) {
                Decision::NotModified(known) => {
                    let held = match until {
                        Some(until) => {
                            let poll = (key, part, known);
                            self.hold(session, (&mut parked, ctx), poll, until).await
                        }
                        None => Held::Answer,
                    };
                    match held {
                        Held::Again => continue,
                        Held::Answer => self.not_modified(session, ctx, known).await?,
                        Held::Gone => {
                            session.set_keepalive(None);
                            ctx.outcome = Outcome::Gone;
                        }
                    }
                    return Ok(true);
                }
                Decision::Changed(known) => Some(known),
                Decision::Unknown => None,
            };
            if let Some(place) = parked.take() {
                ctx.moved_at = place.last_move();
                metrics().release(Release::Moved);
            }
            let version = match known {
                Some(Known::Messages(v)) => Some(v),
                _ => None,
            };
            let Some(after) = ctx.after else {
                return Ok(false);
            };
            if let Some(v) = version {
                if self.serve_page(session, ctx, key, after, v).await? {
                    ctx.outcome = Outcome::Cached;
                    return Ok(true);
                }
            }
            if followed {
                return Ok(false);
            }
            match self.flights.board(FlightKey {
                room: key,
                after,
                version,
            }) {
                Seat::Lead(flight) => {
                    ctx.flight = Some(flight);
                    ctx.unconditional = version.is_some();
                    return Ok(false);
                }
                Seat::Follow(landed) => {
                    follow(landed).await;
                    followed = true;
                }
            }
        }
    }

    /// Learns the version (and maybe the page) in a forwarded answer.
    fn learn(&self, upstream_response: &ResponseHeader, ctx: &mut Ctx) {
        let (Some((key, part)), Some(at)) = (ctx.room, ctx.sent_at) else {
            return;
        };
        if !matches!(upstream_response.status.as_u16(), 200 | 201 | 304) {
            return;
        }
        let Some(etag) = upstream_response.headers.get(header::ETAG) else {
            return;
        };
        let Ok(etag) = std::str::from_utf8(etag.as_bytes()) else {
            return;
        };
        let Some(Known::Messages(v)) = self.map.observe_etag(key, part, etag, at) else {
            return;
        };
        let whole_page = upstream_response
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|n| {
                std::str::from_utf8(n.as_bytes())
                    .ok()?
                    .parse::<usize>()
                    .ok()
            })
            .is_some_and(|n| n <= MAX_PAGE_BYTES);
        if let (200, Some(after), true) = (upstream_response.status.as_u16(), ctx.after, whole_page)
        {
            ctx.fill = Some(PageFill {
                after,
                version: v,
                body: BytesMut::new(),
            });
        }
    }
}

/// Counts the push latency of a held poll released by a move, as its first
/// byte goes out.
fn pushed(ctx: &mut Ctx) {
    if let Some(at) = ctx.moved_at.take() {
        metrics().push.observe(at.elapsed().as_secs_f64());
    }
}

/// Says `Preference-Applied: wait=S` on the answer to a poll that was held.
fn applied(resp: &mut ResponseHeader, ctx: &Ctx) -> pingora::Result<()> {
    if let Some(wait) = ctx.held {
        resp.insert_header("preference-applied", format!("wait={}", wait.as_secs()))?;
    }
    Ok(())
}

/// `after` of a poll's query, when the query is nothing else (`after=N`, or
/// none: 0). Any other query is not a cacheable poll.
pub fn poll_after(query: Option<&str>) -> Option<u64> {
    let Some(q) = query.filter(|q| !q.is_empty()) else {
        return Some(0);
    };
    parse_decimal(q.strip_prefix("after=")?)
}

fn content_length(session: &Session) -> Option<u64> {
    let v = session.req_header().headers.get(header::CONTENT_LENGTH)?;
    std::str::from_utf8(v.as_bytes()).ok()?.trim().parse().ok()
}

#[async_trait]
impl ProxyHttp for EdgeProxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::default()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> pingora::Result<bool> {
        if content_length(session).is_some_and(|n| n > self.max_body_bytes) {
            ctx.outcome = Outcome::Rejected;
            metrics().reject(Rejection::BodyTooLarge);
            Refusal::BODY_TOO_LARGE.respond(session).await;
            return Ok(true);
        }
        let req = session.req_header();
        if req.uri.path().starts_with(INTERNAL) {
            ctx.outcome = Outcome::Rejected;
            Refusal::INTERNAL.respond(session).await;
            return Ok(true);
        }
        let Some(path) = parse_room_path(req.uri.path()) else {
            return Ok(false);
        };
        let Some(part) = path.resource(req.method.as_str()) else {
            return Ok(false);
        };
        let key = self.map.room_hash(path.site, path.room);
        ctx.room = Some((key, part));
        if req.method != Method::GET {
            return Ok(false);
        }
        let headers = &req.headers;
        let accept = headers.get_all(header::ACCEPT).iter().map(|v| v.as_bytes());
        let streaming = part == Resource::Messages && wants_stream(accept);
        let prefer = headers.get_all("prefer").iter().map(|v| v.as_bytes());
        let wait = preferred_wait(prefer);
        if streaming || wait.is_some() {
            let token = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| bearer(v.as_bytes()));
            ctx.here = token.map(|t| self.presence.arrive(key, (path.site, path.room), t));
        }
        if part == Resource::Messages {
            let resume = last_event_id(headers.get("last-event-id").map(|v| v.as_bytes()));
            ctx.after = resume.filter(|_| streaming).or(poll_after(req.uri.query()));
        }
        if let (true, Some(after)) = (streaming, ctx.after) {
            if let Some(parked) = self.holds.park_stream(key) {
                let room = StreamRoom {
                    key,
                    base: format!("/v1/sites/{}/rooms/{}", path.site, path.room),
                };
                ctx.outcome = Outcome::Streamed;
                self.streams.serve(session, &room, after, parked).await?;
                return Ok(true);
            }
        }
        self.answer_poll(session, ctx, (key, part), wait).await
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        if let Some(b) = body {
            ctx.body_bytes += b.len() as u64;
            if ctx.body_bytes > self.max_body_bytes {
                ctx.outcome = Outcome::Rejected;
                metrics().reject(Rejection::BodyTooLarge);
                return Refusal::BODY_TOO_LARGE.err();
            }
        }
        Ok(())
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut Ctx,
    ) -> pingora::Result<Box<HttpPeer>> {
        let Some(addr) = upstreams::pick(&self.upstreams, &ctx.tried) else {
            return Refusal::NO_HEALTHY_NODE.err();
        };
        ctx.tried.push(addr);
        let mut peer = HttpPeer::new(addr, false, String::new());
        peer.options.connection_timeout = Some(CONNECT_TIMEOUT);
        peer.options.read_timeout = Some(READ_TIMEOUT);
        peer.options.idle_timeout = Some(IDLE_TIMEOUT);
        ctx.upstream_start.get_or_insert_with(Instant::now);
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        // A failed connect means the request reached no node, so any method
        // (a send too) is safe to try on another one.
        if ctx.tried.len() < MAX_TRIES {
            tracing::debug!(peer = %peer, error = %e, "connect failed; trying another node");
            e.set_retry(true);
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut pingora::http::RequestHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        if let Some(ip) = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip())
        {
            let forwarded = match upstream_request.headers.get("x-forwarded-for") {
                Some(prior) => format!("{}, {ip}", String::from_utf8_lossy(prior.as_bytes())),
                None => ip.to_string(),
            };
            upstream_request.insert_header("x-forwarded-for", forwarded)?;
        }
        if ctx.unconditional {
            upstream_request.remove_header(&header::IF_NONE_MATCH);
        }
        ctx.sent_at = Some(self.map.now());
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        applied(upstream_response, ctx)?;
        pushed(ctx);
        self.learn(upstream_response, ctx);
        // Followers of this fetch look again now, unless a page is coming.
        if ctx.fill.is_none() {
            ctx.flight = None;
        }
        Ok(())
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> pingora::Result<Option<Duration>> {
        if let Some(fill) = ctx.fill.as_mut() {
            if let Some(b) = body {
                fill.body.extend_from_slice(b);
            }
            if fill.body.len() > MAX_PAGE_BYTES {
                ctx.fill = None;
                ctx.flight = None;
            } else if end_of_stream {
                if let Some(fill) = ctx.fill.take() {
                    if let Some((key, _)) = ctx.room {
                        self.pages
                            .put(key, fill.after, fill.version, fill.body.freeze());
                        metrics().page_cache_bytes.set(self.pages.bytes() as i64);
                        if let Some(flight) = &ctx.flight {
                            flight.kept(fill.version);
                        }
                    }
                }
                ctx.flight = None;
            }
        }
        Ok(None)
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, _ctx: &mut Ctx) -> FailToProxy {
        let refusal = Refusal::of_error(e);
        if let Some(refusal) = refusal {
            refusal.respond(session).await;
        }
        FailToProxy {
            error_code: refusal.map_or(0, |r| r.status),
            can_reuse_downstream: false,
        }
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &Ctx, error: &Error) -> bool {
        // Expected refusals: counted in metrics and visible on /readyz; a
        // log line per poll during an outage would drown everything else.
        matches!(error.etype(), ErrorType::HTTPStatus(503 | 413))
    }

    async fn logging(&self, _session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        let m = metrics();
        match (ctx.outcome, e) {
            (Outcome::ShortCircuit, _) => m.short_circuit.inc(),
            (Outcome::Cached, _) => m.cached.inc(),
            (Outcome::Rejected | Outcome::Gone | Outcome::Streamed, _) => {}
            (Outcome::Forwarded, None) => m.forwarded.inc(),
            (Outcome::Forwarded, Some(_)) => m.error.inc(),
        }
        if let Some(start) = ctx.upstream_start {
            m.upstream_duration.observe(start.elapsed().as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cacheable_poll_queries() {
        assert_eq!(poll_after(None), Some(0));
        assert_eq!(poll_after(Some("")), Some(0));
        assert_eq!(poll_after(Some("after=17")), Some(17));
        for other in [
            "after=",
            "after=-1",
            "after=1&limit=5",
            "limit=5",
            "after=1x",
            "after=+1",
            "after=99999999999999999999999",
        ] {
            assert_eq!(poll_after(Some(other)), None, "{other}");
        }
    }
}
