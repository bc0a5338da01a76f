//! The edge's own requests to API nodes, outside pingora's proxying: the
//! pages and members lists behind event streams, and the batched presence
//! reports. Nodes are chosen as for a forwarded request
//! ([`upstreams::pick`]) and an idempotent request is tried on up to [`MAX_TRIES`]
//! nodes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header;

use crate::upstreams::{self, Upstreams};

/// Most nodes one request is tried on.
const MAX_TRIES: usize = 3;
/// Connect timeout to a node.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest time for a whole answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer body read (a page of long messages is ~200 KiB).
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// A node's answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub etag: Option<String>,
    pub retry_after: Option<String>,
    pub body: Bytes,
}

/// Why no node answered.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("no API node to ask")]
    NoNode,
    #[error("API node {node} failed: {source}")]
    Node {
        node: SocketAddr,
        source: reqwest::Error,
    },
    #[error("API node {0} answered more than {MAX_ANSWER_BYTES} bytes")]
    TooLarge(SocketAddr),
}

/// A client of the API nodes behind the edge.
pub struct Fetcher {
    client: reqwest::Client,
    nodes: Arc<Upstreams>,
}

impl Fetcher {
    pub fn new(nodes: Arc<Upstreams>) -> Self {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(ANSWER_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .expect("a client without TLS builds");
        Self { client, nodes }
    }

    /// `GET path` (with its query), conditional on `if_none_match`.
    pub async fn get(&self, path: &str, if_none_match: Option<&str>) -> Result<Answer, FetchError> {
        self.send(|client, node| {
            let req = client.get(format!("http://{node}{path}"));
            match if_none_match {
                Some(etag) => req.header(header::IF_NONE_MATCH, etag),
                None => req,
            }
        })
        .await
    }

    /// `POST path` with a JSON body (an idempotent one: it may be sent to
    /// more than one node).
    pub async fn post_json(&self, path: &str, body: Bytes) -> Result<Answer, FetchError> {
        self.send(|client, node| {
            client
                .post(format!("http://{node}{path}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(body.clone())
        })
        .await
    }

    async fn send(
        &self,
        build: impl Fn(&reqwest::Client, SocketAddr) -> reqwest::RequestBuilder,
    ) -> Result<Answer, FetchError> {
        let mut tried: Vec<SocketAddr> = Vec::with_capacity(MAX_TRIES);
        let mut last = FetchError::NoNode;
        while tried.len() < MAX_TRIES {
            let Some(node) = upstreams::pick(&self.nodes, &tried) else {
                break;
            };
            tried.push(node);
            match self.read(build(&self.client, node), node).await {
                Ok(answer) => return Ok(answer),
                Err(e) => {
                    tracing::debug!(error = %e, "edge request failed; trying another node");
                    last = e;
                }
            }
        }
        Err(last)
    }

    async fn read(
        &self,
        req: reqwest::RequestBuilder,
        node: SocketAddr,
    ) -> Result<Answer, FetchError> {
        let failed = |source| FetchError::Node { node, source };
        let mut resp = req.send().await.map_err(failed)?;
        let text = |name| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (etag, retry_after) = (text(header::ETAG), text(header::RETRY_AFTER));
        let status = resp.status().as_u16();
        let mut body = BytesMut::new();
        while let Some(chunk) = resp.chunk().await.map_err(failed)? {
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(FetchError::TooLarge(node));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Answer {
            status,
            etag,
            retry_after,
            body: body.freeze(),
        })
    }
}
