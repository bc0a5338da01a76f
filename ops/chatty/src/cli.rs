//! The `chatty` command line: one subcommand per operator task. Add a
//! subcommand by adding a variant to [`Command`] and an arm to [`run`].

use clap::{Parser, Subcommand};

use crate::{load, metrics, site, up};

/// Chatty operator's tool.
#[derive(Debug, Parser)]
#[command(name = "chatty", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run Chatty here: the edge and an API node in one process on the
    /// embedded store, or a local cluster on MySQL and Redis.
    Up(up::UpArgs),
    /// Create and list sites (the snippet a site owner pastes).
    Site(site::SiteArgs),
    /// Load a deployment with simulated guests and report latencies, the
    /// share of polls answered 304 and (with --check) delivery anomalies.
    Load(load::LoadArgs),
    /// Read a Prometheus metrics page: the sum of one metric (optionally
    /// over some labels only), or its samples.
    Metrics(metrics::MetricsArgs),
}

/// Runs the chosen subcommand; answers the process exit status.
pub fn run(cli: Cli) -> i32 {
    match cli.command {
        Command::Up(args) => up::main(args),
        Command::Site(args) => site::main(args),
        Command::Load(args) => load::main(args),
        Command::Metrics(args) => metrics::main(args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_load_flags() {
        let cli = Cli::try_parse_from([
            "chatty",
            "load",
            "--target",
            "http://127.0.0.1:8080",
            "--guests",
            "300",
            "--rooms",
            "20",
            "--duration",
            "15s",
            "--send-rate",
            "20",
            "--check",
            "--json",
            "/tmp/x.json",
            "--api-metrics",
            "http://a/metrics",
            "--api-metrics",
            "http://b/metrics",
        ])
        .unwrap();
        let Command::Load(a) = cli.command else {
            panic!("not load")
        };
        assert_eq!(a.guests, 300);
        assert_eq!(a.duration, std::time::Duration::from_secs(15));
        assert_eq!(a.api_metrics.len(), 2);
        assert!(a.check);
        assert_eq!(a.site, "demo");
        assert!(a.validate().is_ok());
        let bad = Cli::try_parse_from(["chatty", "load", "--target", "ftp://x", "--guests", "1"])
            .unwrap();
        let Command::Load(b) = bad.command else {
            panic!("not load")
        };
        assert!(b.validate().is_err());
    }
}
