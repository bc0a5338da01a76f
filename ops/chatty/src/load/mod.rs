//! `chatty load`: the load generator's flags and entry point. The work is in
//! plan (who goes where, when), generator (the run and its sends), guest (a
//! guest's reading loop for each transport; streams in stream, their parser
//! in sse), edge (the held polls and streams that carry a guest's token),
//! checker (delivery rules), sockets (source addresses, the file limit) and
//! report (figures and the JSON report). With `--nchan` the same plan runs
//! against nginx + nchan instead (nchan: subscribers and publishes).
//!
//! For a load run against an embedded chat-api, turn its rate limits off
//! (`chat-api --ip-rate off --guest-rate off`): every guest comes from one IP
//! address here, and the default per-IP limit would refuse most of them.

pub mod checker;
pub mod edge;
#[cfg(test)]
mod fake_nchan;
#[cfg(test)]
mod fake_server;
pub mod generator;
mod guest;
pub mod nchan;
pub mod plan;
pub mod report;
pub mod scrape;
pub mod sockets;
pub mod sse;
mod stream;

use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use chatty_shared::{parse_duration, EXIT_BAD_CONFIG};

use crate::client::{ApiClient, ClientError, ClientOptions};
use edge::EdgeClient;
use generator::{Plan, RunResult, Stats, Target};
use nchan::NchanClient;
use plan::{Arrivals, Transport};
use report::{CheckReport, Report, StreamReport};

/// Flags of `chatty load`.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// Base URL of the deployment to load (the edge, or one API node), e.g.
    /// http://127.0.0.1:8080; with --nchan, nginx's.
    #[arg(long, env = "CHATTY_TARGET")]
    pub target: String,
    /// Load nginx + nchan instead, for comparison: each room is a channel,
    /// guests subscribe with nchan's long-poll (--transport hold) or
    /// EventSource (--transport stream) and senders publish to it; no
    /// joins, tokens or heartbeats. Delivery counts from the publish's
    /// 201/202.
    #[arg(long, env = "CHATTY_LOAD_NCHAN")]
    pub nchan: bool,
    /// With --nchan: the path a channel id is appended to for publishing
    /// (an `nchan_publisher` location).
    #[arg(long, env = "CHATTY_LOAD_NCHAN_PUB", default_value = "/pub/")]
    pub nchan_pub: String,
    /// With --nchan: the path a channel id is appended to for subscribing
    /// (an `nchan_subscriber longpoll` location for --transport hold, its
    /// subscriber timeout the --hold-wait; `eventsource` for stream).
    #[arg(long, env = "CHATTY_LOAD_NCHAN_SUB", default_value = "/sub/")]
    pub nchan_sub: String,
    /// Site id the guests join.
    #[arg(long, env = "CHATTY_SITE", default_value = "demo")]
    pub site: String,
    /// Number of guests.
    #[arg(long, default_value_t = 100)]
    pub guests: usize,
    /// Number of rooms (`load-0`, `load-1`, …); guests spread over them
    /// Zipf-like (s = 1), so a few rooms are big and most are small.
    #[arg(long, default_value_t = 10)]
    pub rooms: usize,
    /// Length of the measured window, after the ramp (e.g. 60s, 5m).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Messages per second in total, sent by guests picked at random, on a
    /// fixed timetable whatever the server's speed (open loop).
    #[arg(long, default_value_t = 10.0)]
    pub send_rate: f64,
    /// How sends are spaced: poisson (exponential gaps) or even.
    #[arg(long, value_enum, default_value = "poisson")]
    pub arrivals: Arrivals,
    /// How guests read their room: poll (a poll every --poll-interval, and
    /// a heartbeat every --heartbeat), hold (held polls with `Prefer: wait`,
    /// the next one as soon as the last is answered) or stream (the edge's
    /// event stream, reopened with `Last-Event-ID` when it ends). Held polls
    /// and streams carry the guest's token and send no heartbeats: the edge
    /// reports presence for them.
    #[arg(long, value_enum, default_value = "poll")]
    pub transport: Transport,
    /// Each guest polls this often, ±20% jitter per poll; with held polls,
    /// how long a guest waits after a failed one; with streams, how long
    /// after a JSON page instead of a stream (the edge is full).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub poll_interval: Duration,
    /// What a held poll asks the server to wait at most (`Prefer: wait=S`,
    /// whole seconds), with --transport hold. With --nchan, the server's
    /// subscriber timeout decides; this bounds the request's timeout.
    #[arg(long, default_value = "25s", value_parser = parse_duration)]
    pub hold_wait: Duration,
    /// Each guest on timed polls sends a heartbeat this often.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub heartbeat: Duration,
    /// Joins are spread evenly over this time before the window starts.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub ramp: Duration,
    /// Most HTTP requests in flight (and so connections) at once, held
    /// polls aside (one per guest).
    #[arg(long, default_value_t = 256)]
    pub connections: usize,
    /// Spread the guests' connections over the source addresses 127.0.0.1
    /// … 127.0.0.N (guest i uses address i mod N): one address opens about
    /// 28,000 connections to one port at most. Above 1, the target must be
    /// an IPv4 loopback address.
    #[arg(long, default_value_t = 1)]
    pub source_addrs: usize,
    /// Timeout of one HTTP request.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Check delivery: seqs in order with no gap, no duplicate, every
    /// acknowledged message seen by every other guest of its room. Any
    /// anomaly makes the exit status 1.
    #[arg(long)]
    pub check: bool,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// A chat-api /metrics URL (repeatable): the rise of
    /// chatty_api_requests_total over the run is reported as api_requests.
    #[arg(long = "api-metrics")]
    pub api_metrics: Vec<String>,
    /// Seed for room assignment, jitter and the send timetable.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Runtime worker threads.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Do not send `leave` for each guest at the end.
    #[arg(long)]
    pub no_leave: bool,
    /// No progress line on stderr.
    #[arg(long)]
    pub no_progress: bool,
}

