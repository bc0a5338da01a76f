//! A small HTTP client for the Chatty API (v1): join, poll, send, heartbeat,
//! leave — shared by the load generator, `chatty site` and the integration
//! tests.
//!
//! Errors are sorted into a few kinds ([`ClientError::kind`]) so a caller can
//! count them without keeping their text. An optional semaphore bounds the
//! number of requests in flight, which bounds the connections the pool opens;
//! the load generator's held polls and streams (`load/edge.rs`) stand
//! outside it.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use chatty_shared::wire::{ErrorBody, Event, JoinRequest, JoinResponse, MessagesPage, SendRequest};
use reqwest::header::{HeaderValue, AUTHORIZATION, ETAG, IF_NONE_MATCH, RETRY_AFTER};
use reqwest::StatusCode;
use tokio::sync::Semaphore;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error status.
    #[error("HTTP {status}: {code} {message}")]
    Status {
        status: u16,
        /// The `error.code` of the JSON error body, or empty.
        code: String,
        message: String,
        /// `Retry-After` in seconds, when the answer had one.
        retry_after: Option<u64>,
    },
    /// No answer within the request timeout.
    #[error("timed out")]
    Timeout,
    /// The connection could not be made (or broke before an answer).
    #[error("connect: {0}")]
    Connect(String),
    /// The answer's body was not what the contract says.
    #[error("decode: {0}")]
    Decode(String),
    /// Anything else reqwest reports.
    #[error("request: {0}")]
    Other(String),
}

impl ClientError {
    /// A bounded label for counting: `status_4xx`, `status_429`,
    /// `status_502`, `status_503` (a node or the edge said so),
    /// `status_5xx` (any other), `timeout`, `connect`, `decode` or `other`.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientError::Status { status: 429, .. } => "status_429",
            ClientError::Status { status: 502, .. } => "status_502",
            ClientError::Status { status: 503, .. } => "status_503",
            ClientError::Status { status, .. } if *status >= 500 => "status_5xx",
            ClientError::Status { status, .. } if *status >= 400 => "status_4xx",
            ClientError::Status { .. } => "status_other",
            ClientError::Timeout => "timeout",
            ClientError::Connect(_) => "connect",
            ClientError::Decode(_) => "decode",
            ClientError::Other(_) => "other",
        }
    }

    /// True when the request may not have reached the server, or the server
    /// said to come back later: worth retrying an idempotent request.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Status { status, .. } => *status == 429 || *status >= 500,
            ClientError::Timeout | ClientError::Connect(_) | ClientError::Other(_) => true,
            ClientError::Decode(_) => false,
        }
    }

    pub(crate) fn from_reqwest(e: reqwest::Error) -> Self {
        if e.is_timeout() {
            ClientError::Timeout
        } else if e.is_connect() {
            ClientError::Connect(e.to_string())
        } else if e.is_decode() || e.is_body() {
            ClientError::Decode(e.to_string())
        } else if e.is_request() {
            // Connection reset or closed while the request was in flight.
            ClientError::Connect(e.to_string())
        } else {
            ClientError::Other(e.to_string())
        }
    }
}

/// The answer to a poll.
#[derive(Debug)]
pub enum Poll {
    /// 304: nothing new.
    NotModified,
    /// 200: events after the cursor.
    Page(MessagesPage),
}

/// The answer to a held poll.
#[derive(Debug)]
pub struct Held {
    pub poll: Poll,
    /// The server said `Preference-Applied: wait=…`: it honoured the wait,
    /// so a 304 means the wait ended with nothing new. A server may ignore
    /// the preference (RFC 7240) and answer at once.
    pub applied: bool,
}

/// The parts of an answer the client looks at.
struct Answer {
    status: StatusCode,
    etag: Option<HeaderValue>,
    retry_after: Option<u64>,
    body: bytes::Bytes,
}

/// How to build an [`ApiClient`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Base URL, e.g. `http://127.0.0.1:8080` (no trailing slash needed).
    pub base: String,
    /// Site id every call is made for.
    pub site: String,
    /// Most requests in flight at once (and so most connections), or `None`
    /// for no bound.
    pub max_in_flight: Option<usize>,
    /// Whole-request timeout.
    pub timeout: Duration,
    /// Held polls the client may have open besides `max_in_flight`: the
    /// pool keeps that many more idle connections, so each held poll finds
    /// its connection again instead of opening a new one.
    pub max_held: usize,
}

impl ClientOptions {
    pub fn new(base: impl Into<String>, site: impl Into<String>) -> Self {
        Self {
            base: base.into(),
            site: site.into(),
            max_in_flight: None,
            timeout: Duration::from_secs(10),
            max_held: 0,
        }
    }
}

