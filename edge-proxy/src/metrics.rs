//! The edge's Prometheus metrics (default registry), named once here. No
//! label is ever a room or a site.

use std::sync::LazyLock;

use prometheus::{
    register_histogram, register_int_counter, register_int_counter_vec, register_int_gauge, Gauge,
    Histogram, IntCounter, IntCounterVec, IntGauge,
};

/// Why the edge refused a connection or request (`reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    ConnLimit,
    HeaderTooLarge,
    BodyTooLarge,
    HeaderTimeout,
    RateLimited,
}

impl Rejection {
    const ALL: [Rejection; 5] = [
        Rejection::ConnLimit,
        Rejection::HeaderTooLarge,
        Rejection::BodyTooLarge,
        Rejection::HeaderTimeout,
        Rejection::RateLimited,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Rejection::ConnLimit => "conn_limit",
            Rejection::HeaderTooLarge => "header_too_large",
            Rejection::BodyTooLarge => "body_too_large",
            Rejection::HeaderTimeout => "header_timeout",
            Rejection::RateLimited => "rate_limited",
        }
    }
}

/// Why a held poll stopped being held (`reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// Its room moved (or the map must be asked again): answered as a
    /// fresh poll would be.
    Moved,
    /// Its wait ended: `304`.
    Timeout,
    /// The edge is stopping: `304`.
    Shutdown,
    /// The client closed its connection while held.
    Gone,
}

impl Release {
    const ALL: [Release; 4] = [
        Release::Moved,
        Release::Timeout,
        Release::Shutdown,
        Release::Gone,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Release::Moved => "moved",
            Release::Timeout => "timeout",
            Release::Shutdown => "shutdown",
            Release::Gone => "gone",
        }
    }
}

/// Why an event stream ended (`reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// The edge is stopping: ended with a `retry:` hint.
    Shutdown,
    /// The client closed its connection.
    Gone,
    /// No API node answered: ended with a `retry:` hint.
    Upstream,
}

impl StreamEnd {
    const ALL: [StreamEnd; 3] = [StreamEnd::Shutdown, StreamEnd::Gone, StreamEnd::Upstream];

    pub fn label(self) -> &'static str {
        match self {
            StreamEnd::Shutdown => "shutdown",
            StreamEnd::Gone => "gone",
            StreamEnd::Upstream => "upstream",
        }
    }
}

/// Every metric of the edge, registered on first use.
pub struct Metrics {
    pub short_circuit: IntCounter,
    pub cached: IntCounter,
    pub forwarded: IntCounter,
    pub error: IntCounter,
    pub rejected_requests: IntCounter,
    pub upstream_duration: Histogram,
    pub map_entries: IntGauge,
    pub page_cache_bytes: IntGauge,
    pub map_evictions: IntCounter,
    pub map_resets: IntCounter,
    pub bus_up: IntGauge,
    pub bus_last_message_age: Gauge,
    pub upstreams_healthy: IntGauge,
    pub held_polls: IntGauge,
    pub open_streams: IntGauge,
    pub max_held: IntGauge,
    pub push: Histogram,
    pub presence_ok: IntCounter,
    pub presence_failed: IntCounter,
    rejected: IntCounterVec,
    released: IntCounterVec,
    stream_ends: IntCounterVec,
}

impl Metrics {
    /// Counts a refused connection or request, by reason.
    pub fn reject(&self, why: Rejection) {
        self.rejected.with_label_values(&[why.label()]).inc();
        self.rejected_requests.inc();
    }

    /// Counts a held poll let go, by reason.
    pub fn release(&self, why: Release) {
        self.released.with_label_values(&[why.label()]).inc();
    }

    /// Counts an event stream ended, by reason.
    pub fn stream_end(&self, why: StreamEnd) {
        self.stream_ends.with_label_values(&[why.label()]).inc();
    }
}

/// A counter family with a `reason` label, every reason registered at 0.
fn reasons(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let family = register_int_counter_vec!(name, help, &["reason"]).expect("metric registers once");
    for label in labels {
        family.with_label_values(&[label]);
    }
    family
}

