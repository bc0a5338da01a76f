//! The load generator's runs against the fake chat server and the fake
//! nchan, and its flags.

use super::*;
use clap::Parser;

fn args(target: &str, json: &std::path::Path) -> LoadArgs {
    args_with(target, json, &[])
}

fn parse(argv: &[&str]) -> Result<LoadArgs, clap::Error> {
    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        load: LoadArgs,
    }
    Wrap::try_parse_from(argv).map(|w| w.load)
}

/// A short run against `target`; a flag in `extra` replaces the same
/// flag of the short run's.
fn args_with(target: &str, json: &std::path::Path, extra: &[&str]) -> LoadArgs {
    let base = [
        ("--target", target),
        ("--guests", "40"),
        ("--rooms", "4"),
        ("--duration", "2s"),
        ("--ramp", "300ms"),
        ("--poll-interval", "200ms"),
        ("--heartbeat", "500ms"),
        ("--send-rate", "25"),
        ("--json", json.to_str().unwrap()),
    ];
    let mut argv = vec!["load", "--check", "--no-progress"];
    for (flag, value) in base {
        if !extra.contains(&flag) {
            argv.extend([flag, value]);
        }
    }
    argv.extend_from_slice(extra);
    parse(&argv).unwrap()
}

async fn run_for_report(args: LoadArgs) -> (i32, serde_json::Value) {
    let json = args.json.clone().unwrap();
    let status = run(args).await;
    let report = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json);
    (status, report)
}

