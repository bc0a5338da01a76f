//! The `edge-proxy` binary: parses flags and runs the edge.
fn main() {}
