//! What a load run measured: latency histograms, counters, the JSON report
//! (its schema is documented on [`Report`]) and the human summary.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::checker::Anomalies;

/// A latency histogram in microseconds, from 1 µs to 1 hour, 3 significant
/// digits.
#[derive(Debug, Clone)]
pub struct Latency {
    hist: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    pub fn new() -> Self {
        Self {
            hist: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("static histogram bounds are valid"),
        }
    }

    pub fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
        self.hist.saturating_record(us);
    }

    pub fn len(&self) -> u64 {
        self.hist.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hist.is_empty()
    }

    /// p50/p95/p99/max in milliseconds; all zero when nothing was recorded.
    pub fn percentiles(&self) -> Percentiles {
        if self.hist.is_empty() {
            return Percentiles::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Percentiles {
            count: self.hist.len(),
            p50: ms(self.hist.value_at_quantile(0.50)),
            p95: ms(self.hist.value_at_quantile(0.95)),
            p99: ms(self.hist.value_at_quantile(0.99)),
            max: ms(self.hist.max()),
        }
    }
}

/// Latency percentiles in milliseconds (3 significant digits).
#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    /// Number of samples.
    pub count: u64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

/// The `check` section of the report.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct CheckReport {
    /// Whether `--check` was on (the counts are zero when it was not).
    pub enabled: bool,
    #[serde(flatten)]
    pub anomalies: Anomalies,
}

/// The `streams` section of the report (`--transport stream` only).
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct StreamReport {
    /// Streams the edge opened (`200 text/event-stream`).
    pub opened: u64,
    /// Stream requests after each guest's first, with `Last-Event-ID`.
    pub reconnects: u64,
    /// Streams the edge ended (as on shutdown), not the guest.
    pub ended_by_edge: u64,
    /// Log events read from streams.
    pub events: u64,
    /// Stream requests answered with a JSON page instead (the edge full,
    /// or an API node as target).
    pub json_pages: u64,
}

/// The JSON report written by `chatty load --json FILE`.
///
/// ```text
/// {
///   "guests": 300,               // guests asked for
///   "guests_joined": 300,        // guests whose join succeeded
///   "rooms": 20,
///   "site": "demo",
///   "server": "chatty",          // chatty, or nchan (--nchan: guests are
///                                //   nchan subscribers, "guests_joined"
///                                //   those that started, sends publishes)
///   "transport": "poll",         // poll, hold or stream (--transport)
///   "seed": 1,
///   "duration_s": 15.0,          // the measured window (after the ramp)
///   "elapsed_s": 24.1,           // ramp + window + drain, wall clock
///   "polls": 2210,               // polls completed (all phases; a poll that
///                                //   followed `more` pages counts once)
///   "poll_requests": 2215,       // GET …/messages requests answered (with
///                                //   streams: those answered with a page)
///   "polls_per_s": 147.3,        // polls due in the window / duration_s
///   "poll_304_share": 0.93,      // 304 answers / poll requests answered
///   "poll_latency_ms": {"count","p50","p95","p99","max"},  // from the time
///                                //   each poll was DUE to its last page
///                                //   (a held poll is due when sent, so
///                                //   its latency includes the wait)
///   "sends": 300,                // sends due in the window
///   "sends_acknowledged": 300,   // 201 (or 200 for a retried client_id)
///   "send_latency_ms": {...},    // from the time each send was DUE to its 201
///   "delivery_latency_ms": {...},// from a send's 201 to each other guest of
///                                //   the room seeing it; one sample per
///                                //   (message, receiver); 0 if seen before
///                                //   the 201 came back
///   "heartbeats": 1200,          // heartbeats sent (timed polls only: held
///                                //   polls and streams carry the token)
///   "streams": {"opened", "reconnects", "ended_by_edge", "events",
///               "json_pages"} | null,  // --transport stream only
///   "errors": {"poll:status_503": 3, "send:timeout": 1, ...}
///                                // by operation (join, poll, stream, send,
///                                //   heartbeat, leave) and kind (status_4xx,
///                                //   status_429, status_502, status_503, status_5xx, timeout,
///                                //   connect, decode, other); retries count
///   "api_requests": 512 | null,  // sum over --api-metrics URLs of the rise of
///                                //   chatty_api_requests_total (route
///                                //   "metrics" left out); null without them
///   "check": {"enabled", "missing", "duplicated", "out_of_order",
///             "lost_acknowledged"}
/// }
/// ```
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub guests: usize,
    pub guests_joined: u64,
    pub rooms: usize,
    pub site: String,
    pub server: &'static str,
    pub transport: &'static str,
    pub seed: u64,
    pub duration_s: f64,
    pub elapsed_s: f64,
    pub polls: u64,
    pub poll_requests: u64,
    pub polls_per_s: f64,
    pub poll_304_share: f64,
    pub poll_latency_ms: Percentiles,
    pub sends: u64,
    pub sends_acknowledged: u64,
    pub send_latency_ms: Percentiles,
    pub delivery_latency_ms: Percentiles,
    pub heartbeats: u64,
    pub streams: Option<StreamReport>,
    pub errors: BTreeMap<String, u64>,
    pub api_requests: Option<u64>,
    pub check: CheckReport,
}

