//! Reads `chatty_api_requests_total` from API nodes' `/metrics`, so a run can
//! report how many requests got past the edge.

use crate::client::{ApiClient, ClientError};
use crate::metrics::{self, LabelFilter};

/// The metric summed.
pub const API_REQUESTS: &str = "chatty_api_requests_total";

/// Sum of every `chatty_api_requests_total` series in a Prometheus text
/// exposition, leaving out `route="metrics"` (the scrapes themselves).
pub fn sum_api_requests(text: &str) -> f64 {
    let not_scrapes = LabelFilter {
        key: "route".into(),
        value: "metrics".into(),
        equal: false,
    };
    metrics::sum(text, API_REQUESTS, &[not_scrapes])
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
    fn sums_the_series_but_the_scrapes() {
        let text = "\
chatty_api_requests_total{route=\"join\",status_class=\"2xx\"} 10
chatty_api_requests_total{route=\"metrics\",status_class=\"2xx\"} 7
chatty_api_requests_total_other 99
";
        assert_eq!(sum_api_requests(text), 10.0);
        assert_eq!(
            sum_api_requests("chatty_api_requests_total 4 1700000000\n"),
            4.0
        );
    }
}
