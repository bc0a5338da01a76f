//! What a guest asks of the edge with its token: held polls and event
//! streams, both carrying `Authorization: Bearer <token>` so the edge counts
//! the guest as present (contract: presence without heartbeats). One client
//! per source address; neither request takes a permit of `--connections`:
//! a guest holds one at most, so the guests bound them.
//!
//! The answers are read by the client's rules (ETag, 304, JSON error
//! bodies), plus `Preference-Applied`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chatty_shared::wire::MessagesPage;
use reqwest::header::{
    HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, ETAG, IF_NONE_MATCH, RETRY_AFTER,
};
use reqwest::StatusCode;

use crate::client::{self, decode, ClientError, Held, Poll};

/// An event stream the edge opened.
pub struct EventStream {
    resp: reqwest::Response,
}

impl EventStream {
    /// A `200 text/event-stream` answer, its body to be read.
    pub(super) fn new(resp: reqwest::Response) -> Self {
        Self { resp }
    }

    /// The next piece of the body (chunked transfer decoded), `None` at its
    /// end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, ClientError> {
        self.resp.chunk().await.map_err(ClientError::from_reqwest)
    }
}

/// The answer to a request for an event stream.
pub enum Opened {
    /// `200 text/event-stream`.
    Stream(EventStream),
    /// A JSON page, as for a poll: the edge could not stream (full) and
    /// forwarded the request, or the target is an API node.
    Page(MessagesPage),
}

/// A client for the edge's token-carrying reads. Cheap to clone.
#[derive(Clone, Debug)]
pub struct EdgeClient {
    http: reqwest::Client,
    /// `{base}/v1/sites/{site}/rooms/`
    rooms_prefix: Arc<str>,
    /// Time to the answer's head (a held poll gets its wait on top).
    timeout: Duration,
}

impl EdgeClient {
    /// A client for `base` and `site`, connecting from `source` when given,
    /// keeping up to `idle` connections for reuse.
    pub fn new(
        base: &str,
        site: &str,
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
            rooms_prefix: format!("{base}/v1/sites/{site}/rooms/").into(),
            timeout,
        })
    }

    fn messages(&self, room: &str, after: u64, token: &str) -> reqwest::RequestBuilder {
        let url = format!("{}{room}/messages?after={after}", self.rooms_prefix);
        let mut req = self.http.get(url);
        if let Ok(mut v) = HeaderValue::from_str(&format!("Bearer {token}")) {
            v.set_sensitive(true);
            req = req.header(AUTHORIZATION, v);
        }
        req
    }

    /// A held poll (`Prefer: wait=S`) with the guest's token; `etag` is
    /// sent as `If-None-Match` unless empty, and updated from the answer.
    pub async fn poll_held(
        &self,
        room: &str,
        after: u64,
        etag: &mut String,
        wait: Duration,
        token: &str,
    ) -> Result<Held, ClientError> {
        let mut req = self
            .messages(room, after, token)
            .header("prefer", format!("wait={}", wait.as_secs()))
            .timeout(self.timeout + wait);
        if !etag.is_empty() {
            if let Ok(v) = HeaderValue::from_str(etag) {
                req = req.header(IF_NONE_MATCH, v);
            }
        }
        let resp = req.send().await.map_err(ClientError::from_reqwest)?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map_err(ClientError::from_reqwest)?;
        if let Some(tag) = headers.get(ETAG).and_then(|v| v.to_str().ok()) {
            if tag != etag.as_str() {
                etag.clear();
                etag.push_str(tag);
            }
        }
        let applied = headers
            .get_all("preference-applied")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim().to_ascii_lowercase().starts_with("wait"));
        let poll = match status {
            StatusCode::NOT_MODIFIED => Poll::NotModified,
            StatusCode::OK => Poll::Page(decode(&body)?),
            _ => return Err(status_error(status, &headers, &body)),
        };
        Ok(Held { poll, applied })
    }

    /// Asks for the room's event stream from `after`, with `Last-Event-ID`
    /// when given (a reconnect). The head must come within the timeout; the
    /// body then runs as long as the edge keeps it open.
    pub async fn open_stream(
        &self,
        room: &str,
        after: u64,
        last_event_id: Option<u64>,
        token: &str,
    ) -> Result<Opened, ClientError> {
        let mut req = self
            .messages(room, after, token)
            .header(ACCEPT, "text/event-stream");
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id.to_string());
        }
        let resp = match tokio::time::timeout(self.timeout, req.send()).await {
            Err(_) => return Err(ClientError::Timeout),
            Ok(r) => r.map_err(ClientError::from_reqwest)?,
        };
        let status = resp.status();
        if status == StatusCode::OK && is_event_stream(resp.headers()) {
            return Ok(Opened::Stream(EventStream::new(resp)));
        }
        let headers = resp.headers().clone();
        let body = match tokio::time::timeout(self.timeout, resp.bytes()).await {
            Err(_) => return Err(ClientError::Timeout),
            Ok(b) => b.map_err(ClientError::from_reqwest)?,
        };
        if status != StatusCode::OK {
            return Err(status_error(status, &headers, &body));
        }
        Ok(Opened::Page(decode(&body)?))
    }
}

/// `Content-Type: text/event-stream` (parameters aside).
pub(super) fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/event-stream"))
}

/// The error of an answer with an unexpected status.
pub(super) fn status_error(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> ClientError {
    let retry_after = headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    client::status_error(status, retry_after, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        let check = |ct: &str, want: bool| {
            let mut h = HeaderMap::new();
            h.insert(CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
            assert_eq!(is_event_stream(&h), want, "{ct}");
        };
        check("text/event-stream", true);
        check("text/event-stream; charset=utf-8", true);
        check("Text/Event-Stream", true);
        check("application/json", false);
        assert!(!is_event_stream(&HeaderMap::new()));
    }
}
