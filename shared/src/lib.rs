//! chatty-shared: everything the edge and the API nodes must agree on.
//!
//! Nothing in here knows of actix-web or pingora: both sides depend on this
//! crate and never on each other.

pub mod bus;
pub mod config;
pub mod decimal;
pub mod etag;
pub mod freshness;
pub mod ratelimit;
pub mod room;
pub mod telemetry;
pub mod wire;
