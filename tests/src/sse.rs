//! A test's reader of the edge's event streams: opens one, parses its
//! events as they come and hands them out one at a time.

use std::time::{Duration, Instant};

use chatty_shared::wire::{Event, MembersList};

/// One event of a stream, as parsed.
#[derive(Debug, Clone)]
pub enum Sse {
    /// A log event (`id:` its seq).
    Log(Event),
    /// `event: members`.
    Members(MembersList),
    /// `retry:` on its own.
    Retry(u64),
    /// A comment.
    Comment(String),
}

/// An open stream.
pub struct Stream {
    resp: reqwest::Response,
    buf: String,
    /// The answer's status and content type.
    pub status: u16,
    pub content_type: String,
    /// When the stream was asked for.
    pub opened: Instant,
}

/// Options of a stream request.
#[derive(Default, Clone, Copy)]
pub struct Ask<'a> {
    pub after: Option<u64>,
    pub last_event_id: Option<u64>,
    pub token: Option<&'a str>,
}

impl Stream {
    /// Opens the stream of `site`/`room` through `base`.
    pub async fn open(base: &str, (site, room): (&str, &str), ask: Ask<'_>) -> Stream {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("http client");
        let query = ask.after.map(|a| format!("?after={a}")).unwrap_or_default();
        let mut req = http
            .get(format!(
                "{base}/v1/sites/{site}/rooms/{room}/messages{query}"
            ))
            .header("accept", "text/event-stream");
        if let Some(id) = ask.last_event_id {
            req = req.header("last-event-id", id.to_string());
        }
        if let Some(t) = ask.token {
            req = req.bearer_auth(t);
        }
        let opened = Instant::now();
        let resp = req.send().await.expect("stream request");
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        Stream {
            status: resp.status().as_u16(),
            content_type,
            resp,
            buf: String::new(),
            opened,
        }
    }

    /// The next event, `None` when the stream ended; panics after `limit`.
    pub async fn next(&mut self, limit: Duration) -> Option<Sse> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                if let Some(e) = parse(&block) {
                    return Some(e);
                }
                continue;
            }
            let chunk = tokio::time::timeout_at(deadline, self.resp.chunk())
                .await
                .unwrap_or_else(|_| panic!("no event within {limit:?}; have {:?}", self.buf));
            match chunk {
                Ok(Some(bytes)) => self
                    .buf
                    .push_str(std::str::from_utf8(&bytes).expect("a stream is UTF-8")),
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// The next log event, skipping members, retry hints and comments.
    pub async fn next_log(&mut self, limit: Duration) -> Option<Event> {
        loop {
            match self.next(limit).await? {
                Sse::Log(e) => return Some(e),
                _ => continue,
            }
        }
    }

    /// Every event until the stream ends (within `limit`).
    pub async fn rest(&mut self, limit: Duration) -> Vec<Sse> {
        let mut all = Vec::new();
        while let Some(e) = self.next(limit).await {
            all.push(e);
        }
        all
    }
}

/// One block of lines (an event, a retry hint or a comment).
fn parse(block: &str) -> Option<Sse> {
    let (mut id, mut kind, mut data, mut retry, mut comment) = (None, None, None, None, None);
    for line in block.lines().filter(|l| !l.is_empty()) {
        if let Some(c) = line.strip_prefix(':') {
            comment = Some(c.trim().to_owned());
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => id = Some(value.to_owned()),
            "event" => kind = Some(value.to_owned()),
            "data" => data = Some(value.to_owned()),
            "retry" => retry = value.parse().ok(),
            _ => panic!("unexpected field in {block:?}"),
        }
    }
    match (kind.as_deref(), data) {
        (Some("members"), Some(d)) => Some(Sse::Members(
            serde_json::from_str(&d).expect("members event data"),
        )),
        (None, Some(d)) => {
            let event: Event = serde_json::from_str(&d).expect("log event data");
            assert_eq!(id, Some(event.seq.to_string()), "id is the seq: {block:?}");
            Some(Sse::Log(event))
        }
        (Some(k), _) => panic!("unexpected event type {k}"),
        (None, None) => retry.map(Sse::Retry).or(comment.map(Sse::Comment)),
    }
}
