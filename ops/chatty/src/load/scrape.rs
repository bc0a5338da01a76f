//! Reads `chatty_api_requests_total` from API nodes' `/metrics`, so a run can
//! report how many requests got past the edge.

use crate::client::{ApiClient, ClientError};

/// The metric summed.
pub const API_REQUESTS: &str = "chatty_api_requests_total";

/// Sum of every `chatty_api_requests_total` series in a Prometheus text
/// exposition, leaving out `route="metrics"` (the scrapes themselves).
pub fn sum_api_requests(text: &str) -> f64 {
    let mut sum = 0.0;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(API_REQUESTS) else {
            continue;
        };
        let (labels, value) = if let Some(r) = rest.strip_prefix('{') {
            match r.split_once('}') {
                Some((labels, value)) => (labels, value),
                None => continue,
            }
        } else if rest.starts_with(' ') {
            ("", rest)
        } else {
            // Another metric whose name starts the same.
            continue;
        };
        if labels.contains("route=\"metrics\"") {
            continue;
        }
        // `value [timestamp]`
        if let Some(v) = value
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        {
            if v.is_finite() {
                sum += v;
            }
        }
    }
    sum
}

/// Scrapes every URL and sums [`sum_api_requests`] over them.
pub async fn scrape_all(client: &ApiClient, urls: &[String]) -> Result<f64, (String, ClientError)> {
    let mut total = 0.0;
    for url in urls {
        let text = client.get_text(url).await.map_err(|e| (url.clone(), e))?;
        total += sum_api_requests(&text);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_the_series() {
        let text = "\
# HELP chatty_api_requests_total Requests.
# TYPE chatty_api_requests_total counter
chatty_api_requests_total{route=\"join\",status_class=\"2xx\"} 10
chatty_api_requests_total{route=\"messages_get\",status_class=\"2xx\"} 1.5e3
chatty_api_requests_total{route=\"metrics\",status_class=\"2xx\"} 7
chatty_api_requests_total_other 99
chatty_api_request_duration_seconds_count{route=\"join\"} 10
";
        assert_eq!(sum_api_requests(text), 1510.0);
        assert_eq!(
            sum_api_requests("chatty_api_requests_total 4 1700000000\n"),
            4.0
        );
        assert_eq!(sum_api_requests(""), 0.0);
    }
}
