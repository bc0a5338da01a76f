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
    /// What the rooms' names start with, so that two runs side by side
    /// (a hot room beside a crowd, say) keep to rooms of their own.
    #[arg(long, default_value = "load")]
    pub room_prefix: String,
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
        let last_room = format!("{}-{}", self.room_prefix, self.rooms.saturating_sub(1));
        if chatty_shared::RoomKey::new(&self.site, &last_room).is_err() {
            return Err(format!(
                "--room-prefix {:?}: {last_room:?} is not a valid room name",
                self.room_prefix
            ));
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
        room_prefix: args.room_prefix.clone(),
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
mod tests;
