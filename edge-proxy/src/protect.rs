//! Connection-level protections in front of the proxy: a per-address
//! connection cap, a per-address request rate, a deadline for the whole
//! request header, and a header size limit. Pingora offers a per-read
//! timeout and a fixed 1 MiB header limit only, so the edge reads each
//! request header itself; an unchanged poll is answered right here by the
//! [`Shortcut`], anything else goes to pingora's HTTP/1 session with the
//! bytes as its first buffer (no second read, no copy).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use chatty_shared::Rate;
use chatty_shared::{retry_after_secs, Decision, WindowLimiter};
use parking_lot::Mutex;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::metrics::{metrics, Rejection};
use crate::refusal::Refusal;
use crate::shortcut::{Answer, Shortcut, Verdict};

/// How long an idle keep-alive connection waits for its next request.
pub const KEEPALIVE: Duration = Duration::from_secs(60);
/// Initial size of a header buffer; it grows up to the header limit.
const INITIAL_HEAD: usize = 2048;
/// Longest time spent writing a refusal.
const REFUSAL_WRITE: Duration = Duration::from_secs(1);
/// After a refusal, how long and how much of the client's unread input is
/// read and thrown away before closing: closing with unread input makes
/// the kernel send a reset, which can destroy the refusal on its way.
const LINGER: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 64 * 1024;

/// The protections' settings.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_conns_per_ip: u32,
    /// Requests per address; `None` for no limit.
    pub ip_rate: Option<Rate>,
}

/// Shards of the per-address tables: the lock a request takes is one of
/// these, never a global one.
const SHARDS: usize = 16;

/// Addresses each shard of the request rate tracks (so one million in all);
/// past that, a shard forgets its oldest tenth, which only lets their next
/// requests through early.
const RATE_KEYS_PER_SHARD: usize = 65_536;

/// Live connections per client address (IPv6 counted per /64, since one
/// client holds a whole /64).
#[derive(Debug, Default)]
pub struct ConnCounter {
    shards: [Mutex<HashMap<IpAddr, u32>>; SHARDS],
}

/// Holds one connection's place; gives it back when dropped.
#[derive(Debug)]
pub struct ConnGuard {
    counter: Arc<ConnCounter>,
    ip: IpAddr,
}

fn normalize(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// The shard of a normalized address.
fn shard_of(ip: &IpAddr) -> usize {
    let b = match ip {
        IpAddr::V4(v4) => v4.octets()[3],
        IpAddr::V6(v6) => v6.octets()[7],
    };
    usize::from(b) % SHARDS
}

impl ConnCounter {
    fn shard(&self, ip: &IpAddr) -> &Mutex<HashMap<IpAddr, u32>> {
        &self.shards[shard_of(ip)]
    }

    /// Takes a place for `ip`, or `None` when it already holds `max`.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr, max: u32) -> Option<ConnGuard> {
        let ip = normalize(ip);
        let mut shard = self.shard(&ip).lock();
        let n = shard.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(ConnGuard {
            counter: self.clone(),
            ip,
        })
    }

    /// Live connections of `ip`.
    #[cfg(test)]
    fn count(&self, ip: IpAddr) -> u32 {
        let ip = normalize(ip);
        self.shard(&ip).lock().get(&ip).copied().unwrap_or(0)
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut shard = self.counter.shard(&self.ip).lock();
        if let Some(n) = shard.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                shard.remove(&self.ip);
            }
        }
    }
}

/// Requests per client address (IPv6 per /64), by the sliding-window rule
/// the API nodes apply too.
#[derive(Debug)]
pub struct RequestRate {
    rate: Rate,
    shards: [WindowLimiter<IpAddr>; SHARDS],
}

impl RequestRate {
    pub fn new(rate: Rate) -> Self {
        Self {
            rate,
            shards: std::array::from_fn(|_| WindowLimiter::new(RATE_KEYS_PER_SHARD)),
        }
    }

    /// Counts one request of `ip`, unless it is refused.
    pub fn hit(&self, ip: IpAddr) -> Decision {
        let ip = normalize(ip);
        self.shards[shard_of(&ip)].check(&ip, self.rate)
    }

    /// Addresses tracked.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards.iter().map(WindowLimiter::len).sum()
    }
}

/// How reading one request header ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Head {
    /// A whole header (maybe followed by body bytes).
    Complete(BytesMut),
    /// The client closed, or went quiet between requests, or the server is
    /// stopping: close without an answer.
    Closed,
    /// Idle past the deadline with nothing sent (a fresh connection).
    Silent,
    /// Started a header but did not finish it in time.
    TimedOut,
    TooLarge,
}

