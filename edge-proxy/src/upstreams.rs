//! The API nodes: discovery (addresses and DNS names re-resolved every 5 s),
//! round-robin selection and active health checks on `GET /readyz`.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use pingora::http::RequestHeader;
use pingora::lb::discovery::ServiceDiscovery;
use pingora::lb::health_check::HttpHealthCheck;
use pingora::lb::selection::RoundRobin;
use pingora::lb::{Backend, Backends, LoadBalancer};

use crate::config::split_host_port;

/// How often DNS names are resolved again.
pub const RESOLVE_EVERY: Duration = Duration::from_secs(5);
/// How often each node's `/readyz` is checked.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);
/// Connect and read timeouts of one check: a dead or hung node fails its
/// next check and leaves the rotation within two seconds.
const CHECK_TIMEOUT: Duration = Duration::from_millis(500);
/// How long one DNS resolution may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

/// The nodes behind the edge.
pub type Upstreams = LoadBalancer<RoundRobin>;

/// The next node to send a request to, none of `tried`: a healthy one, or
/// with no node passing its health checks, any (fail open: under a load
/// that slows every /readyz, the checks are more likely wrong than every
/// node, and a node that is really down refuses the connection at once).
pub fn pick(nodes: &Upstreams, tried: &[SocketAddr]) -> Option<SocketAddr> {
    let untried = |b: &Backend| b.addr.as_inet().is_some_and(|a| !tried.contains(a));
    let backend = nodes
        .select_with(b"", 256, |b, healthy| healthy && untried(b))
        .or_else(|| nodes.select_with(b"", 256, |b, _| untried(b)))?;
    backend.addr.as_inet().copied()
}

/// `--upstream` targets resolved on every discovery round. A name that fails
/// to resolve keeps the addresses it had, so a DNS hiccup does not empty the
/// rotation.
pub struct DnsDiscovery {
    targets: Vec<(String, u16)>,
    last: Mutex<HashMap<String, Vec<SocketAddr>>>,
}

impl DnsDiscovery {
    /// `targets` must be valid `host:port` strings (see
    /// [`crate::config::EdgeConfig::validate`]); others are skipped.
    pub fn new(targets: &[String]) -> Self {
        let targets = targets
            .iter()
            .filter_map(|t| split_host_port(t.trim()).map(|(h, p)| (h.to_owned(), p)))
            .collect();
        Self {
            targets,
            last: Mutex::new(HashMap::new()),
        }
    }

    async fn resolve(&self, host: &str, port: u16) -> Vec<SocketAddr> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return vec![SocketAddr::new(ip, port)];
        }
        let key = format!("{host}:{port}");
        let lookup = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, port)));
        match lookup.await {
            Ok(Ok(addrs)) => {
                let mut addrs: Vec<SocketAddr> = addrs.collect();
                addrs.sort();
                addrs.dedup();
                if !addrs.is_empty() {
                    self.last.lock().insert(key, addrs.clone());
                    return addrs;
                }
                tracing::warn!(upstream = %key, "name resolved to no address; keeping the last ones");
            }
            Ok(Err(e)) => {
                tracing::warn!(upstream = %key, error = %e, "cannot resolve upstream; keeping the last addresses")
            }
            Err(_) => {
                tracing::warn!(upstream = %key, "resolving upstream timed out; keeping the last addresses")
            }
        }
        self.last.lock().get(&key).cloned().unwrap_or_default()
    }
}

#[async_trait]
impl ServiceDiscovery for DnsDiscovery {
    async fn discover(&self) -> pingora::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        let mut set = BTreeSet::new();
        for (host, port) in &self.targets {
            for addr in self.resolve(host, *port).await {
                if let Ok(b) = Backend::new(&addr.to_string()) {
                    set.insert(b);
                }
            }
        }
        Ok((set, HashMap::new()))
    }
}

/// The load balancer over `targets`, with health checks; run it as a
/// pingora background service so discovery and checks happen.
pub fn build(targets: &[String]) -> Upstreams {
    let backends = Backends::new(Box::new(DnsDiscovery::new(targets)));
    let mut lb = LoadBalancer::<RoundRobin>::from_backends(backends);
    let mut hc = HttpHealthCheck::new("chatty-edge", false);
    let mut req = RequestHeader::build("GET", b"/readyz", None).expect("static request");
    req.insert_header("Host", "chatty-edge")
        .expect("static header");
    req.insert_header("User-Agent", "chatty-edge-health")
        .expect("static header");
    hc.req = req;
    hc.peer_template.options.connection_timeout = Some(CHECK_TIMEOUT);
    hc.peer_template.options.read_timeout = Some(CHECK_TIMEOUT);
    hc.peer_template.options.write_timeout = Some(CHECK_TIMEOUT);
    hc.consecutive_failure = 1;
    hc.consecutive_success = 1;
    lb.set_health_check(Box::new(hc));
    lb.health_check_frequency = Some(CHECK_EVERY);
    lb.update_frequency = Some(RESOLVE_EVERY);
    lb.parallel_health_check = true;
    lb
}

/// Number of nodes currently in rotation.
pub fn healthy_count(lb: &Upstreams) -> usize {
    let backends = lb.backends();
    backends
        .get_backend()
        .iter()
        .filter(|b| backends.ready(b))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn discovers_addresses_and_names() {
        let d = DnsDiscovery::new(&["127.0.0.1:8081".into(), "localhost:8082".into()]);
        let (set, _) = d.discover().await.unwrap();
        let addrs: Vec<String> = set.iter().map(|b| b.addr.to_string()).collect();
        assert!(addrs.contains(&"127.0.0.1:8081".to_string()), "{addrs:?}");
        assert!(addrs.iter().any(|a| a.ends_with(":8082")), "{addrs:?}");
    }

    #[tokio::test]
    async fn a_failing_name_keeps_its_last_addresses() {
        let d = DnsDiscovery::new(&["no-such-host.invalid:80".into()]);
        d.last.lock().insert(
            "no-such-host.invalid:80".into(),
            vec!["10.0.0.1:80".parse().unwrap()],
        );
        let (set, _) = d.discover().await.unwrap();
        assert_eq!(set.len(), 1);
    }
}
