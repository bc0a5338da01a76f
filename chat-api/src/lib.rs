//! chat-api: a Chatty API node — messages, presence, guest tokens, site
//! administration and the widget, over a store (MySQL or SQLite) and a bus
//! (Redis or in-process).
//!
//! Entry points: [`Config`] (the command line, also buildable in tests),
//! [`App::build`], [`App::bus`] and [`App::run`].

pub mod body;
pub mod cache;
pub mod chat;
pub mod config;
pub mod error;
pub mod limits;
pub mod metrics;
pub mod presence;
pub mod routes;
pub mod secrets;
pub mod startup;
pub mod store;
pub mod token;
pub mod validate;

pub use config::Config;
pub use error::ApiError;
pub use startup::App;
