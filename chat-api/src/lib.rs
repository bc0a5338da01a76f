//! chat-api: a Chatty API node — messages, presence, guest tokens, site
//! administration and the widget, over a store (MySQL or SQLite) and a bus
//! (Redis or in-process).
//!
//! Entry points: [`Config`] (the command line, also buildable in tests),
//! [`App::build`], [`App::bus`] and [`App::run`]. The modules are private;
//! what other crates use is re-exported here.

mod body;
mod cache;
mod chat;
mod config;
mod error;
mod host_token;
mod limits;
mod metrics;
mod presence;
mod redis;
mod routes;
mod rules;
mod secrets;
mod startup;
mod store;
mod token;
mod validate;

pub use chat::{utc as utc_time, Chat};
pub use config::{Config, RateSetting};
pub use error::ApiError;
pub use host_token::{ed25519_public, sign as sign_user_token, HostClaims, KeyAlg};
pub use secrets::new_token_key;
pub use startup::App;
pub use token::{Claims, TokenKeys};
