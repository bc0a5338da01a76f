//! A metrics page scraped whole, and sums over the label sets of a family
//! on it (parsed by `chatty::metrics`): how many requests reached a
//! chat-api node.

use chatty::metrics::{self, LabelFilter};

use crate::http;
use crate::procs::ApiNode;

const FAMILY: &str = "chatty_api_requests_total";

/// Requests `node` counted on every route but its own `/metrics` scrapes.
pub async fn api_requests(node: &ApiNode) -> f64 {
    route_filter(node, "metrics", false).await
}

/// Requests `node` counted on `route` (a route label such as `messages_get`),
/// whatever their status.
pub async fn route_requests(node: &ApiNode, route: &str) -> f64 {
    route_filter(node, route, true).await
}

async fn route_filter(node: &ApiNode, route: &str, equal: bool) -> f64 {
    let filter = LabelFilter {
        key: "route".into(),
        value: route.into(),
        equal,
    };
    let page = scrape(&format!("{}/metrics", node.base)).await;
    metrics::sum(&page, FAMILY, &[filter])
}

/// The Prometheus text page at `url`, which must answer 200.
pub async fn scrape(url: &str) -> String {
    let resp = http().get(url).send().await.expect("scrape /metrics");
    assert_eq!(resp.status(), 200, "GET {url}");
    resp.text().await.expect("metrics body")
}
