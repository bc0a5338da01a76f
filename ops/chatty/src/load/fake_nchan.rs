//! A tiny in-memory nchan (HTTP/1.1 over tokio, keep-alive) for the
//! generator's `--nchan` tests, answering as nginx + nchan does: `POST
//! /pub/<channel>` stores a message (`201`); `GET /sub/<channel>` is a
//! long-poll (the next message after `If-None-Match`, which must come with
//! `If-Modified-Since`, or `408` after the wait) or, with `Accept:
//! text/event-stream`, an EventSource stream from after `Last-Event-ID`,
//! ended after a while so clients reconnect. A fault switch hides one
//! message from subscribers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::time::{timeout_at, Instant};

/// What `Last-Modified` always says (nchan's has one-second steps; the
/// `Etag` tells messages apart).
const LAST_MODIFIED: &str = "Thu, 01 Jan 2026 00:00:00 GMT";
/// The time part of the EventSource ids (`<time>:<index>`).
const ID_TIME: &str = "1767225600";

/// How the fake behaves.
#[derive(Debug, Clone, Copy)]
pub struct Behaviour {
    /// A long-poll with nothing to answer ends in `408` after this.
    pub wait: Duration,
    /// Each stream ends this long after it opened.
    pub life: Duration,
    /// Subscribers never see the message at this index (0-based) of any
    /// channel.
    pub hide: Option<usize>,
}

#[derive(Default)]
struct Shared {
    channels: Mutex<HashMap<String, Vec<Vec<u8>>>>,
    /// Woken on every publish.
    moved: Notify,
    published: AtomicU64,
    long_polls: AtomicU64,
    /// Stream requests, and those with `Last-Event-ID`.
    streams: AtomicU64,
    resumed: AtomicU64,
}

/// A running fake nchan.
pub struct FakeNchan {
    pub base: String,
    shared: Arc<Shared>,
}

impl FakeNchan {
    pub fn published(&self) -> u64 {
        self.shared.published.load(Relaxed)
    }

    pub fn long_polls(&self) -> u64 {
        self.shared.long_polls.load(Relaxed)
    }

    /// Stream requests, and those of them with `Last-Event-ID`.
    pub fn streams(&self) -> (u64, u64) {
        (
            self.shared.streams.load(Relaxed),
            self.shared.resumed.load(Relaxed),
        )
    }
}

/// Starts the fake on a free port.
pub async fn start(behaviour: Behaviour) -> FakeNchan {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shared = Arc::new(Shared::default());
    let accepting = shared.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let shared = accepting.clone();
            tokio::spawn(async move {
                let _ = serve(stream, shared, behaviour).await;
            });
        }
    });
    FakeNchan {
        base: format!("http://{addr}"),
        shared,
    }
}

#[derive(Default)]
struct Request {
    method: String,
    target: String,
    inm: Option<String>,
    ims: Option<String>,
    sse: bool,
    last_event_id: Option<String>,
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
            "if-modified-since" => req.ims = Some(value),
            "accept" => req.sse = value.contains("text/event-stream"),
            "last-event-id" => req.last_event_id = Some(value),
            _ => {}
        }
    }
    req.body = vec![0; len];
    r.read_exact(&mut req.body).await?;
    Ok(Some(req))
}

/// The first index at or after `from` a subscriber may see.
fn visible(from: usize, hide: Option<usize>) -> usize {
    if hide == Some(from) {
        from + 1
    } else {
        from
    }
}