impl LoadArgs {
    /// Refuses flags that cannot make a run.
    pub fn validate(&self) -> Result<(), String> {
        let url = reqwest::Url::parse(&self.target)
            .map_err(|e| format!("--target {:?}: {e}", self.target))?;
        if url.scheme() != "http" {
            return Err(format!(
                "--target {:?}: only http:// is supported",
                self.target
            ));
        }
        if !chatty_shared::is_valid_site(self.site.as_bytes()) {
            return Err(format!("--site {:?}: not a valid site id", self.site));
        }
        if self.guests == 0 || self.rooms == 0 {
            return Err("--guests and --rooms must be at least 1".into());
        }
        if !(self.send_rate >= 0.0 && self.send_rate.is_finite()) {
            return Err("--send-rate must be a number >= 0".into());
        }
        if self.duration.is_zero() || self.poll_interval.is_zero() || self.heartbeat.is_zero() {
            return Err("--duration, --poll-interval and --heartbeat must be positive".into());
        }
        if self.connections == 0 || self.workers == 0 {
            return Err("--connections and --workers must be at least 1".into());
        }
        if self.hold_wait < Duration::from_secs(1) {
            return Err("--hold-wait must be at least 1s".into());
        }
        if self.nchan {
            if self.transport == Transport::Poll {
                return Err("--nchan reads by --transport hold (long-poll) or stream (EventSource), not poll".into());
            }
            for (flag, path) in [
                ("--nchan-pub", &self.nchan_pub),
                ("--nchan-sub", &self.nchan_sub),
            ] {
                if !path.starts_with('/') || !path.ends_with('/') {
                    return Err(format!(
                        "{flag} {path:?}: a path starting and ending with '/'"
                    ));
                }
            }
        }
        sockets::check_source_addrs(&url, self.source_addrs)?;
        for u in &self.api_metrics {
            reqwest::Url::parse(u).map_err(|e| format!("--api-metrics {u:?}: {e}"))?;
        }
        Ok(())
    }
}

/// Runs `chatty load` and answers the process exit status: 0, 1 when the
/// run failed or the check found an anomaly, 64 for bad flags.
pub fn main(args: LoadArgs) -> i32 {
    if let Err(e) = args.validate() {
        eprintln!("chatty load: {e}");
        return EXIT_BAD_CONFIG;
    }
    let needed = sockets::files_needed(args.guests, args.connections, args.transport);
    if let Err(e) = sockets::check_file_limit(needed, sockets::raise_file_limit()) {
        eprintln!("chatty load: {e}");
        return 1;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.workers)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("chatty load: cannot start the runtime: {e}");
            return 1;
        }
    };
    rt.block_on(run(args))
}

