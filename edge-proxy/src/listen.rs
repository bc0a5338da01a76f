//! The edge's addresses checked before pingora binds them: pingora retries a
//! taken address every second for half a minute, so an edge started on a
//! busy port would look alive while another process answers its clients.

use std::net::{SocketAddr, TcpListener};

use crate::config::EdgeConfig;

/// An address the edge cannot listen on, and the flag that chose it.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} (--{flag}): {error}; choose another address with --{flag}")]
pub struct ListenError {
    pub flag: &'static str,
    pub addr: SocketAddr,
    pub error: std::io::Error,
}

/// Binds each address of `config` once and lets it go. The standard
/// listener sets SO_REUSEADDR, as pingora's does, so an address that only
/// has connections in TIME_WAIT passes and one another socket listens on
/// fails. Not for a graceful upgrade: there the old edge holds both.
pub fn check_addresses(config: &EdgeConfig) -> Result<(), ListenError> {
    for (flag, addr) in [
        ("listen", config.listen),
        ("metrics-listen", config.metrics_listen),
    ] {
        TcpListener::bind(addr).map_err(|error| ListenError { flag, addr, error })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[test]
    fn a_taken_address_is_named_with_its_flag() {
        let held = TcpListener::bind("127.0.0.1:0").unwrap();
        let taken = held.local_addr().unwrap();
        let free = |port| SocketAddr::from(([127, 0, 0, 1], port));
        let (free, other) = (free(free_port()), free(free_port()));
        let config = |listen, metrics_listen| EdgeConfig {
            listen,
            metrics_listen,
            ..EdgeConfig::default()
        };
        let e = check_addresses(&config(taken, free)).unwrap_err();
        assert_eq!((e.flag, e.addr), ("listen", taken));
        assert_eq!(e.error.kind(), std::io::ErrorKind::AddrInUse);
        let message = e.to_string();
        assert!(message.contains(&taken.to_string()) && message.contains("--listen"));
        let e = check_addresses(&config(free, taken)).unwrap_err();
        assert_eq!(e.flag, "metrics-listen");
        assert!(check_addresses(&config(free, other)).is_ok());
    }
}
