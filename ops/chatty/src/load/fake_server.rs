//! A tiny in-memory Chatty API (HTTP/1.1 over tokio, keep-alive) for the
//! load generator's own tests: join, poll with ETags (held while the room is
//! quiet when asked with `Prefer: wait=S`), the edge's event stream (chunked,
//! events cut across chunks, ended after a while like an edge that stops,
//! and sometimes a JSON page instead as from a full edge), idempotent sends,
//! heartbeat, leave — a fault switch that hides one seq from readers, and a
//! record of the peer addresses that connected and of what was asked.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chatty_shared::wire::{Event, EventKind, JoinResponse, Member, MessagesPage, SendRequest};
use chatty_shared::RoomVersion;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::time::{sleep_until, Instant};

#[derive(Default)]
struct Room {
    events: Vec<Event>,
    by_client_id: HashMap<String, u64>,
}

#[derive(Default)]
struct State {
    rooms: HashMap<String, Room>,
    /// Readers are never shown this seq (a server bug the checker must see).
    hide_seq: Option<u64>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Woken on every send, so held polls look again.
    moved: Notify,
    /// Every address a connection came from.
    peers: Mutex<BTreeSet<IpAddr>>,
    /// Polls that asked to be held.
    held: AtomicU64,
    /// Of those, the ones that carried a token.
    held_with_token: AtomicU64,
    /// Heartbeats received.
    heartbeats: AtomicU64,
    /// Stream requests received.
    streams: AtomicU64,
    /// Stream requests that carried `Last-Event-ID`.
    resumed: AtomicU64,
    /// Answer polls at once whatever they prefer, as RFC 7240 allows.
    ignore_wait: bool,
    streaming: Streaming,
}

/// How the fake edge streams.
#[derive(Debug, Clone, Copy)]
pub struct Streaming {
    /// Each stream ends this long after it opened (with `retry:` first).
    pub life: Duration,
    /// The `retry:` it sends.
    pub retry_ms: u64,
    /// Every n-th stream request (0: none) is answered with a JSON page.
    pub page_every: u64,
}

impl Default for Streaming {
    fn default() -> Self {
        Self {
            life: Duration::from_secs(3600),
            retry_ms: 2000,
            page_every: 0,
        }
    }
}

/// A running fake server.
pub struct FakeServer {
    /// Its base URL.
    pub base: String,
    shared: Arc<Shared>,
}

impl FakeServer {
    /// The addresses connections came from so far.
    pub fn peers(&self) -> BTreeSet<IpAddr> {
        self.shared.peers.lock().unwrap().clone()
    }

    /// How many polls asked to be held (`Prefer: wait`), held or not.
    pub fn held(&self) -> u64 {
        self.shared.held.load(Relaxed)
    }

    /// How many of those carried `Authorization`.
    pub fn held_with_token(&self) -> u64 {
        self.shared.held_with_token.load(Relaxed)
    }

    /// How many heartbeats came.
    pub fn heartbeats(&self) -> u64 {
        self.shared.heartbeats.load(Relaxed)
    }

    /// Stream requests, and those of them with `Last-Event-ID`.
    pub fn streams(&self) -> (u64, u64) {
        (
            self.shared.streams.load(Relaxed),
            self.shared.resumed.load(Relaxed),
        )
    }
}

/// Starts the server on a free port.
pub async fn start(hide_seq: Option<u64>) -> FakeServer {
    start_with(hide_seq, false, Streaming::default()).await
}

/// Starts a server that never holds a poll (and never says
/// `Preference-Applied`).
pub async fn start_ignoring_wait() -> FakeServer {
    start_with(None, true, Streaming::default()).await
}

/// Starts a server whose streams go as `streaming` says.
pub async fn start_streaming(hide_seq: Option<u64>, streaming: Streaming) -> FakeServer {
    start_with(hide_seq, false, streaming).await
}

async fn start_with(hide_seq: Option<u64>, ignore_wait: bool, streaming: Streaming) -> FakeServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shared = Arc::new(Shared {
        ignore_wait,
        streaming,
        ..Shared::default()
    });
    shared.state.lock().unwrap().hide_seq = hide_seq;
    let accepting = shared.clone();
    tokio::spawn(async move {
        while let Ok((stream, peer)) = listener.accept().await {
            accepting.peers.lock().unwrap().insert(peer.ip());
            let shared = accepting.clone();
            tokio::spawn(async move {
                let _ = serve(stream, shared).await;
            });
        }
    });
    FakeServer {
        base: format!("http://{addr}"),
        shared,
    }
}

/// The parts of a request the routes look at.
#[derive(Default)]
struct Request {
    method: String,
    target: String,
    inm: Option<String>,
    auth: Option<String>,
    /// `Prefer: wait=S`.
    wait: Option<Duration>,
    /// `Accept: text/event-stream`.
    sse: bool,
    last_event_id: Option<u64>,
    body: Vec<u8>,
}