async fn serve(
    stream: tokio::net::TcpStream,
    shared: Arc<Shared>,
    b: Behaviour,
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    while let Some(req) = read_request(&mut r).await? {
        if let Some(channel) = req.target.strip_prefix("/pub/") {
            if req.method != "POST" {
                w.write_all(b"HTTP/1.1 405 X\r\ncontent-length: 0\r\n\r\n")
                    .await?;
                continue;
            }
            let info = {
                let mut channels = shared.channels.lock().unwrap();
                let messages = channels.entry(channel.to_owned()).or_default();
                messages.push(req.body.clone());
                format!("{{\"messages\": {}}}", messages.len())
            };
            shared.published.fetch_add(1, Relaxed);
            shared.moved.notify_waiters();
            let head = format!(
                "HTTP/1.1 201 Created\r\ncontent-length: {}\r\n\r\n",
                info.len()
            );
            w.write_all(format!("{head}{info}").as_bytes()).await?;
            continue;
        }
        let Some(channel) = req.target.strip_prefix("/sub/").map(str::to_owned) else {
            w.write_all(b"HTTP/1.1 404 X\r\ncontent-length: 0\r\n\r\n")
                .await?;
            continue;
        };
        if req.sse {
            return serve_stream(&mut w, &shared, &channel, &req, b).await;
        }
        shared.long_polls.fetch_add(1, Relaxed);
        // The Etag is the index of the message answered.
        let next = match (&req.inm, &req.ims) {
            (None, None) => 0,
            (Some(tag), Some(_)) => match tag.parse::<usize>() {
                Ok(i) => i + 1,
                Err(_) => usize::MAX,
            },
            _ => usize::MAX,
        };
        if next == usize::MAX {
            w.write_all(b"HTTP/1.1 400 X\r\ncontent-length: 0\r\n\r\n")
                .await?;
            continue;
        }
        let next = visible(next, b.hide);
        let deadline = Instant::now() + b.wait;
        let message = loop {
            let notified = shared.moved.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let found = shared
                .channels
                .lock()
                .unwrap()
                .get(&channel)
                .and_then(|m| m.get(next).cloned());
            if found.is_some() {
                break found;
            }
            if timeout_at(deadline, notified).await.is_err() {
                break None;
            }
        };
        let head = match &message {
            Some(body) => format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nlast-modified: {LAST_MODIFIED}\r\netag: {next}\r\n\r\n",
                body.len()
            ),
            // As nchan: the Etag asked with (if any), no Last-Modified.
            None => format!(
                "HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\n{}\r\n",
                req.inm
                    .as_ref()
                    .map_or(String::new(), |t| format!("etag: {t}\r\n"))
            ),
        };
        let mut whole = head.into_bytes();
        whole.extend_from_slice(message.as_deref().unwrap_or_default());
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

/// An EventSource stream from after `Last-Event-ID` (`<time>:<index>`), or
/// from the first message, until its life ends; the connection closes
/// after it.
async fn serve_stream<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    shared: &Shared,
    channel: &str,
    req: &Request,
    b: Behaviour,
) -> std::io::Result<()> {
    shared.streams.fetch_add(1, Relaxed);
    let mut next = match &req.last_event_id {
        None => 0,
        Some(id) => {
            shared.resumed.fetch_add(1, Relaxed);
            let index = id
                .split_once(':')
                .and_then(|(_, i)| i.parse::<usize>().ok());
            match index {
                Some(i) => i + 1,
                None => {
                    return w
                        .write_all(b"HTTP/1.1 400 X\r\ncontent-length: 0\r\n\r\n")
                        .await;
                }
            }
        }
    };
    w.write_all(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n\
          transfer-encoding: chunked\r\n\r\n",
    )
    .await?;
    chunk(w, b": hi\n\n").await?;
    let end = Instant::now() + b.life;
    loop {
        let notified = shared.moved.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let mut out = Vec::new();
        {
            let channels = shared.channels.lock().unwrap();
            let messages = channels.get(channel).map_or(&[][..], |m| &m[..]);
            while next < messages.len() {
                if b.hide != Some(next) {
                    out.extend_from_slice(format!("id: {ID_TIME}:{next}\ndata: ").as_bytes());
                    out.extend_from_slice(&messages[next]);
                    out.extend_from_slice(b"\n\n");
                }
                next += 1;
            }
        }
        if !out.is_empty() {
            // Cut in the middle, as a network may.
            let (a, rest) = out.split_at(out.len() / 2);
            chunk(w, a).await?;
            chunk(w, rest).await?;
        }
        if timeout_at(end, notified).await.is_err() {
            break;
        }
    }
    w.write_all(b"0\r\n\r\n").await?;
    w.flush().await
}
