//! chatty, the operator's CLI: the command line ([`cli`]), a small client
//! for the Chatty HTTP API ([`client`]), the load generator ([`load`]), the
//! local stack ([`up`]) and site administration ([`site`]).

pub mod cli;
pub mod client;
pub mod fresh;
pub mod load;
pub mod site;
pub mod up;