fn build() -> Metrics {
    let requests = register_int_counter_vec!(
        "chatty_edge_requests_total",
        "Requests by outcome: answered 304 from memory (short_circuit), answered 200 from the page cache (cached), forwarded, failed, rejected.",
        &["outcome"]
    )
    .expect("metric registers once");
    let rejected = reasons(
        "chatty_edge_rejected_total",
        "Connections and requests refused by the edge's protections, by reason.",
        &Rejection::ALL.map(Rejection::label),
    );
    let released = reasons(
        "chatty_edge_held_releases_total",
        "Held polls (Prefer: wait) let go, by reason: their room moved, their wait ended, the edge stopping, the client gone.",
        &Release::ALL.map(Release::label),
    );
    let stream_ends = reasons(
        "chatty_edge_stream_ends_total",
        "Event streams ended, by reason: the edge stopping, the client gone, no API node answering.",
        &StreamEnd::ALL.map(StreamEnd::label),
    );
    let presence = register_int_counter_vec!(
        "chatty_edge_presence_batches_total",
        "Batched presence reports sent to an API node, by outcome (ok, failed).",
        &["outcome"]
    )
    .expect("metric registers once");
    Metrics {
        short_circuit: requests.with_label_values(&["short_circuit"]),
        cached: requests.with_label_values(&["cached"]),
        forwarded: requests.with_label_values(&["forwarded"]),
        error: requests.with_label_values(&["error"]),
        rejected_requests: requests.with_label_values(&["rejected"]),
        upstream_duration: register_histogram!(
            "chatty_edge_upstream_duration_seconds",
            "Time from choosing an API node to the end of its response.",
            chatty_shared::telemetry::LATENCY_BUCKETS.to_vec()
        )
        .expect("metric registers once"),
        map_entries: register_int_gauge!(
            "chatty_edge_map_entries",
            "Rooms held in the version map."
        )
        .expect("metric registers once"),
        page_cache_bytes: register_int_gauge!(
            "chatty_edge_page_cache_bytes",
            "Bytes of poll answers held in the page cache."
        )
        .expect("metric registers once"),
        map_evictions: register_int_counter!(
            "chatty_edge_map_evictions_total",
            "Rooms evicted from the version map to stay within --max-rooms."
        )
        .expect("metric registers once"),
        map_resets: register_int_counter!(
            "chatty_edge_map_resets_total",
            "Times the whole version map was forgotten (bus lost or silent)."
        )
        .expect("metric registers once"),
        bus_up: register_int_gauge!(
            "chatty_edge_bus_up",
            "1 while the bus subscription is established and heard from, else 0."
        )
        .expect("metric registers once"),
        bus_last_message_age: prometheus::register_gauge!(
            "chatty_edge_bus_last_message_age_seconds",
            "Seconds since the last bus message of any kind (heartbeats included)."
        )
        .expect("metric registers once"),
        upstreams_healthy: register_int_gauge!(
            "chatty_edge_upstreams_healthy",
            "API nodes currently passing health checks."
        )
        .expect("metric registers once"),
        held_polls: register_int_gauge!(
            "chatty_edge_held_polls",
            "Polls held open at the edge (Prefer: wait) until their room moves."
        )
        .expect("metric registers once"),
        open_streams: register_int_gauge!(
            "chatty_edge_open_streams",
            "Event streams open at the edge."
        )
        .expect("metric registers once"),
        max_held: register_int_gauge!(
            "chatty_edge_max_held",
            "The cap on held polls and open streams together (--max-held)."
        )
        .expect("metric registers once"),
        push: register_histogram!(
            "chatty_edge_push_seconds",
            "Time from the edge hearing that a room moved to the first byte written to a held poll or stream waiting on it.",
            chatty_shared::telemetry::LATENCY_BUCKETS.to_vec()
        )
        .expect("metric registers once"),
        presence_ok: presence.with_label_values(&["ok"]),
        presence_failed: presence.with_label_values(&["failed"]),
        rejected,
        released,
        stream_ends,
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(build);

/// The edge's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// Brings a counter mirrored from elsewhere up to `total`.
pub fn catch_up(counter: &IntCounter, total: u64) {
    let seen = counter.get();
    if total > seen {
        counter.inc_by(total - seen);
    }
}
