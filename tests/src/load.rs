//! `chatty load --check` through an edge, in the background, and what its
//! JSON report says: requests failed, acknowledged messages lost,
//! duplicates, the longest delivery.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::procs::{bin, Proc};

/// One load run on the site `acme`: 30 guests in 3 rooms sending 8 a
/// second in all, polling every `poll`.
pub struct Load {
    pub proc: Proc,
    pub report: PathBuf,
    pub run: Duration,
}

impl Load {
    /// Starts the load against `target` for `run`; the report goes to `dir`.
    pub fn start(target: &str, dir: &Path, seed: u64, run: Duration, poll: Duration) -> Load {
        let report = dir.join(format!("load-{seed}.json"));
        let mut cmd = Command::new(bin("chatty"));
        cmd.args(["load", "--site", "acme", "--guests", "30", "--rooms", "3"])
            .args([
                "--send-rate",
                "8",
                "--ramp",
                "2s",
                "--check",
                "--no-progress",
            ])
            .arg("--target")
            .arg(target)
            .arg("--duration")
            .arg(format!("{}s", run.as_secs()))
            .arg("--poll-interval")
            .arg(format!("{}s", poll.as_secs()))
            .arg("--seed")
            .arg(seed.to_string())
            .arg("--json")
            .arg(&report);
        Load {
            proc: Proc::spawn("chatty load", cmd),
            report,
            run,
        }
    }

    /// Waits for the load to end and reads its report.
    pub async fn finish(mut self) -> LoadReport {
        let exit = self
            .proc
            .wait_exit(self.run + Duration::from_secs(60))
            .await;
        let text = std::fs::read_to_string(&self.report).expect("the load's JSON report");
        LoadReport {
            exit,
            report: serde_json::from_str(&text).expect("report JSON"),
        }
    }
}

/// The load's exit code and JSON report.
#[derive(Debug)]
pub struct LoadReport {
    pub exit: Option<i32>,
    pub report: Value,
}

impl LoadReport {
    /// Requests that failed, of every kind.
    pub fn failed_requests(&self) -> u64 {
        self.report["errors"]
            .as_object()
            .map(|m| m.values().filter_map(Value::as_u64).sum())
            .unwrap_or(0)
    }

    pub fn sends_acknowledged(&self) -> u64 {
        self.report["sends_acknowledged"].as_u64().unwrap_or(0)
    }

    /// One figure of the checker.
    pub fn check(&self, field: &str) -> u64 {
        self.report["check"][field].as_u64().expect("check field")
    }

    /// The longest a message took to reach a reader.
    pub fn delivery_max_ms(&self) -> f64 {
        self.report["delivery_latency_ms"]["max"]
            .as_f64()
            .unwrap_or(0.0)
    }

    /// Asserts that the checker ran and found every acknowledged message
    /// delivered once, in order, to every reader.
    pub fn assert_nothing_lost(&self, name: &str) {
        assert!(self.report["check"]["enabled"].as_bool().unwrap_or(false));
        assert!(
            self.sends_acknowledged() > 20,
            "{name}: too few sends: {}",
            self.report
        );
        for field in ["lost_acknowledged", "duplicated", "missing", "out_of_order"] {
            assert_eq!(self.check(field), 0, "{name}: {field}: {}", self.report);
        }
        assert_eq!(
            self.exit,
            Some(0),
            "{name}: the checker failed: {}",
            self.report
        );
    }
}
