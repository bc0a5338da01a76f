//! The API's Prometheus metrics, defined once with their names from the
//! contract; every label comes from a fixed set (never a room or site name).

use std::sync::LazyLock;

use chatty_shared::telemetry::LATENCY_BUCKETS;
use prometheus::{
    register_histogram, register_histogram_vec, register_int_counter, register_int_counter_vec,
    register_int_gauge_vec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGaugeVec, Opts,
};

/// Route labels of `chatty_api_requests_total` and
/// `chatty_api_request_duration_seconds`.
pub const ROUTES: &[&str] = &[
    "join",
    "messages_get",
    "messages_post",
    "members",
    "heartbeat",
    "leave",
    "presence",
    "admin",
    "assets",
    "health",
    "metrics",
    "other",
];

/// Outcome labels of `chatty_api_user_tokens_total`: accepted, or why a
/// host site's user token was refused.
pub const USER_TOKEN_OUTCOMES: &[&str] = &[
    "accepted",
    "malformed",
    "unknown_key",
    "wrong_algorithm",
    "bad_signature",
    "wrong_site",
    "expired",
    "not_yet_valid",
    "too_long_lived",
    "bad_claims",
    "replayed",
];

/// Outcome labels of `chatty_api_rules_applied_total`.
pub const RULE_OUTCOMES: &[&str] = &["masked", "blocked_text", "links_not_allowed", "slow_mode"];

/// Store operations timed by `chatty_api_store_duration_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOp {
    Ping,
    Site,
    Sites,
    CreateSite,
    SetLimits,
    Ban,
    IsBanned,
    Append,
    Delete,
    EventsAfter,
    Recent,
    UserKeys,
    AddUserKey,
    RemoveUserKey,
    Rules,
    SetRules,
    RoomSlowMode,
    SetRoomSlowMode,
    Moderate,
    AddAudit,
    Audit,
    SetTimeout,
    TimeoutUntil,
    Standing,
    SetModerator,
    IsModerator,
}

impl StoreOp {
    pub fn label(self) -> &'static str {
        match self {
            StoreOp::Ping => "ping",
            StoreOp::Site => "site",
            StoreOp::Sites => "list_sites",
            StoreOp::CreateSite => "create_site",
            StoreOp::SetLimits => "set_limits",
            StoreOp::Ban => "ban",
            StoreOp::IsBanned => "is_banned",
            StoreOp::Append => "append_message",
            StoreOp::Delete => "delete_message",
            StoreOp::EventsAfter => "events_after",
            StoreOp::Recent => "recent_messages",
            StoreOp::UserKeys => "user_keys",
            StoreOp::AddUserKey => "add_user_key",
            StoreOp::RemoveUserKey => "remove_user_key",
            StoreOp::Rules => "rules",
            StoreOp::SetRules => "set_rules",
            StoreOp::RoomSlowMode => "room_slow_mode",
            StoreOp::SetRoomSlowMode => "set_room_slow_mode",
            StoreOp::Moderate => "append_moderation",
            StoreOp::AddAudit => "add_audit",
            StoreOp::Audit => "audit",
            StoreOp::SetTimeout => "set_timeout",
            StoreOp::TimeoutUntil => "timeout_until",
            StoreOp::Standing => "standing",
            StoreOp::SetModerator => "set_moderator",
            StoreOp::IsModerator => "is_moderator",
        }
    }
}

/// Every metric of the API.
pub struct Metrics {
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub store_duration: HistogramVec,
    pub store_errors: IntCounter,
    pub messages_stored: IntCounter,
    pub send_batch_size: Histogram,
    pub publish_failures: IntCounter,
    pub rate_limited: IntCounterVec,
    pub rules_applied: IntCounterVec,
    pub user_tokens: IntCounterVec,
    pub presence_changes: IntCounterVec,
    pub presence_batch_tokens: IntCounterVec,
    pub backend_up: IntGaugeVec,
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register_int_counter_vec!(name, help, labels).unwrap_or_else(|_| {
        IntCounterVec::new(Opts::new(name, help), labels).unwrap_or_else(|_| unreachable!())
    })
}

fn counter(name: &str, help: &str) -> IntCounter {
    register_int_counter!(name, help)
        .unwrap_or_else(|_| IntCounter::new(name, help).unwrap_or_else(|_| unreachable!()))
}

fn histogram_vec(name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
    register_histogram_vec!(opts.clone(), labels)
        .unwrap_or_else(|_| HistogramVec::new(opts, labels).unwrap_or_else(|_| unreachable!()))
}

/// Buckets of `chatty_api_send_batch_size`: sends per store transaction.
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

fn histogram(name: &str, help: &str, buckets: &[f64]) -> Histogram {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    register_histogram!(opts.clone())
        .unwrap_or_else(|_| Histogram::with_opts(opts).unwrap_or_else(|_| unreachable!()))
}

