//! edge-proxy: a Pingora edge that answers unchanged polls from memory and
//! forwards everything else to healthy API nodes.
//!
//! Entry points: [`run`] (the binary and `chatty up`), [`run_until`]
//! (embedding and tests), [`EdgeConfig`] and [`BusSource`].

pub mod admin;
pub mod config;
pub mod metrics;
pub mod pages;
pub mod protect;
pub mod proxy;
pub(crate) mod refusal;
pub mod server;
pub mod shortcut;
pub mod subscriber;
pub mod upstreams;
pub mod versions;

pub use config::{ConfigError, EdgeConfig};
pub use server::{build, run, run_until, BusSource, EdgeError};
