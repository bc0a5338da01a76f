//! The integration suite: one binary, a module per topic. Each test starts
//! the real binaries against the real MariaDB and Redis (own database, own
//! key prefix) and stops them when it ends.

mod abuse;
mod batches;
mod browser;
mod cluster;
mod contract;
mod edge;
mod faults;
mod harness_selftest;
mod identity;
mod moderation;
mod observability;
mod outages;
mod redis_cluster;
mod rules;
mod sentinel;
mod streams;
mod taken_port;