/// A client for one site of one Chatty deployment. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ApiClient {
    http: reqwest::Client,
    /// `{base}/v1/sites/{site}/rooms/`
    rooms_prefix: Arc<str>,
    permits: Option<Arc<Semaphore>>,
}

impl ApiClient {
    pub fn new(opts: &ClientOptions) -> Result<Self, ClientError> {
        Self::build(opts, None, permits(opts))
    }

    /// One client per source address in `sources`, each opening its
    /// connections from that address, all sharing one bound on requests in
    /// flight (`opts.max_in_flight` for them all together).
    pub fn per_source(opts: &ClientOptions, sources: &[IpAddr]) -> Result<Vec<Self>, ClientError> {
        let permits = permits(opts);
        sources
            .iter()
            .map(|&addr| Self::build(opts, Some(addr), permits.clone()))
            .collect()
    }

    fn build(
        opts: &ClientOptions,
        local_address: Option<IpAddr>,
        permits: Option<Arc<Semaphore>>,
    ) -> Result<Self, ClientError> {
        let mut builder = reqwest::Client::builder()
            .timeout(opts.timeout)
            .connect_timeout(opts.timeout.min(Duration::from_secs(5)))
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(60))
            .local_address(local_address);
        if let Some(n) = opts.max_in_flight {
            builder = builder.pool_max_idle_per_host(n.saturating_add(opts.max_held));
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::Other(e.to_string()))?;
        let base = opts.base.trim_end_matches('/');
        Ok(Self {
            http,
            rooms_prefix: format!("{base}/v1/sites/{}/rooms/", opts.site).into(),
            permits,
        })
    }

    fn url(&self, room: &str, tail: &str) -> String {
        let mut s = String::with_capacity(self.rooms_prefix.len() + room.len() + tail.len() + 24);
        s.push_str(&self.rooms_prefix);
        s.push_str(room);
        s.push_str(tail);
        s
    }

    async fn execute(&self, req: reqwest::RequestBuilder) -> Result<Answer, ClientError> {
        let _permit = match &self.permits {
            Some(p) => Some(
                p.acquire()
                    .await
                    .map_err(|e| ClientError::Other(e.to_string()))?,
            ),
            None => None,
        };
        Self::answer(req).await
    }

    /// Sends `req` and reads its whole answer, taking no permit.
    async fn answer(req: reqwest::RequestBuilder) -> Result<Answer, ClientError> {
        let resp = req.send().await.map_err(ClientError::from_reqwest)?;
        let status = resp.status();
        let etag = resp.headers().get(ETAG).cloned();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        let body = resp.bytes().await.map_err(ClientError::from_reqwest)?;
        Ok(Answer {
            status,
            etag,
            retry_after,
            body,
        })
    }

    /// `POST …/join`.
    pub async fn join(&self, room: &str, nick: &str) -> Result<JoinResponse, ClientError> {
        let body = serde_json::to_vec(&JoinRequest {
            nick: nick.to_owned(),
            user_token: None,
        })
        .map_err(|e| ClientError::Other(e.to_string()))?;
        let req = self
            .http
            .post(self.url(room, "/join"))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        let answer = self.execute(req).await?;
        expect(&answer, &[StatusCode::OK])?;
        decode(&answer.body)
    }

    /// `GET …/messages?after=N`, with `If-None-Match: etag` unless `etag`
    /// is empty. `etag` is updated in place from the answer's `ETag` (only
    /// copied when it changed, so an unchanged 304 allocates nothing here).
    pub async fn poll(
        &self,
        room: &str,
        after: u64,
        etag: &mut String,
    ) -> Result<Poll, ClientError> {
        let req = self.poll_request(room, after, etag);
        let answer = self.execute(req).await?;
        read_poll(answer, etag)
    }

    fn poll_request(&self, room: &str, after: u64, etag: &str) -> reqwest::RequestBuilder {
        let mut tail = String::with_capacity(32);
        tail.push_str("/messages?after=");
        tail.push_str(itoa_u64(after).as_str());
        let mut req = self.http.get(self.url(room, &tail));
        if !etag.is_empty() {
            if let Ok(v) = HeaderValue::from_str(etag) {
                req = req.header(IF_NONE_MATCH, v);
            }
        }
        req
    }

    /// `POST …/messages`. Answers the stored event (201, or 200 for a
    /// retried `client_id`).
    pub async fn send(
        &self,
        room: &str,
        token: &str,
        text: &str,
        client_id: &str,
    ) -> Result<Event, ClientError> {
        let body = serde_json::to_vec(&SendRequest {
            text: text.to_owned(),
            client_id: client_id.to_owned(),
        })
        .map_err(|e| ClientError::Other(e.to_string()))?;
        let req = self
            .http
            .post(self.url(room, "/messages"))
            .header(AUTHORIZATION, bearer(token)?)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        let answer = self.execute(req).await?;
        expect(&answer, &[StatusCode::CREATED, StatusCode::OK])?;
        decode(&answer.body)
    }

    /// `POST …/heartbeat` (204).
    pub async fn heartbeat(&self, room: &str, token: &str) -> Result<(), ClientError> {
        self.token_post(room, "/heartbeat", token).await
    }

    /// `POST …/leave` (204).
    pub async fn leave(&self, room: &str, token: &str) -> Result<(), ClientError> {
        self.token_post(room, "/leave", token).await
    }

    async fn token_post(&self, room: &str, tail: &str, token: &str) -> Result<(), ClientError> {
        let req = self
            .http
            .post(self.url(room, tail))
            .header(AUTHORIZATION, bearer(token)?);
        let answer = self.execute(req).await?;
        expect(&answer, &[StatusCode::NO_CONTENT, StatusCode::OK])
    }

    /// `GET {url}` as text (used to scrape `/metrics`).
    pub async fn get_text(&self, url: &str) -> Result<String, ClientError> {
        let answer = self.execute(self.http.get(url)).await?;
        expect(&answer, &[StatusCode::OK])?;
        String::from_utf8(answer.body.to_vec()).map_err(|e| ClientError::Decode(e.to_string()))
    }
}