/// The end of the header block (index past the blank line) in `buf`,
/// looking from `from`. Accepts CRLF and bare LF line ends, as pingora does.
pub fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i < buf.len() {
        if buf[i] == b'\n' {
            // Skip the blank lines a client may send before a request.
            let content_before = buf[..i].iter().any(|b| !matches!(b, b'\r' | b'\n'));
            if content_before {
                match buf.get(i + 1) {
                    Some(b'\n') => return Some(i + 2),
                    Some(b'\r') if buf.get(i + 2) == Some(&b'\n') => return Some(i + 3),
                    _ => {}
                }
            }
        }
        i += 1;
    }
    None
}

/// Reads one request header from `io`. `idle` bounds the wait for its first
/// byte; from then (or from the start, for a fresh connection) the whole
/// header must arrive within `limits.header_timeout`.
pub async fn read_head<S: tokio::io::AsyncRead + Unpin>(
    io: &mut S,
    limits: &Limits,
    idle: Option<Duration>,
    shutdown: &ShutdownWatch,
) -> Head {
    let mut shutdown = shutdown.clone();
    let mut buf = BytesMut::with_capacity(INITIAL_HEAD.min(limits.max_header_bytes + 1));
    let started = Instant::now();
    let mut deadline = started + idle.unwrap_or(limits.header_timeout);
    let mut waiting_first_byte = true;
    let mut searched: usize = 0;
    loop {
        if buf.len() == buf.capacity() {
            let room = (limits.max_header_bytes + 1)
                .saturating_sub(buf.len())
                .max(1);
            buf.reserve(buf.capacity().min(room));
        }
        let read = async {
            // Bytes already received win over a shutdown that comes at the
            // same moment: a request written just before the stop is
            // answered (with `Connection: close`), not cut.
            tokio::select! {
                biased;
                r = io.read_buf(&mut buf) => Some(r),
                _ = shutdown.wait_for(|stopping| *stopping), if waiting_first_byte => None,
            }
        };
        match tokio::time::timeout_at(deadline, read).await {
            Err(_) if waiting_first_byte && idle.is_some() => return Head::Closed,
            Err(_) if buf.iter().all(|b| matches!(b, b'\r' | b'\n')) => return Head::Silent,
            Err(_) => return Head::TimedOut,
            Ok(None) => return Head::Closed,
            Ok(Some(Ok(0))) | Ok(Some(Err(_))) => return Head::Closed,
            Ok(Some(Ok(_))) => {}
        }
        if waiting_first_byte {
            waiting_first_byte = false;
            if idle.is_some() {
                deadline = Instant::now() + limits.header_timeout;
            }
        }
        if let Some(end) = head_end(&buf, searched.saturating_sub(3)) {
            if end > limits.max_header_bytes {
                return Head::TooLarge;
            }
            return Head::Complete(buf);
        }
        if buf.len() > limits.max_header_bytes {
            return Head::TooLarge;
        }
        searched = buf.len();
    }
}

/// Counts a refusal by `reason`, writes it and lets the caller close the
/// connection.
async fn refuse(stream: &mut Stream, reason: Rejection, refusal: Refusal) {
    metrics().reject(reason);
    let answer = refusal.http1();
    let write = async {
        stream.write_all(&answer).await?;
        stream.flush().await?;
        stream.shutdown().await
    };
    if let Ok(Ok(())) = tokio::time::timeout(REFUSAL_WRITE, write).await {
        linger(stream).await;
    }
}

