//! chatty, the operator's CLI: the command line ([`cli`]), a small client
//! for the Chatty HTTP API ([`client`]) and the load generator ([`load`]).

pub mod cli;
pub mod client;
pub mod load;