/// The bound on requests in flight that `opts` asks for.
fn permits(opts: &ClientOptions) -> Option<Arc<Semaphore>> {
    opts.max_in_flight
        .map(|n| Arc::new(Semaphore::new(n.max(1))))
}

/// Reads a poll's answer; copies its `ETag` into `etag` when it changed.
fn read_poll(answer: Answer, etag: &mut String) -> Result<Poll, ClientError> {
    if let Some(tag) = answer.etag.as_ref().and_then(|v| v.to_str().ok()) {
        if tag != etag.as_str() {
            etag.clear();
            etag.push_str(tag);
        }
    }
    if answer.status == StatusCode::NOT_MODIFIED {
        return Ok(Poll::NotModified);
    }
    expect(&answer, &[StatusCode::OK])?;
    Ok(Poll::Page(decode(&answer.body)?))
}

fn bearer(token: &str) -> Result<HeaderValue, ClientError> {
    let mut v = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| ClientError::Other("token is not a valid header value".into()))?;
    v.set_sensitive(true);
    Ok(v)
}

fn expect(answer: &Answer, ok: &[StatusCode]) -> Result<(), ClientError> {
    if ok.contains(&answer.status) {
        return Ok(());
    }
    Err(status_error(
        answer.status,
        answer.retry_after,
        &answer.body,
    ))
}

/// The error of an answer with an unexpected status: its JSON error body's
/// code and message, else the start of the body.
pub(crate) fn status_error(
    status: StatusCode,
    retry_after: Option<u64>,
    body: &[u8],
) -> ClientError {
    let (code, message) = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => (e.error.code, e.error.message),
        Err(_) => (
            String::new(),
            String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
        ),
    };
    ClientError::Status {
        status: status.as_u16(),
        code,
        message,
        retry_after,
    }
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ClientError> {
    serde_json::from_slice(body).map_err(|e| ClientError::Decode(e.to_string()))
}

/// Formats a u64 without going through `fmt`.
fn itoa_u64(n: u64) -> NumBuf {
    let mut buf = NumBuf {
        bytes: [0; 20],
        start: 20,
    };
    let mut n = n;
    loop {
        buf.start -= 1;
        buf.bytes[buf.start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf
}

struct NumBuf {
    bytes: [u8; 20],
    start: usize,
}

impl NumBuf {
    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[self.start..]).unwrap_or("0")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_numbers() {
        assert_eq!(itoa_u64(0).as_str(), "0");
        assert_eq!(itoa_u64(42).as_str(), "42");
        assert_eq!(itoa_u64(u64::MAX).as_str(), u64::MAX.to_string());
    }

    #[test]
    fn error_kinds() {
        let s = |status| ClientError::Status {
            status,
            code: String::new(),
            message: String::new(),
            retry_after: None,
        };
        assert_eq!(s(404).kind(), "status_4xx");
        assert_eq!(s(429).kind(), "status_429");
        assert_eq!(s(503).kind(), "status_503");
        assert_eq!(s(502).kind(), "status_502");
        assert_eq!(s(504).kind(), "status_5xx");
        assert!(s(503).is_transient());
        assert!(!s(400).is_transient());
        assert!(ClientError::Timeout.is_transient());
        assert_eq!(ClientError::Decode("x".into()).kind(), "decode");
    }

    #[test]
    fn builds_urls() {
        let c = ApiClient::new(&ClientOptions::new("http://h:1/", "demo")).unwrap();
        assert_eq!(
            c.url("lobby", "/join"),
            "http://h:1/v1/sites/demo/rooms/lobby/join"
        );
    }
}