/// What the run loads: the guests' clients, one or one per source address
/// (for the API calls, and for the held polls and streams that carry their
/// tokens; or nchan's).
fn target(args: &LoadArgs) -> Result<Target, ClientError> {
    let sources = match args.source_addrs {
        1 => vec![None],
        n => sockets::source_addrs(n).into_iter().map(Some).collect(),
    };
    if args.nchan {
        let idle = args.guests.div_ceil(args.source_addrs);
        let clients = sources
            .iter()
            .map(|&source| {
                let (p, s) = (&args.nchan_pub, &args.nchan_sub);
                NchanClient::new(&args.target, p, s, source, args.timeout, idle)
            })
            .collect::<Result<_, _>>()?;
        return Ok(Target::Nchan(clients));
    }
    let (clients, edges) = chatty_clients(args)?;
    Ok(Target::Chatty { clients, edges })
}

/// Chatty's clients: for the API calls, and for the held polls and streams
/// that carry the guests' tokens.
fn chatty_clients(args: &LoadArgs) -> Result<(Vec<ApiClient>, Vec<EdgeClient>), ClientError> {
    let mut opts = ClientOptions::new(args.target.clone(), args.site.clone());
    opts.max_in_flight = Some(args.connections);
    opts.timeout = args.timeout;
    let held = match args.transport {
        Transport::Poll => 0,
        Transport::Hold | Transport::Stream => args.guests.div_ceil(args.source_addrs),
    };
    let edge = |source| EdgeClient::new(&args.target, &args.site, source, args.timeout, held);
    if args.source_addrs == 1 {
        return Ok((vec![ApiClient::new(&opts)?], vec![edge(None)?]));
    }
    let sources = sockets::source_addrs(args.source_addrs);
    let edges = sources
        .iter()
        .map(|&a| edge(Some(a)))
        .collect::<Result<_, _>>()?;
    Ok((ApiClient::per_source(&opts, &sources)?, edges))
}

async fn run(args: LoadArgs) -> i32 {
    let target = match target(&args) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("chatty load: {e}");
            return 1;
        }
    };
    // For --api-metrics (the API nodes' pages).
    let client = match ApiClient::new(&ClientOptions::new(args.target.clone(), args.site.clone())) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("chatty load: {e}");
            return 1;
        }
    };
    let before = if args.api_metrics.is_empty() {
        None
    } else {
        match scrape::scrape_all(&client, &args.api_metrics).await {
            Ok(v) => Some(v),
            Err((url, e)) => {
                eprintln!("chatty load: cannot read {url}: {e}");
                return 1;
            }
        }
    };
    let stats = Arc::new(Stats::default());
    let progress = (!args.no_progress)
        .then(|| tokio::spawn(progress_line(stats.clone(), args.guests, args.transport)));
    let result = generator::run(target, plan(&args), stats.clone()).await;
    if let Some(p) = progress {
        p.abort();
        eprintln!();
    }
    let api_requests = match before {
        None => None,
        Some(before) => match scrape::scrape_all(&client, &args.api_metrics).await {
            Ok(after) => Some((after - before).max(0.0).round() as u64),
            Err((url, e)) => {
                eprintln!("chatty load: cannot read {url} after the run: {e}");
                None
            }
        },
    };
    let report = report(&args, &stats, &result, api_requests);
    print!("{}", report.summary());
    verdict(&args, &report, &result)
}

/// The generator's plan from the flags.
fn plan(args: &LoadArgs) -> Plan {
    // Unique per process, so parallel generators never mistake each
    // other's messages (or client ids) for their own.
    let run_tag = format!(
        "L{:x}p{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        std::process::id()
    );
    Plan {
        guests: args.guests,
        rooms: args.rooms,
        duration: args.duration,
        send_rate: args.send_rate,
        arrivals: args.arrivals,
        poll_interval: args.poll_interval,
        transport: args.transport,
        hold_wait: args.hold_wait,
        heartbeat: args.heartbeat,
        ramp: args.ramp,
        drain: args.poll_interval + Duration::from_secs(2),
        seed: args.seed,
        run_tag,
        leave: !args.no_leave,
    }
}

