//! Observability against a real local cluster: every metric the alert and
//! recording rules and the Grafana dashboard name is exported by the code, and
//! a real Prometheus scraping the cluster computes the short-circuit ratio.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chatty::client::Poll;
use chatty_tests::chat::{client, Guest};
use chatty_tests::edge_polls::learn;
use chatty_tests::procs::Proc;
use chatty_tests::scrape::scrape;
use chatty_tests::stack::{Stack, RATES_OFF};
use chatty_tests::{free_port, http, wait_for};

/// The repository root (the tests run with the tests crate as cwd).
const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// Two API nodes on one fresh database and one Redis prefix, and an edge in
/// front of both on the same bus.
async fn cluster() -> Stack {
    Stack::start(2, RATES_OFF, &[]).await
}

/// Sample names of a Prometheus text page, with each histogram sample also
/// counted under its family name (`_bucket`, `_sum`, `_count` stripped).
fn exported_names(page: &str, into: &mut BTreeSet<String>) {
    for line in page.lines().filter(|l| !l.starts_with('#')) {
        let name = line
            .split(|c: char| c == '{' || c.is_whitespace())
            .next()
            .unwrap_or("");
        if name.is_empty() {
            continue;
        }
        into.insert(name.to_owned());
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(family) = name.strip_suffix(suffix) {
                into.insert(family.to_owned());
            }
        }
    }
}

