//! The generator's sockets: the loopback source addresses it spreads its
//! connections over (one source address reaches one port about 28,000 times
//! at most, the ephemeral port range), and the process's open-file limit.

use std::net::{IpAddr, Ipv4Addr};

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

use super::plan::Transport;

/// Most source addresses: 127.0.0.1 … 127.0.0.255.
pub const MAX_SOURCE_ADDRS: usize = 255;

/// The source addresses 127.0.0.1 … 127.0.0.n (n at most
/// [`MAX_SOURCE_ADDRS`]).
pub fn source_addrs(n: usize) -> Vec<IpAddr> {
    (1..=n.min(MAX_SOURCE_ADDRS) as u8)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i)))
        .collect()
}

/// Refuses `--source-addrs n` unless it is 1, or the target is an IPv4
/// loopback address (the only kind 127.0.0.x can reach).
pub fn check_source_addrs(target: &reqwest::Url, n: usize) -> Result<(), String> {
    if n == 0 || n > MAX_SOURCE_ADDRS {
        return Err(format!(
            "--source-addrs {n}: must be from 1 to {MAX_SOURCE_ADDRS}"
        ));
    }
    let loopback = target
        .host_str()
        .and_then(|h| h.parse::<Ipv4Addr>().ok())
        .is_some_and(|ip| ip.is_loopback());
    if n > 1 && !loopback {
        return Err(format!(
            "--source-addrs {n}: the target must be an IPv4 loopback address \
             such as 127.0.0.1 (not {:?}): connections from 127.0.0.2 and up \
             reach only this machine",
            target.host_str().unwrap_or("")
        ));
    }
    Ok(())
}

/// Open files beside the connections: the runtime's own, and connections
/// closing while the ones that replace them open.
pub const FILES_SPARE: u64 = 1024;

/// Open files a run may need. With held polls or streams, one connection
/// per guest (each guest holds one request at most, and its connection
/// waits in the pool between two held polls) and the API requests in flight
/// beside them; with timed polls, no more than the requests in flight. Then
/// [`FILES_SPARE`].
pub fn files_needed(guests: usize, connections: usize, transport: Transport) -> u64 {
    let open = match transport {
        Transport::Poll => guests.min(connections),
        Transport::Hold | Transport::Stream => guests.saturating_add(connections),
    };
    open as u64 + FILES_SPARE
}

/// Raises the process's soft open-file limit to its hard limit; answers
/// the limit now in force (`u64::MAX` for none).
pub fn raise_file_limit() -> u64 {
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            return limit.maximum.unwrap_or(u64::MAX);
        }
    }
    limit.current.unwrap_or(u64::MAX)
}

/// Refuses a run that needs more open files than `limit`, saying what to
/// raise.
pub fn check_file_limit(needed: u64, limit: u64) -> Result<(), String> {
    if needed <= limit {
        return Ok(());
    }
    Err(format!(
        "this run may need {needed} open files but the limit is {limit}, even \
         raised to the hard limit: raise it (`ulimit -n {needed}` in the shell \
         that starts chatty load, as root `ulimit -Hn {needed}` first, or \
         LimitNOFILE= for a service), or run fewer guests"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_addresses_count_up_from_127_0_0_1() {
        let ips: Vec<String> = source_addrs(3).iter().map(|a| a.to_string()).collect();
        assert_eq!(ips, ["127.0.0.1", "127.0.0.2", "127.0.0.3"]);
        assert_eq!(source_addrs(1000).len(), MAX_SOURCE_ADDRS);
    }

    #[test]
    fn more_than_one_source_address_needs_a_loopback_target() {
        let check = |target: &str, n| check_source_addrs(&target.parse().unwrap(), n).is_ok();
        assert!(check("http://127.0.0.1:8080", 3));
        assert!(check("http://127.1.2.3:8080", 255));
        assert!(check("http://10.0.0.1:8080", 1));
        assert!(check("http://example.com", 1));
        assert!(!check("http://10.0.0.1:8080", 2));
        assert!(!check("http://example.com:8080", 2));
        assert!(!check("http://localhost:8080", 2));
        assert!(!check("http://[::1]:8080", 2));
        assert!(!check("http://127.0.0.1:8080", 0));
        assert!(!check("http://127.0.0.1:8080", 256));
    }

    #[test]
    fn files_needed_by_transport() {
        assert_eq!(
            files_needed(20_000, 256, Transport::Poll),
            256 + FILES_SPARE
        );
        assert_eq!(files_needed(100, 256, Transport::Poll), 100 + FILES_SPARE);
        assert_eq!(
            files_needed(20_000, 256, Transport::Hold),
            20_256 + FILES_SPARE
        );
        assert_eq!(
            files_needed(20_000, 256, Transport::Stream),
            20_256 + FILES_SPARE
        );
        // 17,000 streams and 512 requests in flight fit under a hard limit
        // of 20,000 (one generator per edge in ops/bench/held.sh).
        assert!(files_needed(17_000, 512, Transport::Stream) <= 20_000);
    }

    #[test]
    fn a_low_file_limit_says_what_to_raise() {
        assert!(check_file_limit(512, 1024).is_ok());
        assert!(check_file_limit(512, u64::MAX).is_ok());
        let e = check_file_limit(40_000, 20_000).unwrap_err();
        assert!(e.contains("ulimit -n 40000"), "{e}");
        assert!(e.contains("20000"), "{e}");
    }
}