/// Reads and discards what the client still sends, until it closes, up to
/// [`LINGER`] and [`LINGER_BYTES`].
async fn linger(stream: &mut Stream) {
    let drain = async {
        let mut buf = [0u8; 4096];
        let mut left = LINGER_BYTES;
        while left > 0 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// The proxy behind the protections.
pub struct Protected<A> {
    inner: Arc<A>,
    limits: Limits,
    conns: Arc<ConnCounter>,
    requests: Option<RequestRate>,
    shortcut: Shortcut,
}

impl<A> Protected<A> {
    /// `shortcut` answers unchanged polls before `inner` sees them.
    pub fn new(inner: A, limits: Limits, shortcut: Shortcut) -> Self {
        Self {
            inner: Arc::new(inner),
            limits,
            conns: Arc::default(),
            requests: limits.ip_rate.map(RequestRate::new),
            shortcut,
        }
    }
}

/// Writes a `304` from the fast path; false when the connection failed.
async fn write_not_modified(stream: &mut Stream, answer: &Answer) -> bool {
    let write = async {
        stream.write_all(answer.as_bytes()).await?;
        stream.flush().await
    };
    matches!(tokio::time::timeout(REFUSAL_WRITE, write).await, Ok(Ok(())))
}

impl<A> Protected<A> {
    /// The next request header of a connection from `ip`, or `None` when
    /// the connection is to be closed: the client went away or stayed
    /// silent, or the header or the address's rate was refused (then
    /// answered here).
    async fn next_head(
        &self,
        stream: &mut Stream,
        ip: Option<IpAddr>,
        idle: Option<Duration>,
        shutdown: &ShutdownWatch,
    ) -> Option<BytesMut> {
        let (reason, refusal) = match read_head(stream, &self.limits, idle, shutdown).await {
            Head::Complete(head) => {
                let (Some(requests), Some(ip)) = (&self.requests, ip) else {
                    return Some(head);
                };
                let Decision::Limited { retry_after } = requests.hit(ip) else {
                    return Some(head);
                };
                let refusal = Refusal::too_many_requests(retry_after_secs(retry_after));
                (Rejection::RateLimited, refusal)
            }
            Head::Closed => return None,
            Head::Silent => {
                metrics().reject(Rejection::HeaderTimeout);
                return None;
            }
            Head::TimedOut => (Rejection::HeaderTimeout, Refusal::HEADER_TIMEOUT),
            Head::TooLarge => (Rejection::HeaderTooLarge, Refusal::HEADER_TOO_LARGE),
        };
        refuse(stream, reason, refusal).await;
        None
    }
}

fn peer_ip(stream: &Stream) -> Option<IpAddr> {
    let digest = stream.get_socket_digest()?;
    digest.peer_addr()?.as_inet().map(|a| a.ip())
}

#[async_trait]
impl<A> ServerApp for Protected<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let m = metrics();
        let ip = peer_ip(&stream);
        let _place = match ip {
            Some(ip) => match self.conns.acquire(ip, self.limits.max_conns_per_ip) {
                Some(place) => Some(place),
                None => {
                    refuse(
                        &mut stream,
                        Rejection::ConnLimit,
                        Refusal::TOO_MANY_CONNECTIONS,
                    )
                    .await;
                    return None;
                }
            },
            None => None,
        };
        let mut reused = false;
        let mut settings: Option<HttpPersistentSettings> = None;
        loop {
            let idle = reused.then_some(KEEPALIVE);
            let head = self.next_head(&mut stream, ip, idle, shutdown).await?;
            if let Verdict::NotModified { etag, close } = self.shortcut.check(&head) {
                let close = close || *shutdown.borrow();
                let written =
                    write_not_modified(&mut stream, &Answer::not_modified(&etag, close)).await;
                m.short_circuit.inc();
                if !written || close {
                    return None;
                }
                reused = true;
                continue;
            }
            let mut session = ServerSession::new_http1(stream);
            match settings.take() {
                Some(s) => s.apply_to_session(&mut session),
                None => {
                    let keepalive = (!*shutdown.borrow()).then_some(KEEPALIVE.as_secs());
                    session.set_keepalive(keepalive);
                }
            }
            session.set_pipelined_prefix(head);
            let (next, persistent) = self
                .inner
                .process_new_http(session, shutdown)
                .await?
                .consume();
            stream = next;
            settings = persistent;
            reused = true;
        }
    }

    async fn cleanup(&self) {
        self.inner.http_cleanup().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            header_timeout: Duration::from_millis(200),
            max_header_bytes: 1024,
            max_conns_per_ip: 2,
            ip_rate: None,
        }
    }

    fn no_shutdown() -> (tokio::sync::watch::Sender<bool>, ShutdownWatch) {
        tokio::sync::watch::channel(false)
    }

    #[test]
    fn finds_the_end_of_a_header() {
        assert_eq!(
            head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody", 0),
            Some(27)
        );
        assert_eq!(head_end(b"GET / HTTP/1.1\nHost: a\n\n", 0), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n", 0), None);
        assert_eq!(head_end(b"\r\n\r\nGET / HTTP/1.1\r\n\r\n", 0), Some(22));
    }

    #[tokio::test(start_paused = true)]
    async fn request_rate_per_address() {
        let r = RequestRate::new(Rate {
            count: 2,
            per: Duration::from_secs(10),
        });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(r.hit(a), Decision::Allowed);
        assert_eq!(r.hit(a), Decision::Allowed);
        assert!(matches!(r.hit(a), Decision::Limited { .. }));
        assert_eq!(r.hit("10.0.0.2".parse().unwrap()), Decision::Allowed);
        // One IPv6 client is one /64, and a mapped IPv4 is the IPv4.
        assert_eq!(r.hit("2001:db8::1".parse().unwrap()), Decision::Allowed);
        assert_eq!(r.hit("2001:db8::2".parse().unwrap()), Decision::Allowed);
        assert!(matches!(
            r.hit("2001:db8::3".parse().unwrap()),
            Decision::Limited { .. }
        ));
        assert!(matches!(
            r.hit("::ffff:10.0.0.1".parse().unwrap()),
            Decision::Limited { .. }
        ));
        assert_eq!(r.len(), 3);
        tokio::time::advance(Duration::from_secs(20)).await;
        assert_eq!(r.hit(a), Decision::Allowed);
    }

    #[test]
    fn conn_cap_per_address() {
        let c = Arc::new(ConnCounter::default());
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let a = c.acquire(ip, 2).unwrap();
        let _b = c.acquire(ip, 2).unwrap();
        assert!(c.acquire(ip, 2).is_none());
        assert!(c.acquire("10.0.0.2".parse().unwrap(), 2).is_some());
        drop(a);
        assert_eq!(c.count(ip), 1);
        assert!(c.acquire(ip, 2).is_some());
        // One IPv6 client is one /64.
        let x = c.acquire("2001:db8::1".parse().unwrap(), 1).unwrap();
        assert!(c.acquire("2001:db8::ffff".parse().unwrap(), 1).is_none());
        drop(x);
        assert_eq!(c.count("2001:db8::2".parse().unwrap()), 0);
    }

    #[tokio::test]
    async fn reads_a_header_in_pieces() {
        let (_tx, rx) = no_shutdown();
        let mut io = tokio_test_io(&[b"GET / HT", b"TP/1.1\r\nHost: a\r\n", b"\r\nxy"]);
        match read_head(&mut io, &limits(), None, &rx).await {
            Head::Complete(b) => assert_eq!(&b[..], b"GET / HTTP/1.1\r\nHost: a\r\n\r\nxy"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn refuses_large_headers() {
        let (_tx, rx) = no_shutdown();
        let big = vec![b'a'; 2000];
        let mut io = tokio_test_io(&[b"GET / HTTP/1.1\r\nX: ", &big, b"\r\n\r\n"]);
        assert_eq!(
            read_head(&mut io, &limits(), None, &rx).await,
            Head::TooLarge
        );
    }

    #[tokio::test(start_paused = true)]
    async fn slow_headers_time_out() {
        let (_tx, rx) = no_shutdown();
        let (mut client, mut server) = tokio::io::duplex(4096);
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let writer = tokio::spawn(async move {
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                if client.write_all(b"X: y\r\n").await.is_err() {
                    return;
                }
            }
        });
        assert_eq!(
            read_head(&mut server, &limits(), None, &rx).await,
            Head::TimedOut
        );
        writer.abort();
        // A fresh connection that sends nothing is silent, not timed out.
        let (_c, mut server) = tokio::io::duplex(64);
        assert_eq!(
            read_head(&mut server, &limits(), None, &rx).await,
            Head::Silent
        );
        // An idle keep-alive connection just closes.
        let (_c, mut server) = tokio::io::duplex(64);
        assert_eq!(
            read_head(&mut server, &limits(), Some(Duration::from_secs(60)), &rx).await,
            Head::Closed
        );
    }

    #[tokio::test]
    async fn idle_connections_close_on_shutdown() {
        let (tx, rx) = no_shutdown();
        let (_c, mut server) = tokio::io::duplex(64);
        tx.send(true).unwrap();
        assert_eq!(
            read_head(&mut server, &limits(), Some(Duration::from_secs(60)), &rx).await,
            Head::Closed
        );
    }

    /// A reader yielding the given chunks, then end of stream.
    fn tokio_test_io(chunks: &[&[u8]]) -> impl tokio::io::AsyncRead + Unpin {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let chunks: Vec<Vec<u8>> = chunks.iter().map(|c| c.to_vec()).collect();
        tokio::spawn(async move {
            for c in chunks {
                client.write_all(&c).await.unwrap();
                tokio::task::yield_now().await;
            }
        });
        server
    }
}
