//! Logging set-up (tracing, text or JSON, `log` records bridged) and the
//! Prometheus text rendering used by every `/metrics` endpoint.

use std::sync::Once;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err(format!("{s:?}: expected text or json")),
        }
    }
}

static INIT: Once = Once::new();

/// Installs the global subscriber once (later calls do nothing); the level
/// comes from `RUST_LOG`, default `info`. Records of the `log` crate (pingora)
/// are bridged. Text is coloured only when stderr is a terminal, so a log
/// sent to a file or a pipe holds no escape codes.
pub fn init(format: LogFormat) {
    INIT.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr);
        let _ = match format {
            LogFormat::Text => builder.try_init(),
            LogFormat::Json => builder.json().try_init(),
        };
    });
}

/// Latency buckets (seconds) for every duration histogram.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The default Prometheus registry in the text exposition format.
pub fn render_metrics() -> String {
    use prometheus::Encoder;
    let mut out = Vec::new();
    let encoder = prometheus::TextEncoder::new();
    let _ = encoder.encode(&prometheus::gather(), &mut out);
    String::from_utf8(out).unwrap_or_default()
}
