//! The chat-api binary: parse and validate the config (exit 64 when it is
//! bad), start logging, build the app, serve until SIGTERM or Ctrl-C.

use std::process::ExitCode;

use anyhow::Context;
use chat_api::{App, Config};
use chatty_shared::EXIT_BAD_CONFIG;
use clap::Parser;

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listener = std::net::TcpListener::bind(config.listen)
        .with_context(|| format!("binding {}", config.listen))?;
    let app = App::build(config).await?;
    app.run(listener, shutdown_signal()).await
}

fn main() -> ExitCode {
    let config = match Config::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let usage = e.use_stderr();
            let _ = e.print();
            return if usage {
                ExitCode::from(EXIT_BAD_CONFIG as u8)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    if let Err(e) = config.validate() {
        eprintln!("chat-api: {e}");
        return ExitCode::from(EXIT_BAD_CONFIG as u8);
    }
    chatty_shared::telemetry::init(config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("chat-api: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "chat-api failed");
            eprintln!("chat-api: {e:#}");
            ExitCode::FAILURE
        }
    }
}
