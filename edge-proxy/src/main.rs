//! The `edge-proxy` binary: parses flags, starts logging, runs the edge.

use clap::Parser;
use edge_proxy::{BusSource, EdgeConfig};

fn main() {
    let config = match EdgeConfig::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let usage = e.use_stderr();
            let _ = e.print();
            std::process::exit(if usage {
                chatty_shared::EXIT_BAD_CONFIG
            } else {
                0
            });
        }
    };
    chatty_shared::telemetry::init(config.log_format);
    if let Err(e) = config.validate() {
        eprintln!("edge-proxy: {e}");
        std::process::exit(chatty_shared::EXIT_BAD_CONFIG);
    }
    let bus = BusSource::from_config(&config);
    edge_proxy::run(config, bus)
}