async fn read_request<R>(r: &mut BufReader<R>) -> std::io::Result<Option<Request>>
where
    R: tokio::io::AsyncRead + Unpin,
{
    let mut line = String::new();
    if r.read_line(&mut line).await? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let mut req = Request {
        method: parts.next().unwrap_or("").to_owned(),
        target: parts.next().unwrap_or("").to_owned(),
        ..Request::default()
    };
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        r.read_line(&mut h).await?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (name, value) = h.split_once(':').unwrap_or((h, ""));
        let value = value.trim().to_owned();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => len = value.parse().unwrap_or(0),
            "if-none-match" => req.inm = Some(value),
            "authorization" => req.auth = Some(value),
            "accept" => req.sse = value.contains("text/event-stream"),
            "last-event-id" => req.last_event_id = value.parse().ok(),
            "prefer" => {
                let secs = value.strip_prefix("wait=").and_then(|s| s.parse().ok());
                req.wait = secs.map(Duration::from_secs);
            }
            _ => {}
        }
    }
    req.body = vec![0; len];
    r.read_exact(&mut req.body).await?;
    Ok(Some(req))
}

async fn serve(stream: tokio::net::TcpStream, shared: Arc<Shared>) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    while let Some(req) = read_request(&mut r).await? {
        if req.method == "GET" && req.sse {
            let n = shared.streams.fetch_add(1, Relaxed) + 1;
            if req.last_event_id.is_some() {
                shared.resumed.fetch_add(1, Relaxed);
            }
            let every = shared.streaming.page_every;
            if every == 0 || !n.is_multiple_of(every) {
                return serve_stream(&mut w, &shared, &req).await;
            }
        }
        if req.method == "POST" && req.target.ends_with("/heartbeat") {
            shared.heartbeats.fetch_add(1, Relaxed);
        }
        let held = match (&req.wait, &req.inm) {
            (Some(wait), Some(inm)) if req.method == "GET" => {
                shared.held.fetch_add(1, Relaxed);
                if req.auth.is_some() {
                    shared.held_with_token.fetch_add(1, Relaxed);
                }
                if shared.ignore_wait {
                    None
                } else {
                    hold(&shared, &req.target, inm, *wait).await;
                    Some(wait.as_secs())
                }
            }
            _ => None,
        };
        let (status, etag, out) = route(&mut shared.state.lock().unwrap(), &req);
        if req.method == "POST" {
            shared.moved.notify_waiters();
        }
        let mut head = format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\n", out.len());
        if let Some(tag) = etag {
            head.push_str(&format!("etag: {tag}\r\n"));
        }
        if let Some(secs) = held {
            head.push_str(&format!("preference-applied: wait={secs}\r\n"));
        }
        head.push_str("\r\n");
        let mut whole = head.into_bytes();
        whole.extend_from_slice(&out);
        w.write_all(&whole).await?;
    }
    Ok(())
}

/// Writes `bytes` as one chunk of a chunked body.
async fn chunk<W: tokio::io::AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    let mut out = format!("{:x}\r\n", bytes.len()).into_bytes();
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
    w.write_all(&out).await?;
    w.flush().await
}

/// Serves an event stream as the contract says, from `Last-Event-ID` (or
/// `after`) until its life ends; each batch of events goes out in two
/// chunks cut in the middle of a line. The connection closes after it.
async fn serve_stream<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    shared: &Shared,
    req: &Request,
) -> std::io::Result<()> {
    let Some((room, _, query)) = parse_target(&req.target) else {
        return Ok(());
    };
    let after = query.strip_prefix("after=").and_then(|a| a.parse().ok());
    let mut cursor: u64 = req.last_event_id.or(after).unwrap_or(0);
    let cfg = shared.streaming;
    w.write_all(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\
          transfer-encoding: chunked\r\n\r\n",
    )
    .await?;
    let start = format!(
        "retry: {}\n\nevent: members\ndata: {{\"members\":[]}}\n\n: keepalive\n\n",
        cfg.retry_ms
    );
    chunk(w, start.as_bytes()).await?;
    let deadline = Instant::now() + cfg.life;
    loop {
        let moved = shared.moved.notified();
        tokio::pin!(moved);
        moved.as_mut().enable();
        let mut text = String::new();
        {
            let mut st = shared.state.lock().unwrap();
            let hide = st.hide_seq;
            let r = st.rooms.entry(room.to_owned()).or_default();
            for ev in r.events.iter().skip(cursor as usize) {
                if Some(ev.seq) != hide {
                    let json = serde_json::to_string(ev).unwrap();
                    text.push_str(&format!("id: {}\ndata: {json}\n\n", ev.seq));
                }
                cursor = ev.seq;
            }
        }
        if !text.is_empty() {
            let (a, b) = text.as_bytes().split_at(text.len() / 2);
            chunk(w, a).await?;
            chunk(w, b).await?;
        }
        tokio::select! {
            _ = moved => {}
            _ = sleep_until(deadline) => break,
        }
    }
    chunk(w, format!("retry: {}\n", cfg.retry_ms).as_bytes()).await?;
    w.write_all(b"0\r\n\r\n").await?;
    w.flush().await
}

