//! Prometheus text pages read in one place: samples parsed from a page,
//! sums of a metric over the label sets a filter keeps, and the `chatty
//! metrics` subcommand that prints them for scripts.

use std::str::FromStr;

use clap::Args;

use crate::client::{ApiClient, ClientOptions};

/// One sample line: `name{label="value",…} value [timestamp]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    /// The value of label `key`, if the sample has it.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Parses one line; `None` for comments, blank and malformed lines.
    pub fn parse(line: &str) -> Option<Sample> {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let name_end = line.find(['{', ' ', '\t']).unwrap_or(line.len());
        let (name, mut rest) = line.split_at(name_end);
        let mut labels = Vec::new();
        if let Some(inner) = rest.strip_prefix('{') {
            let (parsed, after) = parse_labels(inner)?;
            labels = parsed;
            rest = after;
        }
        // `value [timestamp]`
        let value = rest.split_whitespace().next()?.parse::<f64>().ok()?;
        (!name.is_empty()).then(|| Sample {
            name: name.to_owned(),
            labels,
            value,
        })
    }
}

/// `k="v",…}` (the text after `{`) into pairs, and the text after `}`.
fn parse_labels(mut s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start_matches([',', ' ']);
        if let Some(after) = s.strip_prefix('}') {
            return Some((labels, after));
        }
        let (key, rest) = s.split_once('=')?;
        let mut chars = rest.strip_prefix('"')?.char_indices();
        let mut value = String::new();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((key.trim().to_owned(), value));
        s = &rest[1 + end + 1..];
    }
}

/// Every sample of a page, in page order.
pub fn parse(page: &str) -> Vec<Sample> {
    page.lines().filter_map(Sample::parse).collect()
}

/// A condition on one label: `key=value` or `key!=value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelFilter {
    pub key: String,
    pub value: String,
    pub equal: bool,
}

impl LabelFilter {
    /// Whether `sample` passes (a missing label counts as empty).
    pub fn keeps(&self, sample: &Sample) -> bool {
        (sample.label(&self.key).unwrap_or("") == self.value) == self.equal
    }
}

impl FromStr for LabelFilter {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (key, value, equal) = match s.split_once("!=") {
            Some((k, v)) => (k, v, false),
            None => match s.split_once('=') {
                Some((k, v)) => (k, v, true),
                None => return Err(format!("{s:?}: expected key=value or key!=value")),
            },
        };
        Ok(LabelFilter {
            key: key.to_owned(),
            value: value.trim_matches('"').to_owned(),
            equal,
        })
    }
}

/// The sum of the finite values of metric `name` over the samples every
/// filter keeps; 0 when there are none.
pub fn sum(page: &str, name: &str, filters: &[LabelFilter]) -> f64 {
    parse(page)
        .iter()
        .filter(|s| s.name == name && s.value.is_finite())
        .filter(|s| filters.iter().all(|f| f.keeps(s)))
        .map(|s| s.value)
        .sum()
}

/// The value of the one sample written as `selector`
/// (`name{k="v",…}`, labels in any order, none left out); `None` when the
/// page has no such sample.
pub fn sample_value(page: &str, selector: &str) -> Option<f64> {
    let want = Sample::parse(&format!("{selector} 0"))?;
    let mut want_labels = want.labels;
    want_labels.sort();
    parse(page).into_iter().find_map(|mut s| {
        s.labels.sort();
        (s.name == want.name && s.labels == want_labels).then_some(s.value)
    })
}

/// Flags of `chatty metrics`.
#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// The page, e.g. http://127.0.0.1:9091/metrics.
    pub url: String,

    /// A metric name: print the sum of its samples; without it, print
    /// every sample the filters keep.
    pub name: Option<String>,

    /// Keep only samples with this label value (`key=value`) or without it
    /// (`key!=value`); repeatable, all must hold.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<LabelFilter>,
}