fn temp_json(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("chatty-load-{name}-{}.json", std::process::id()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_run_against_a_fake_server() {
    let server = fake_server::start(None).await;
    let json = temp_json("clean");
    let (status, report) = run_for_report(args(&server.base, &json)).await;
    assert_eq!(status, 0, "{report:#}");
    assert_eq!(report["transport"], "poll");
    assert_eq!(server.held(), 0, "timed polls ask for no wait");
    assert_eq!(report["guests_joined"], 40);
    assert!(report["sends"].as_u64().unwrap() > 20, "{report:#}");
    assert_eq!(report["sends"], report["sends_acknowledged"]);
    assert!(report["poll_304_share"].as_f64().unwrap() > 0.0);
    assert!(report["delivery_latency_ms"]["count"].as_u64().unwrap() > 0);
    assert!(report["poll_latency_ms"]["p99"].as_f64().unwrap() > 0.0);
    assert_eq!(report["check"]["lost_acknowledged"], 0);
    // Timed polls heartbeat (every 500 ms here).
    assert!(report["heartbeats"].as_u64().unwrap() > 40, "{report:#}");
    assert!(server.heartbeats() > 0);
    assert!(report["streams"].is_null());
    assert!(
        report["errors"].as_object().unwrap().is_empty(),
        "{report:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hidden_event_fails_the_check() {
    let server = fake_server::start(Some(3)).await;
    let json = temp_json("hidden");
    let (status, report) = run_for_report(args(&server.base, &json)).await;
    assert_eq!(status, 1, "{report:#}");
    assert!(
        report["check"]["missing"].as_u64().unwrap() > 0,
        "{report:#}"
    );
    assert!(
        report["check"]["lost_acknowledged"].as_u64().unwrap() > 0,
        "{report:#}"
    );
}

/// Held polls: every guest reads as soon as a message is sent, not at
/// its next poll (3 s apart here), and the check is clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_run_with_held_polls() {
    let server = fake_server::start(None).await;
    let json = temp_json("hold");
    let hold = ["--transport", "hold", "--hold-wait", "1s"];
    let extra = [&hold[..], &["--poll-interval", "3s"]].concat();
    let (status, report) = run_for_report(args_with(&server.base, &json, &extra)).await;
    assert_eq!(status, 0, "{report:#}");
    assert_eq!(report["transport"], "hold");
    assert_eq!(report["guests_joined"], 40);
    assert!(report["sends"].as_u64().unwrap() > 20, "{report:#}");
    assert_eq!(report["sends"], report["sends_acknowledged"]);
    assert!(server.held() > 0, "{report:#}");
    // Every held poll carries the token, and none heartbeats.
    assert_eq!(server.held_with_token(), server.held());
    assert_eq!(server.heartbeats(), 0);
    assert_eq!(report["heartbeats"], 0);
    // Quiet rooms see their held polls end in 304 after the wait.
    assert!(report["poll_304_share"].as_f64().unwrap() > 0.0);
    // Timed polls 3 s apart would put the median near 1.5 s.
    let delivery = &report["delivery_latency_ms"];
    assert!(delivery["count"].as_u64().unwrap() > 0, "{report:#}");
    assert!(delivery["p50"].as_f64().unwrap() < 1000.0, "{report:#}");
    for key in ["missing", "duplicated", "out_of_order", "lost_acknowledged"] {
        assert_eq!(report["check"][key], 0, "{report:#}");
    }
    assert!(
        report["errors"].as_object().unwrap().is_empty(),
        "{report:#}"
    );
}

/// Streams: every guest reads each message as it is sent, across
/// streams the server ends every 700 ms (reconnects with
/// `Last-Event-ID`) and JSON pages in place of every 4th stream; no
/// heartbeats, and the check is clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_run_with_streams() {
    let streaming = fake_server::Streaming {
        life: Duration::from_millis(700),
        retry_ms: 50,
        page_every: 4,
    };
    let server = fake_server::start_streaming(None, streaming).await;
    let json = temp_json("stream");
    let extra = ["--transport", "stream", "--poll-interval", "3s"];
    let (status, report) = run_for_report(args_with(&server.base, &json, &extra)).await;
    assert_eq!(status, 0, "{report:#}");
    assert_eq!(report["transport"], "stream");
    assert_eq!(report["guests_joined"], 40);
    assert!(report["sends"].as_u64().unwrap() > 20, "{report:#}");
    assert_eq!(report["sends"], report["sends_acknowledged"]);
    let streams = &report["streams"];
    let n = |k: &str| streams[k].as_u64().unwrap();
    assert!(n("opened") > 40, "{report:#}");
    assert!(n("reconnects") > 0 && n("ended_by_edge") > 0, "{report:#}");
    assert!(n("json_pages") > 0 && n("events") > 0, "{report:#}");
    // Each reconnect says where it was. A request in flight when the run
    // stops may be counted on one side only: one per guest at most.
    let (requests, resumed) = server.streams();
    assert!(resumed <= n("reconnects") && n("reconnects") <= resumed + 40);
    let answered = n("opened") + n("json_pages");
    assert!(answered <= requests && requests <= answered + 40);
    assert_eq!(report["poll_requests"], streams["json_pages"]);
    // Timed polls 3 s apart would put the median near 1.5 s.
    let delivery = &report["delivery_latency_ms"];
    assert!(delivery["count"].as_u64().unwrap() > 0, "{report:#}");
    assert!(delivery["p50"].as_f64().unwrap() < 1000.0, "{report:#}");
    for key in ["missing", "duplicated", "out_of_order", "lost_acknowledged"] {
        assert_eq!(report["check"][key], 0, "{report:#}");
    }
    assert!(
        report["errors"].as_object().unwrap().is_empty(),
        "{report:#}"
    );
    assert_eq!(server.heartbeats(), 0);
    assert_eq!(report["heartbeats"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hidden_event_on_a_stream_fails_the_check() {
    let server = fake_server::start_streaming(Some(3), Default::default()).await;
    let json = temp_json("stream-hidden");
    let extra = ["--transport", "stream"];
    let (status, report) = run_for_report(args_with(&server.base, &json, &extra)).await;
    assert_eq!(status, 1, "{report:#}");
    assert!(
        report["check"]["missing"].as_u64().unwrap() > 0,
        "{report:#}"
    );
}

/// A server that answers held polls at once (RFC 7240 lets it) gets
/// timed polls, not a tight loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_polls_the_server_does_not_hold_are_paced() {
    let server = fake_server::start_ignoring_wait().await;
    let json = temp_json("unheld");
    let extra = ["--transport", "hold", "--hold-wait", "1s"];
    let (status, report) = run_for_report(args_with(&server.base, &json, &extra)).await;
    assert_eq!(status, 0, "{report:#}");
    assert!(server.held() > 0, "{report:#}");
    // 40 guests polling every 200 ms ±20% for under 5 s: about 1,000.
    let requests = report["poll_requests"].as_u64().unwrap();
    assert!(requests < 2_000, "{report:#}");
    assert_eq!(report["check"]["missing"], 0, "{report:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_connect_from_every_source_address() {
    let server = fake_server::start(None).await;
    let json = temp_json("sources");
    let extra = [
        "--source-addrs",
        "3",
        "--transport",
        "hold",
        "--hold-wait",
        "1s",
    ];
    let (status, report) = run_for_report(args_with(&server.base, &json, &extra)).await;
    assert_eq!(status, 0, "{report:#}");
    let peers: Vec<String> = server.peers().iter().map(|p| p.to_string()).collect();
    assert_eq!(peers, ["127.0.0.1", "127.0.0.2", "127.0.0.3"]);
}

fn fake_nchan_behaviour(hide: Option<usize>) -> fake_nchan::Behaviour {
    fake_nchan::Behaviour {
        wait: Duration::from_millis(400),
        life: Duration::from_millis(700),
        hide,
    }
}

/// nchan's long-poll: every subscriber reads each message (one per
/// answer) soon after it is published, walking on with `If-None-Match`
/// and `If-Modified-Since`; quiet channels end their waits in `408`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_run_against_a_fake_nchan_with_long_polls() {
    let server = fake_nchan::start(fake_nchan_behaviour(None)).await;
    let json = temp_json("nchan-hold");
    let extra = ["--nchan", "--transport", "hold", "--poll-interval", "3s"];
    let (status, report) = run_for_report(args_with(&server.base, &json, &extra)).await;
    assert_eq!(status, 0, "{report:#}");
    assert_eq!(report["server"], "nchan");
    assert_eq!(report["transport"], "hold");
    assert_eq!(report["guests_joined"], 40);
    assert!(report["sends"].as_u64().unwrap() > 20, "{report:#}");
    assert_eq!(report["sends"], report["sends_acknowledged"]);
    assert_eq!(server.published(), report["sends"].as_u64().unwrap());
    assert!(server.long_polls() > 40, "{report:#}");
    assert!(
        report["poll_304_share"].as_f64().unwrap() > 0.0,
        "{report:#}"
    );
    let delivery = &report["delivery_latency_ms"];
    assert!(delivery["count"].as_u64().unwrap() > 0, "{report:#}");
    assert!(delivery["p50"].as_f64().unwrap() < 1000.0, "{report:#}");
    for key in ["missing", "duplicated", "out_of_order", "lost_acknowledged"] {
        assert_eq!(report["check"][key], 0, "{report:#}");
    }
    assert!(
        report["errors"].as_object().unwrap().is_empty(),
        "{report:#}"
    );
    assert_eq!(report["heartbeats"], 0);
}

/// nchan's EventSource: streams the server ends every 700 ms are
/// reopened with `Last-Event-ID`, and nothing is lost or repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_run_against_a_fake_nchan_with_event_source() {
    let server = fake_nchan::start(fake_nchan_behaviour(None)).await;
    let json = temp_json("nchan-stream");
    let extra = ["--nchan", "--transport", "stream"];
    let (status, report) = run_for_report(args_with(&server.base, &json, &extra)).await;
    assert_eq!(status, 0, "{report:#}");
    assert_eq!(report["server"], "nchan");
    let streams = &report["streams"];
    let n = |k: &str| streams[k].as_u64().unwrap();
    assert!(n("opened") > 40 && n("reconnects") > 0, "{report:#}");
    assert!(n("ended_by_edge") > 0 && n("events") > 0, "{report:#}");
    let (requests, resumed) = server.streams();
    assert!(resumed <= n("reconnects") && n("reconnects") <= resumed + 40);
    assert!(n("opened") <= requests && requests <= n("opened") + 40);
    assert!(report["delivery_latency_ms"]["count"].as_u64().unwrap() > 0);
    for key in ["missing", "duplicated", "out_of_order", "lost_acknowledged"] {
        assert_eq!(report["check"][key], 0, "{report:#}");
    }
    assert!(
        report["errors"].as_object().unwrap().is_empty(),
        "{report:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_nchan_hides_fails_the_check() {
    for transport in ["hold", "stream"] {
        let server = fake_nchan::start(fake_nchan_behaviour(Some(1))).await;
        let json = temp_json(&format!("nchan-hidden-{transport}"));
        let extra = ["--nchan", "--transport", transport];
        let (status, report) = run_for_report(args_with(&server.base, &json, &extra)).await;
        assert_eq!(status, 1, "{report:#}");
        assert!(
            report["check"]["missing"].as_u64().unwrap() > 0,
            "{report:#}"
        );
        assert!(
            report["check"]["lost_acknowledged"].as_u64().unwrap() > 0,
            "{report:#}"
        );
    }
}

#[test]
fn nchan_flags() {
    let json = temp_json("nchan-flags");
    let url = "http://127.0.0.1:8080";
    let ok = args_with(url, &json, &["--nchan", "--transport", "stream"]);
    assert!(ok.nchan && ok.validate().is_ok());
    assert_eq!(
        (ok.nchan_pub.as_str(), ok.nchan_sub.as_str()),
        ("/pub/", "/sub/")
    );
    let poll = args_with(url, &json, &["--nchan"]);
    assert!(poll.validate().unwrap_err().contains("not poll"));
    let bad = ["--nchan", "--transport", "hold", "--nchan-sub", "/sub"];
    assert!(args_with(url, &json, &bad).validate().is_err());
}

#[test]
fn source_addresses_need_a_loopback_target() {
    let json = temp_json("refused");
    for target in ["http://192.0.2.1:8080", "http://chat.example:8080"] {
        let a = args_with(target, &json, &["--source-addrs", "2"]);
        let e = a.validate().unwrap_err();
        assert!(e.contains("loopback"), "{e}");
        assert_eq!(main(a), EXIT_BAD_CONFIG);
        let one = args_with(target, &json, &["--source-addrs", "1"]);
        assert!(one.validate().is_ok());
    }
    let ok = args_with("http://127.0.0.1:8080", &json, &["--source-addrs", "3"]);
    assert!(ok.validate().is_ok());
}

#[test]
fn transport_flags() {
    let json = temp_json("flags");
    let a = args("http://127.0.0.1:8080", &json);
    assert_eq!(a.transport, Transport::Poll);
    assert_eq!(a.hold_wait, Duration::from_secs(25));
    assert_eq!(a.source_addrs, 1);
    let held = args_with("http://127.0.0.1:8080", &json, &["--transport", "hold"]);
    assert_eq!(held.transport, Transport::Hold);
    let short = ["--hold-wait", "500ms"];
    assert!(args_with("http://127.0.0.1:8080", &json, &short)
        .validate()
        .is_err());
    let stream = args_with("http://127.0.0.1:8080", &json, &["--transport", "stream"]);
    assert_eq!(stream.transport, Transport::Stream);
    assert!(stream.validate().is_ok());
    let argv = [
        "load",
        "--target",
        "http://127.0.0.1:8080",
        "--transport",
        "sse",
    ];
    assert!(parse(&argv).is_err());
}
