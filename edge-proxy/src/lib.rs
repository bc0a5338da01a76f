//! edge-proxy: a Pingora edge that answers unchanged polls from memory and
//! forwards everything else to healthy API nodes.
//!
//! Entry points: [`run`] (the binary and `chatty up`), [`run_until`]
//! (embedding and tests), [`EdgeConfig`] and [`BusSource`]. The version map
//! is public too, for measuring it (`examples/map_memory.rs`).

pub(crate) mod admin;
pub(crate) mod config;
pub(crate) mod fetch;
pub(crate) mod flights;
pub(crate) mod hold;
pub(crate) mod listen;
pub(crate) mod metrics;
pub(crate) mod pages;
pub(crate) mod presence;
pub(crate) mod protect;
pub(crate) mod proxy;
pub(crate) mod refusal;
pub(crate) mod server;
pub(crate) mod shortcut;
pub(crate) mod stream;
pub(crate) mod subscriber;
pub(crate) mod tails;
pub(crate) mod upstreams;
pub(crate) mod versions;

pub use config::{ConfigError, EdgeConfig, DEFAULT_MAX_HELD};
pub use listen::{check_addresses, ListenError};
pub use server::{run, run_until, BusSource, EdgeError};
pub use versions::{Tick, VersionMap};