/// Holds a poll while its room's version is still `inm`, until the room
/// moves or `wait` ends.
async fn hold(shared: &Shared, target: &str, inm: &str, wait: Duration) {
    let deadline = Instant::now() + wait;
    let Some((room, _, _)) = parse_target(target) else {
        return;
    };
    loop {
        let moved = shared.moved.notified();
        tokio::pin!(moved);
        moved.as_mut().enable();
        let quiet = {
            let st = shared.state.lock().unwrap();
            st.rooms.get(room).map(version).as_deref() == Some(inm)
        };
        if !quiet {
            return;
        }
        tokio::select! {
            _ = moved => {}
            _ = sleep_until(deadline) => return,
        }
    }
}

fn version(room: &Room) -> String {
    RoomVersion::new(1, room.events.len() as u64)
        .etag()
        .as_str()
        .to_owned()
}

/// `/v1/sites/demo/rooms/{room}/{action}?{query}` → (room, action, query).
fn parse_target(target: &str) -> Option<(&str, &str, &str)> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let ["v1", "sites", "demo", "rooms", room, action] = parts[..] else {
        return None;
    };
    Some((room, action, query))
}

type Answer = (u16, Option<String>, Vec<u8>);

fn route(st: &mut State, req: &Request) -> Answer {
    let Some((room, action, query)) = parse_target(&req.target) else {
        return (404, None, b"{}".to_vec());
    };
    let hide = st.hide_seq;
    let r = st.rooms.entry(room.to_owned()).or_default();
    let nick = req
        .auth
        .as_deref()
        .and_then(|a| a.strip_prefix("Bearer tok-"))
        .map(str::to_owned);
    match (req.method.as_str(), action) {
        ("POST", "join") => join(r, &req.body),
        ("GET", "messages") => messages(r, req.inm.as_deref(), query, hide),
        ("POST", "messages") => match nick {
            Some(nick) => send(r, nick, &req.body),
            None => (401, None, b"{}".to_vec()),
        },
        ("POST", "heartbeat" | "leave") if nick.is_some() => (204, None, Vec::new()),
        _ => (404, None, b"{}".to_vec()),
    }
}

fn join(r: &Room, body: &[u8]) -> Answer {
    let req: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let nick = req["nick"].as_str().unwrap_or("x").to_owned();
    let resp = JoinResponse {
        token: format!("tok-{nick}"),
        member: Member {
            id: nick.clone(),
            nick,
        },
        messages: Vec::new(),
        members: Vec::new(),
        members_count: 0,
        seq: r.events.len() as u64,
        etag: version(r),
        moderator: false,
        members_etag: "\"m1\"".into(),
        token_ttl_secs: 3600,
    };
    (200, Some(version(r)), serde_json::to_vec(&resp).unwrap())
}

fn messages(r: &Room, inm: Option<&str>, query: &str, hide: Option<u64>) -> Answer {
    let tag = version(r);
    if inm == Some(tag.as_str()) {
        return (304, Some(tag), Vec::new());
    }
    let after: u64 = query
        .strip_prefix("after=")
        .and_then(|a| a.parse().ok())
        .unwrap_or(0);
    let events: Vec<Event> = r
        .events
        .iter()
        .skip(after as usize)
        .take(100)
        .filter(|e| Some(e.seq) != hide)
        .cloned()
        .collect();
    let last = (after + 100).min(r.events.len() as u64).max(after);
    let page = MessagesPage {
        more: last < r.events.len() as u64,
        seq: last,
        events,
    };
    (200, Some(tag), serde_json::to_vec(&page).unwrap())
}

fn send(r: &mut Room, nick: String, body: &[u8]) -> Answer {
    let Ok(req) = serde_json::from_slice::<SendRequest>(body) else {
        return (400, None, b"{}".to_vec());
    };
    if let Some(&seq) = r.by_client_id.get(&req.client_id) {
        let ev = r.events[seq as usize - 1].clone();
        return (200, Some(version(r)), serde_json::to_vec(&ev).unwrap());
    }
    let seq = r.events.len() as u64 + 1;
    let ev = Event {
        seq,
        kind: EventKind::Message,
        member_id: nick.clone(),
        nick,
        text: req.text,
        client_id: Some(req.client_id.clone()),
        deletes: None,
        at_ms: 0,
    };
    r.events.push(ev.clone());
    r.by_client_id.insert(req.client_id, seq);
    (201, Some(version(r)), serde_json::to_vec(&ev).unwrap())
}
