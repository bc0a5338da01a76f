//! A local deployment for one test: chat-api nodes on a fresh MariaDB
//! database and a fresh key prefix of the shared Redis, an edge in front of
//! them on the same bus, and the site `acme` created.

use crate::chat::create_site;
use crate::procs::{ApiNode, ApiOpts, Edge, EdgeOpts};
use crate::scrape::route_requests;
use crate::services::{redis_prefix, FreshDb, PrivateRedis, REDIS_URL};

/// chat-api flags that lift its per-guest and per-address rate limits (one
/// test client is one address and sends fast).
pub const RATES_OFF: &[&str] = &["--guest-rate", "off", "--ip-rate", "off"];

/// The store timeout of the nodes these stacks start, unless a test sets
/// its own. The suite's tests share one MariaDB that creates and drops
/// their databases as they come and go; on a loaded 2-core machine a write
/// beside a drop can take longer than the production default (600 ms),
/// and a test about rate limits or presence must not fail on that. The
/// tests about a slow or lost store (outages, faults) set up their nodes
/// themselves, with the default.
const TEST_STORE_TIMEOUT: &str = "2s";

/// A node's options on `db` and the key prefix `prefix` of the Redis at
/// `redis_url`, with the extra flags `extra`.
pub fn node_opts(db: &FreshDb, redis_url: &str, prefix: &str, extra: &[&str]) -> ApiOpts {
    let mut flags: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    if !extra.contains(&"--store-timeout") {
        flags.extend(["--store-timeout".to_owned(), TEST_STORE_TIMEOUT.to_owned()]);
    }
    ApiOpts {
        mysql_url: Some(db.url.clone()),
        redis_url: Some(redis_url.to_owned()),
        redis_prefix: Some(prefix.to_owned()),
        extra: flags,
        ..ApiOpts::default()
    }
}

/// An edge's options in front of `nodes`, on the key prefix `prefix` of the
/// Redis at `redis_url`, with the extra flags `extra`.
pub fn edge_opts<'a>(
    nodes: impl IntoIterator<Item = &'a ApiNode>,
    redis_url: &str,
    prefix: &str,
    extra: &[&str],
) -> EdgeOpts {
    EdgeOpts {
        upstreams: nodes
            .into_iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect(),
        redis_url: Some(redis_url.to_owned()),
        redis_prefix: Some(prefix.to_owned()),
        extra: extra.iter().map(|s| s.to_string()).collect(),
        ..EdgeOpts::default()
    }
}

/// API nodes and an edge on the shared MariaDB and Redis, with `acme`.
pub struct Stack {
    _db: FreshDb,
    pub prefix: String,
    pub apis: Vec<ApiNode>,
    pub edge: Edge,
    /// The admin secret of `acme`.
    pub secret: String,
}

impl Stack {
    /// `nodes` API nodes started with `api_extra`, an edge with `edge_extra`.
    pub async fn start(nodes: usize, api_extra: &[&str], edge_extra: &[&str]) -> Stack {
        let db = FreshDb::create().await;
        let prefix = redis_prefix().await;
        let opts = node_opts(&db, REDIS_URL, &prefix, api_extra);
        let mut apis = Vec::new();
        for _ in 0..nodes {
            apis.push(ApiNode::start(opts.clone()).await);
        }
        let secret = create_site(&apis[0].base, "acme").await;
        let edge = Edge::start(edge_opts(&apis, REDIS_URL, &prefix, edge_extra)).await;
        Stack {
            _db: db,
            prefix,
            apis,
            edge,
            secret,
        }
    }

    /// The first API node.
    pub fn api(&self) -> &ApiNode {
        &self.apis[0]
    }

    /// The edge's proxy address, `127.0.0.1:port`.
    pub fn edge_addr(&self) -> String {
        format!("127.0.0.1:{}", self.edge.port)
    }
}

/// Two API nodes and an edge on a fresh database and a private Redis that
/// a test may kill and restart, with `acme`; rates off on the nodes.
pub struct TwoNodes {
    _db: FreshDb,
    pub redis: PrivateRedis,
    pub prefix: String,
    pub a: ApiNode,
    pub b: ApiNode,
    pub edge: Edge,
}

impl TwoNodes {
    /// The nodes started with `api_extra` (after [`RATES_OFF`]), the edge
    /// with `edge_extra`.
    pub async fn start(api_extra: &[&str], edge_extra: &[&str]) -> TwoNodes {
        let db = FreshDb::create().await;
        let redis = PrivateRedis::start().await;
        let prefix = redis_prefix().await;
        let extra: Vec<&str> = RATES_OFF.iter().chain(api_extra).copied().collect();
        let opts = node_opts(&db, &redis.url(), &prefix, &extra);
        let a = ApiNode::start(opts.clone()).await;
        let b = ApiNode::start(opts).await;
        create_site(&a.base, "acme").await;
        let edge = Edge::start(edge_opts([&a, &b], &redis.url(), &prefix, edge_extra)).await;
        TwoNodes {
            _db: db,
            redis,
            prefix,
            a,
            b,
            edge,
        }
    }

    /// Pages both nodes served (`GET …/messages` the edge forwarded or
    /// fetched).
    pub async fn pages_served(&self) -> f64 {
        route_requests(&self.a, "messages_get").await
            + route_requests(&self.b, "messages_get").await
    }
}