impl Report {
    /// The human summary printed on stdout.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let p = |p: &Percentiles| {
            format!(
                "p50 {:.1} ms  p95 {:.1} ms  p99 {:.1} ms  max {:.1} ms  (n={})",
                p.p50, p.p95, p.p99, p.max, p.count
            )
        };
        let _ = writeln!(
            s,
            "chatty load: {} guests ({} joined) in {} rooms of site {}, {:.1}s window ({:.1}s in all)",
            self.guests, self.guests_joined, self.rooms, self.site, self.duration_s, self.elapsed_s
        );
        if let Some(st) = &self.streams {
            let _ = writeln!(
                s,
                "streams    {} opened, {} reconnects ({} ended by the edge), {} events, {} JSON pages instead",
                st.opened, st.reconnects, st.ended_by_edge, st.events, st.json_pages
            );
        } else {
            let _ = writeln!(
                s,
                "{:<11}{} ({:.1}/s in the window), {:.1}% answered 304",
                if self.transport == "hold" {
                    "held polls"
                } else {
                    "polls"
                },
                self.polls,
                self.polls_per_s,
                self.poll_304_share * 100.0
            );
            let _ = writeln!(s, "  latency  {}", p(&self.poll_latency_ms));
        }
        let _ = writeln!(
            s,
            "sends      {} due, {} acknowledged",
            self.sends, self.sends_acknowledged
        );
        let _ = writeln!(s, "  latency  {}", p(&self.send_latency_ms));
        let _ = writeln!(s, "delivery   {}", p(&self.delivery_latency_ms));
        let _ = writeln!(s, "heartbeats {}", self.heartbeats);
        if let Some(n) = self.api_requests {
            let _ = writeln!(s, "api        {n} requests reached the API nodes");
        }
        if self.errors.is_empty() {
            let _ = writeln!(s, "errors     none");
        } else {
            let list: Vec<String> = self
                .errors
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let _ = writeln!(s, "errors     {}", list.join(" "));
        }
        if self.check.enabled {
            let a = &self.check.anomalies;
            let verdict = if a.total() == 0 { "OK" } else { "FAILED" };
            let _ = writeln!(
                s,
                "check      {verdict}: missing={} duplicated={} out_of_order={} lost_acknowledged={}",
                a.missing, a.duplicated, a.out_of_order, a.lost_acknowledged
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut l = Latency::new();
        assert_eq!(l.percentiles(), Percentiles::default());
        for ms in 1..=1000u64 {
            l.record(Duration::from_millis(ms));
        }
        let p = l.percentiles();
        assert_eq!(p.count, 1000);
        let close = |got: f64, want: f64| (got - want).abs() <= want * 0.002;
        assert!(close(p.p50, 500.0), "{p:?}");
        assert!(close(p.p95, 950.0), "{p:?}");
        assert!(close(p.p99, 990.0), "{p:?}");
        assert!(close(p.max, 1000.0), "{p:?}");
    }

    #[test]
    fn extremes_saturate() {
        let mut l = Latency::new();
        l.record(Duration::ZERO);
        l.record(Duration::from_secs(10_000));
        let p = l.percentiles();
        assert_eq!(p.count, 2);
        assert!(p.max >= 3_600_000.0 * 0.999, "{p:?}");
        assert!(p.p50 <= 0.002, "{p:?}");
    }

    #[test]
    fn report_serialises_with_the_documented_fields() {
        let r = Report {
            guests: 2,
            guests_joined: 2,
            rooms: 1,
            site: "demo".into(),
            server: "chatty",
            transport: "poll",
            seed: 1,
            duration_s: 1.0,
            elapsed_s: 2.0,
            polls: 3,
            poll_requests: 3,
            polls_per_s: 3.0,
            poll_304_share: 1.0,
            poll_latency_ms: Percentiles::default(),
            sends: 0,
            sends_acknowledged: 0,
            send_latency_ms: Percentiles::default(),
            delivery_latency_ms: Percentiles::default(),
            heartbeats: 0,
            streams: None,
            errors: BTreeMap::new(),
            api_requests: None,
            check: CheckReport {
                enabled: true,
                anomalies: Anomalies::default(),
            },
        };
        let v = serde_json::to_value(&r).unwrap();
        for key in [
            "guests",
            "rooms",
            "server",
            "transport",
            "duration_s",
            "polls",
            "polls_per_s",
            "poll_304_share",
            "poll_latency_ms",
            "sends",
            "sends_acknowledged",
            "send_latency_ms",
            "delivery_latency_ms",
            "heartbeats",
            "streams",
            "errors",
            "api_requests",
            "check",
        ] {
            assert!(v.get(key).is_some(), "{key}");
        }
        assert!(v["api_requests"].is_null());
        assert!(v["streams"].is_null());
        assert_eq!(v["poll_latency_ms"]["p99"], 0.0);
        for key in [
            "enabled",
            "missing",
            "duplicated",
            "out_of_order",
            "lost_acknowledged",
        ] {
            assert!(v["check"].get(key).is_some(), "check.{key}");
        }
        assert!(r.summary().contains("check      OK"));
        let streamed = Report {
            transport: "stream",
            streams: Some(StreamReport {
                opened: 4,
                reconnects: 2,
                ..StreamReport::default()
            }),
            ..r
        };
        let v = serde_json::to_value(&streamed).unwrap();
        assert_eq!(v["streams"]["reconnects"], 2);
        assert!(streamed.summary().contains("4 opened, 2 reconnects"));
    }
}
