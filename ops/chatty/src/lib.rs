//! chatty, the operator's CLI: the command line ([`cli`]), a small client
//! for the Chatty HTTP API ([`client`]), the load generator ([`load`]), the
//! local stack ([`up`], [`fresh`]), site administration ([`site`]) and
//! metrics pages read for scripts and tests ([`metrics`]).

pub mod cli;
pub mod client;
pub mod fresh;
pub mod load;
pub mod metrics;
pub mod site;
pub mod up;
