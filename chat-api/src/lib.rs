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
// The backends' conformance suites and test helpers are compiled into the
// product until they are made test-only; until then the compiler cannot tell
// what in these three is dead.
#[allow(dead_code, unused_imports)]
mod limits;
mod metrics;
#[allow(dead_code, unused_imports)]
mod presence;
mod routes;
mod secrets;
mod startup;
#[allow(dead_code, unused_imports)]
mod store;
mod token;
mod validate;

pub use chat::Chat;
pub use config::{Config, RateSetting};
pub use error::ApiError;
pub use secrets::new_token_key;
pub use startup::App;
pub use token::{Claims, TokenKeys};