/// Scrapes the page and prints the sum, or the kept samples; answers the
/// exit status (1 when the page cannot be read).
pub fn main(args: MetricsArgs) -> i32 {
    let page = match scrape(&args.url) {
        Ok(page) => page,
        Err(e) => {
            eprintln!("chatty metrics: {}: {e}", args.url);
            return 1;
        }
    };
    match &args.name {
        Some(name) => println!("{}", format_value(sum(&page, name, &args.labels))),
        None => {
            for s in parse(&page) {
                if args.labels.iter().all(|f| f.keeps(&s)) {
                    println!("{}", format_sample(&s));
                }
            }
        }
    }
    0
}

fn scrape(url: &str) -> Result<String, crate::client::ClientError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| crate::client::ClientError::Other(e.to_string()))?;
    let client = ApiClient::new(&ClientOptions::new(url, "-"))?;
    rt.block_on(client.get_text(url))
}

/// Whole numbers without a fraction (shell arithmetic reads them).
fn format_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        v.to_string()
    }
}

fn format_sample(s: &Sample) -> String {
    let labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    let braces = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", labels.join(","))
    };
    format!("{}{braces} {}", s.name, format_value(s.value))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "\
# HELP chatty_api_requests_total Requests.
# TYPE chatty_api_requests_total counter
chatty_api_requests_total{route=\"join\",status_class=\"2xx\"} 10
chatty_api_requests_total{route=\"messages_get\",status_class=\"2xx\"} 1.5e3
chatty_api_requests_total{route=\"metrics\",status_class=\"2xx\"} 7
chatty_api_requests_total_other 99
chatty_edge_bus_up 1 1700000000
odd{text=\"a \\\"quoted\\\" , } value\"} 2
chatty_api_request_duration_seconds_count{route=\"join\"} NaN
";

    fn filters(list: &[&str]) -> Vec<LabelFilter> {
        list.iter().map(|f| f.parse().unwrap()).collect()
    }

    #[test]
    fn samples_are_parsed() {
        let samples = parse(PAGE);
        assert_eq!(samples.len(), 7);
        assert_eq!(samples[1].label("route"), Some("messages_get"));
        assert_eq!(samples[1].value, 1500.0);
        assert_eq!(samples[4].name, "chatty_edge_bus_up");
        assert_eq!(samples[5].label("text"), Some("a \"quoted\" , } value"));
        assert_eq!(samples[5].value, 2.0);
        assert!(Sample::parse("broken{a=\"b\" 1").is_none());
        assert!(Sample::parse("name_only").is_none());
    }

    #[test]
    fn sums_keep_what_the_filters_keep() {
        let name = "chatty_api_requests_total";
        assert_eq!(sum(PAGE, name, &[]), 1517.0);
        assert_eq!(sum(PAGE, name, &filters(&["route!=metrics"])), 1510.0);
        assert_eq!(sum(PAGE, name, &filters(&["route=\"join\""])), 10.0);
        assert_eq!(sum(PAGE, "chatty_edge_bus_up", &[]), 1.0);
        assert_eq!(
            sum(PAGE, "chatty_api_request_duration_seconds_count", &[]),
            0.0
        );
        assert_eq!(sum("", name, &[]), 0.0);
        assert!("route".parse::<LabelFilter>().is_err());
    }

    #[test]
    fn one_sample_by_its_selector() {
        let s = "chatty_api_requests_total{status_class=\"2xx\",route=\"join\"}";
        assert_eq!(sample_value(PAGE, s), Some(10.0));
        assert_eq!(sample_value(PAGE, "chatty_edge_bus_up"), Some(1.0));
        assert_eq!(
            sample_value(PAGE, "chatty_api_requests_total{route=\"join\"}"),
            None
        );
    }

    #[test]
    fn values_print_for_shell_arithmetic() {
        assert_eq!(format_value(1510.0), "1510");
        assert_eq!(format_value(0.25), "0.25");
        let s = Sample::parse("m{a=\"x\"} 3").unwrap();
        assert_eq!(format_sample(&s), "m{a=\"x\"} 3");
    }
}