/// The process-wide metrics (the default Prometheus registry).
pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let m = Metrics {
        requests: counter_vec(
            "chatty_api_requests_total",
            "HTTP requests answered, by route and status class.",
            &["route", "status_class"],
        ),
        request_duration: histogram_vec(
            "chatty_api_request_duration_seconds",
            "Time to answer an HTTP request, by route.",
            &["route"],
        ),
        store_duration: histogram_vec(
            "chatty_api_store_duration_seconds",
            "Time of a store call, by operation.",
            &["op"],
        ),
        store_errors: counter(
            "chatty_api_store_errors_total",
            "Store calls that failed or timed out.",
        ),
        messages_stored: counter(
            "chatty_api_messages_stored_total",
            "Messages durably stored.",
        ),
        send_batch_size: histogram(
            "chatty_api_send_batch_size",
            "Sends stored per store transaction (the writer's batches).",
            BATCH_BUCKETS,
        ),
        publish_failures: counter(
            "chatty_api_publish_failures_total",
            "Bus publishes that failed (the write itself succeeded).",
        ),
        rate_limited: counter_vec(
            "chatty_api_rate_limited_total",
            "Requests refused by a rate limit, by scope.",
            &["scope"],
        ),
        rules_applied: counter_vec(
            "chatty_api_rules_applied_total",
            "Sends a site's rules masked or refused, by outcome.",
            &["outcome"],
        ),
        user_tokens: counter_vec(
            "chatty_api_user_tokens_total",
            "Host sites' user tokens at join, by outcome (accepted, or the refusal's reason).",
            &["outcome"],
        ),
        presence_changes: counter_vec(
            "chatty_api_presence_changes_total",
            "Members list changes, by kind.",
            &["kind"],
        ),
        presence_batch_tokens: counter_vec(
            "chatty_api_presence_batch_tokens_total",
            "Guest tokens of the edge's presence batches, by outcome (present, left, refused).",
            &["outcome"],
        ),
        backend_up: register_int_gauge_vec!(
            "chatty_api_backend_up",
            "1 when the backend answered its last check.",
            &["backend"]
        )
        .unwrap_or_else(|_| {
            IntGaugeVec::new(
                Opts::new("chatty_api_backend_up", "backend up"),
                &["backend"],
            )
            .unwrap_or_else(|_| unreachable!())
        }),
    };
    // Make every series visible from the start.
    for route in ROUTES {
        let _ = m.request_duration.with_label_values(&[route]);
    }
    for scope in ["guest", "ip"] {
        let _ = m.rate_limited.with_label_values(&[scope]);
    }
    for outcome in RULE_OUTCOMES {
        let _ = m.rules_applied.with_label_values(&[outcome]);
    }
    for outcome in USER_TOKEN_OUTCOMES {
        let _ = m.user_tokens.with_label_values(&[outcome]);
    }
    for kind in ["join", "leave", "expire"] {
        let _ = m.presence_changes.with_label_values(&[kind]);
    }
    for outcome in ["present", "left", "refused"] {
        let _ = m.presence_batch_tokens.with_label_values(&[outcome]);
    }
    m
});

/// The status class label of a status code.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// The route label of a matched resource pattern and method.
pub fn route_label(pattern: Option<&str>, method: &actix_web::http::Method) -> &'static str {
    use actix_web::http::Method;
    let Some(p) = pattern else { return "other" };
    if p.ends_with("/join") {
        "join"
    } else if p.ends_with("/messages") && method == Method::GET {
        "messages_get"
    } else if p.ends_with("/messages") && method == Method::POST {
        "messages_post"
    } else if p.ends_with("/members") {
        "members"
    } else if p.ends_with("/heartbeat") {
        "heartbeat"
    } else if p.ends_with("/leave") {
        "leave"
    } else if p == "/v1/internal/presence" {
        "presence"
    } else if p.starts_with("/v1/admin")
        || p.ends_with("/bans")
        || p.ends_with("/limits")
        || p.ends_with("/rules")
        || p.ends_with("/slow-mode")
        || p.ends_with("/{seq}")
    {
        "admin"
    } else if p == "/healthz" || p == "/readyz" {
        "health"
    } else if p == "/metrics" {
        "metrics"
    } else if p == "/"
        || p.ends_with(".js")
        || p.ends_with(".css")
        || p.ends_with("/frame")
        || p.ends_with(".json")
    {
        "assets"
    } else {
        "other"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::Method;

    #[test]
    fn labels_are_bounded() {
        let room = "/v1/sites/{site}/rooms/{room}";
        assert_eq!(
            route_label(Some(&format!("{room}/join")), &Method::POST),
            "join"
        );
        assert_eq!(
            route_label(Some(&format!("{room}/messages")), &Method::GET),
            "messages_get"
        );
        assert_eq!(
            route_label(Some(&format!("{room}/messages")), &Method::POST),
            "messages_post"
        );
        assert_eq!(
            route_label(Some(&format!("{room}/messages/{{seq}}")), &Method::DELETE),
            "admin"
        );
        assert_eq!(route_label(Some("/v1/widget.js"), &Method::GET), "assets");
        assert_eq!(
            route_label(Some("/v1/internal/presence"), &Method::POST),
            "presence"
        );
        assert_eq!(
            route_label(Some(&format!("{room}/slow-mode")), &Method::PUT),
            "admin"
        );
        assert_eq!(
            route_label(Some("/v1/sites/{site}/rules"), &Method::PUT),
            "admin"
        );
        assert_eq!(route_label(None, &Method::GET), "other");
        for p in ["/x", "/healthz", "/metrics", "/v1/admin/sites"] {
            assert!(ROUTES.contains(&route_label(Some(p), &Method::GET)));
        }
        assert_eq!(status_class(304), "3xx");
        assert_eq!(status_class(503), "5xx");
    }
}