/// `python3 ops/metric_names.py [args]` from the repository root, minus the
/// recording rules' outputs (`chatty:...`), which are no metric of the code.
fn names_used_by_rules_and_dashboard(args: &[&str]) -> Vec<String> {
    let out = Command::new("python3")
        .arg("ops/metric_names.py")
        .args(args)
        .current_dir(ROOT)
        .output()
        .expect("run python3 ops/metric_names.py (python3 with PyYAML is needed: apt-get install -y python3-yaml)");
    assert!(
        out.status.success(),
        "python3 ops/metric_names.py failed (python3 with PyYAML is needed: apt-get install -y python3-yaml): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names: Vec<String> = String::from_utf8(out.stdout)
        .expect("utf-8 names")
        .lines()
        .map(str::trim)
        .filter(|n| !n.is_empty() && !n.contains(':'))
        .map(str::to_owned)
        .collect();
    assert!(!names.is_empty(), "ops/metric_names.py printed no name");
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_rules_and_dashboard_name_is_exported() {
    let c = cluster().await;
    let edge = &c.edge.base;

    // Traffic through the edge touching every route the rules look at.
    let g = Guest::join(edge, "acme", "hall", "ada").await;
    g.send("hello", "c1").await;
    let (etag, seq) = learn(edge, "hall").await; // polls answered 200 and 304
    let reader = client(edge, "acme");
    let mut held = etag.clone();
    assert!(matches!(
        reader.poll("hall", seq, &mut held).await,
        Ok(Poll::NotModified)
    ));
    let members = http()
        .get(format!("{edge}/v1/sites/acme/rooms/hall/members"))
        .send()
        .await
        .expect("members");
    assert_eq!(members.status(), 200);
    g.client
        .heartbeat("hall", &g.joined.token)
        .await
        .expect("heartbeat");
    g.client
        .leave("hall", &g.joined.token)
        .await
        .expect("leave");
    let missing_site = http()
        .get(format!("{edge}/v1/sites/no-such-site/rooms/hall/messages"))
        .send()
        .await
        .expect("unknown site");
    assert_eq!(missing_site.status(), 404);
    // Both nodes answer something directly, so both have every family that
    // appears on first observation (histograms, labelled counters).
    for node in &c.apis {
        let page = http()
            .get(format!("{}/v1/sites/acme/rooms/hall/messages", node.base))
            .send()
            .await
            .expect("direct poll");
        assert_eq!(page.status(), 200);
    }

    let mut exported = BTreeSet::new();
    exported_names(
        &scrape(&format!("{}/metrics", c.apis[0].base)).await,
        &mut exported,
    );
    exported_names(
        &scrape(&format!("{}/metrics", c.apis[1].base)).await,
        &mut exported,
    );
    exported_names(
        &scrape(&format!("{}/metrics", c.edge.metrics)).await,
        &mut exported,
    );

    // Recording-rule outputs (names with ':') are left out: they are made by
    // Prometheus, not exported by chat-api or edge-proxy.
    let mut missing = Vec::new();
    for args in [&["--family"][..], &[][..]] {
        for name in names_used_by_rules_and_dashboard(args) {
            if !exported.contains(&name) && !missing.contains(&name) {
                missing.push(name);
            }
        }
    }
    assert!(
        missing.is_empty(),
        "metrics named by ops/prometheus/*.yml or ops/grafana/*.json that neither chat-api nor \
         edge-proxy exports: {missing:?}\nexported chatty_* names: {:?}",
        exported
            .iter()
            .filter(|n| n.starts_with("chatty_"))
            .collect::<Vec<_>>()
    );
}

/// Debian's Prometheus server.
fn prometheus_bin() -> PathBuf {
    let path = PathBuf::from("/usr/bin/prometheus");
    assert!(
        path.exists(),
        "{} is missing: install it with apt-get install -y prometheus (make test does)",
        path.display()
    );
    path
}

fn write_prometheus_config(dir: &Path, edge_metrics: u16, api_ports: &[u16]) -> PathBuf {
    let rules = Path::new(ROOT).join("ops/prometheus/recording.yml");
    let rules = rules.canonicalize().unwrap_or(rules);
    let api_targets = api_ports
        .iter()
        .map(|p| format!("'127.0.0.1:{p}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n  - '{}'\n\
         scrape_configs:\n\
         \x20 - job_name: chatty-edge\n    static_configs:\n      - targets: ['127.0.0.1:{edge_metrics}']\n\
         \x20 - job_name: chatty-api\n    static_configs:\n      - targets: [{api_targets}]\n",
        rules.display()
    );
    let path = dir.join("prometheus.yml");
    std::fs::write(&path, config).expect("write prometheus.yml");
    path
}

/// `GET /api/v1/...` on the test's Prometheus; the `data` member on success.
async fn prom_api(base: &str, path: &str, query: &[(&str, &str)]) -> Option<serde_json::Value> {
    let resp = http()
        .get(format!("{base}{path}"))
        .query(query)
        .send()
        .await
        .ok()?;
    let body: serde_json::Value = resp.json().await.ok()?;
    (body["status"] == "success").then(|| body["data"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_a_local_cluster_and_computes_the_short_circuit_ratio() {
    let prometheus = prometheus_bin();
    let c = cluster().await;
    let dir = tempfile::tempdir().expect("prometheus dir");
    let config = write_prometheus_config(
        dir.path(),
        c.edge.metrics_port,
        &[c.apis[0].port, c.apis[1].port],
    );
    let port = free_port();
    let mut cmd = Command::new(prometheus);
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .current_dir(dir.path());
    let mut prom = Proc::spawn("prometheus", cmd);
    let base = format!("http://127.0.0.1:{port}");

    // Polls through the edge, most answered 304 from its memory, for as long
    // as Prometheus needs to see the counters move.
    let g = Guest::join(&c.edge.base, "acme", "hall", "ada").await;
    g.send("hello", "c1").await;
    let (etag, seq) = learn(&c.edge.base, "hall").await;
    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let stop = stop.clone();
        let reader = client(&c.edge.base, "acme");
        tokio::spawn(async move {
            let mut short = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let mut held = etag.clone();
                if let Ok(Poll::NotModified) = reader.poll("hall", seq, &mut held).await {
                    short += 1;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            short
        })
    };

    wait_for(
        Duration::from_secs(15),
        "prometheus to answer /-/ready",
        || {
            let url = format!("{base}/-/ready");
            async move {
                let r = http().get(url).send().await.ok()?;
                r.status().is_success().then_some(())
            }
        },
    )
    .await;

    // The recording rules file loaded: take the rule's own expression.
    const RULE: &str = "chatty:edge_short_circuit_ratio:rate1m";
    let rules = prom_api(&base, "/api/v1/rules", &[])
        .await
        .expect("GET /api/v1/rules");
    let rule = rules["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .find(|r| r["name"] == RULE)
        .unwrap_or_else(|| panic!("{RULE} is not among the loaded rules: {rules}"))
        .clone();
    let expr = rule["query"].as_str().expect("rule query").to_owned();
    assert!(
        expr.contains("chatty_edge_requests_total"),
        "unexpected expression of {RULE}: {expr}"
    );

    // Bounded wait for the expression to give a number.
    let started = Instant::now();
    let mut last = serde_json::Value::Null;
    let ratio = loop {
        if let Some(data) = prom_api(&base, "/api/v1/query", &[("query", &expr)]).await {
            let value = data["result"]
                .as_array()
                .and_then(|r| r.first())
                .and_then(|s| s["value"][1].as_str())
                .and_then(|v| v.parse::<f64>().ok());
            match value {
                Some(v) if v.is_finite() && v > 0.0 => break v,
                _ => last = data,
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "prometheus gave no positive short-circuit ratio within 30 s for {expr}; last answer: {last}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // Every target of the config (the edge and both API nodes) is up.
    let up = loop {
        let up = prom_api(&base, "/api/v1/query", &[("query", "sum(up)")])
            .await
            .and_then(|d| {
                d["result"][0]["value"][1]
                    .as_str()
                    .and_then(|v| v.parse::<f64>().ok())
            })
            .unwrap_or(0.0);
        if up >= 3.0 || started.elapsed() > Duration::from_secs(30) {
            break up;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let rules = prom_api(&base, "/api/v1/rules", &[])
        .await
        .expect("GET /api/v1/rules");
    stop.store(true, Ordering::Relaxed);
    let short = poller.await.expect("poller");
    prom.kill();

    assert_eq!(up, 3.0, "targets up in prometheus (edge + two API nodes)");

    assert!(short > 0, "no poll was answered 304 through the edge");
    assert!(
        (0.0..=1.0).contains(&ratio) && ratio > 0.0,
        "short-circuit ratio {ratio} is not in (0, 1]"
    );
    // No recording rule failed to evaluate (the group's own interval may
    // not have come round yet: "unknown" is fine).
    let failed: Vec<&serde_json::Value> = rules["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .filter(|r| r["health"] == "err")
        .collect();
    assert!(failed.is_empty(), "recording rules failed: {failed:?}");
}