/// The run's figures.
fn report(args: &LoadArgs, stats: &Stats, result: &RunResult, api_requests: Option<u64>) -> Report {
    let window_s = result.window.as_secs_f64();
    let poll_requests = stats.poll_requests.load(Relaxed);
    Report {
        guests: args.guests,
        guests_joined: stats.joined.load(Relaxed),
        rooms: args.rooms,
        site: args.site.clone(),
        server: if args.nchan { "nchan" } else { "chatty" },
        transport: args.transport.as_str(),
        seed: args.seed,
        duration_s: window_s,
        elapsed_s: result.elapsed.as_secs_f64(),
        polls: stats.polls.load(Relaxed),
        poll_requests,
        polls_per_s: stats.polls_due_in_window.load(Relaxed) as f64 / window_s.max(1e-9),
        poll_304_share: if poll_requests == 0 {
            0.0
        } else {
            stats.poll_304.load(Relaxed) as f64 / poll_requests as f64
        },
        poll_latency_ms: Stats::percentiles(&stats.poll_latency),
        sends: stats.sends_due.load(Relaxed),
        sends_acknowledged: stats.sends_acked.load(Relaxed),
        send_latency_ms: Stats::percentiles(&stats.send_latency),
        delivery_latency_ms: Stats::percentiles(&stats.delivery_latency),
        heartbeats: stats.heartbeats.load(Relaxed),
        streams: (args.transport == Transport::Stream).then(|| StreamReport {
            opened: stats.streams_opened.load(Relaxed),
            reconnects: stats.stream_reconnects.load(Relaxed),
            ended_by_edge: stats.stream_ends.load(Relaxed),
            events: stats.stream_events.load(Relaxed),
            json_pages: stats.stream_pages.load(Relaxed),
        }),
        errors: stats.errors(),
        api_requests,
        check: CheckReport {
            enabled: args.check,
            anomalies: if args.check {
                result.anomalies.clone()
            } else {
                Default::default()
            },
        },
    }
}

/// Writes the JSON report when asked; answers the exit status.
fn verdict(args: &LoadArgs, report: &Report, result: &RunResult) -> i32 {
    let mut status = 0;
    if let Some(path) = &args.json {
        let written = serde_json::to_vec_pretty(report)
            .map_err(|e| e.to_string())
            .and_then(|bytes| std::fs::write(path, bytes).map_err(|e| e.to_string()));
        if let Err(e) = written {
            eprintln!("chatty load: cannot write {}: {e}", path.display());
            status = 1;
        }
    }
    if report.guests_joined == 0 {
        eprintln!("chatty load: no guest could join {}", args.target);
        status = 1;
    }
    if args.check && result.anomalies.total() > 0 {
        for note in &result.notes {
            println!("  anomaly: {note}");
        }
        status = 1;
    }
    status
}

/// Redraws one status line on stderr every second.
async fn progress_line(stats: Arc<Stats>, guests: usize, transport: Transport) {
    use std::io::Write as _;
    let start = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_polls = 0;
    loop {
        tick.tick().await;
        let polls = stats.polls.load(Relaxed);
        let reading = if transport == Transport::Stream {
            let d = Stats::percentiles(&stats.delivery_latency);
            format!(
                "streams {} (reconnects {})  events {}  delivery p99 {:.1} ms",
                stats.streams_opened.load(Relaxed),
                stats.stream_reconnects.load(Relaxed),
                stats.stream_events.load(Relaxed),
                d.p99,
            )
        } else {
            let p = Stats::percentiles(&stats.poll_latency);
            format!(
                "polls {} ({}/s)  304 {}  poll p99 {:.1} ms",
                polls,
                polls - last_polls,
                stats.poll_304.load(Relaxed),
                p.p99,
            )
        };
        let line = format!(
            "\r\x1b[2K{:>4}s  joined {}/{}  {reading}  sends {}/{}  errors {}",
            start.elapsed().as_secs(),
            stats.joined.load(Relaxed),
            guests,
            stats.sends_acked.load(Relaxed),
            stats.sends_due.load(Relaxed),
            stats.error_total(),
        );
        last_polls = polls;
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(line.as_bytes());
        let _ = err.flush();
    }
}

#[cfg(test)]
mod tests {
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
}
