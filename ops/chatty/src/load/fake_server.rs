//! A tiny in-memory Chatty API (HTTP/1.1 over tokio, keep-alive) for the
//! load generator's own tests: join, poll with ETags, idempotent sends,
//! heartbeat, leave — and a fault switch that hides one seq from readers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chatty_shared::wire::{Event, EventKind, JoinResponse, Member, MessagesPage, SendRequest};
use chatty_shared::RoomVersion;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

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

/// Starts the server on a free port; answers its base URL.
pub async fn start(hide_seq: Option<u64>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = Arc::new(Mutex::new(State {
        hide_seq,
        ..State::default()
    }));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let state = state.clone();
            tokio::spawn(async move {
                let _ = serve(stream, state).await;
            });
        }
    });
    format!("http://{addr}")
}

async fn serve(stream: tokio::net::TcpStream, state: Arc<Mutex<State>>) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_owned();
        let target = parts.next().unwrap_or("").to_owned();
        let (mut len, mut inm, mut auth) = (0usize, None, None);
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
                "if-none-match" => inm = Some(value),
                "authorization" => auth = Some(value),
                _ => {}
            }
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body).await?;
        let (status, etag, out) = {
            let mut st = state.lock().unwrap();
            route(
                &mut st,
                &method,
                &target,
                inm.as_deref(),
                auth.as_deref(),
                &body,
            )
        };
        let mut head = format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\n", out.len());
        if let Some(tag) = etag {
            head.push_str(&format!("etag: {tag}\r\n"));
        }
        head.push_str("\r\n");
        let mut whole = head.into_bytes();
        whole.extend_from_slice(&out);
        w.write_all(&whole).await?;
    }
}

fn version(room: &Room) -> String {
    RoomVersion::new(1, room.events.len() as u64)
        .etag()
        .as_str()
        .to_owned()
}

fn route(
    st: &mut State,
    method: &str,
    target: &str,
    inm: Option<&str>,
    auth: Option<&str>,
    body: &[u8],
) -> (u16, Option<String>, Vec<u8>) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let ["v1", "sites", "demo", "rooms", room, action] = parts[..] else {
        return (404, None, b"{}".to_vec());
    };
    let hide = st.hide_seq;
    let r = st.rooms.entry(room.to_owned()).or_default();
    let nick = auth
        .and_then(|a| a.strip_prefix("Bearer tok-"))
        .map(str::to_owned);
    match (method, action) {
        ("POST", "join") => {
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
                seq: r.events.len() as u64,
                etag: version(r),
                members_etag: "\"m1\"".into(),
                token_ttl_secs: 3600,
            };
            (200, Some(version(r)), serde_json::to_vec(&resp).unwrap())
        }
        ("GET", "messages") => {
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
        ("POST", "messages") => {
            let Some(nick) = nick else {
                return (401, None, b"{}".to_vec());
            };
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
        ("POST", "heartbeat" | "leave") if nick.is_some() => (204, None, Vec::new()),
        _ => (404, None, b"{}".to_vec()),
    }
}
