//! Measures the version map's memory per entry at a million rooms:
//! `cargo run --release -p edge-proxy --example map_memory`.

use std::fmt::Write;
use std::time::Duration;

use chatty_shared::RoomVersion;
use edge_proxy::{Tick, VersionMap};

/// Resident memory of this process.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("resident pages in statm");
    pages * 4096
}

fn main() {
    const N: usize = 1_000_000;
    let before = rss_bytes();
    let m = VersionMap::new(N, Duration::from_secs(5));
    let mut name = String::with_capacity(16);
    for i in 0..N {
        name.clear();
        write!(name, "room{i}").expect("write to a String");
        let k = m.room_hash("demo", &name);
        m.observe_messages(k, RoomVersion::new(7, i as u64), Tick(1));
        m.observe_members(k, i as u64, Tick(1));
    }
    let after = rss_bytes();
    let held = m.len();
    println!(
        "{held} rooms, {} evictions: {:.1} bytes/entry (RSS {} -> {} MiB)",
        m.evictions(),
        (after - before) as f64 / held as f64,
        before >> 20,
        after >> 20
    );
}
