//! A metrics page scraped whole, and sums over the label sets of a family
//! on it, which `procs::metric` (one sample) cannot ask: how many requests
//! reached a chat-api node.

use crate::http;
use crate::procs::ApiNode;

const FAMILY: &str = "chatty_api_requests_total";

/// Requests `node` counted on every route but its own `/metrics` scrapes.
pub async fn api_requests(node: &ApiNode) -> f64 {
    metric_sum(&metrics_url(node), FAMILY, |labels| {
        !labels.contains("route=\"metrics\"")
    })
    .await
}

/// Requests `node` counted on `route` (a route label such as `messages_get`),
/// whatever their status.
pub async fn route_requests(node: &ApiNode, route: &str) -> f64 {
    let label = format!("route=\"{route}\"");
    metric_sum(&metrics_url(node), FAMILY, |labels| labels.contains(&label)).await
}

/// The Prometheus text page at `url`, which must answer 200.
pub async fn scrape(url: &str) -> String {
    let resp = http().get(url).send().await.expect("scrape /metrics");
    assert_eq!(resp.status(), 200, "GET {url}");
    resp.text().await.expect("metrics body")
}

/// The sum of the samples of `family` on the Prometheus text page at `url`
/// whose labels (the text between the braces) `keep` accepts.
pub async fn metric_sum(url: &str, family: &str, keep: impl Fn(&str) -> bool) -> f64 {
    scrape(url)
        .await
        .lines()
        .filter_map(|l| {
            let (labels, value) = l.strip_prefix(family)?.strip_prefix('{')?.split_once('}')?;
            // `value [timestamp]`
            let value = value.split_whitespace().next()?;
            keep(labels).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

fn metrics_url(node: &ApiNode) -> String {
    format!("{}/metrics", node.base)
}
