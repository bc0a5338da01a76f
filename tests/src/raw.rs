//! HTTP/1.1 written by hand on a TCP connection, for what a well-behaved
//! client never sends: oversized headers, bodies announced or chunked past a
//! limit.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::answer::Answer;

/// A request head: `line` (`GET /path HTTP/1.1`), `Host: x`, each of
/// `headers` (`Name: value`), and the blank line.
pub fn head(line: &str, headers: &[String]) -> Vec<u8> {
    let mut head = format!("{line}\r\nHost: x\r\n");
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// `body` in chunks of `size` bytes (chunked transfer coding), then the last
/// chunk.
pub fn chunked(body: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in body.chunks(size) {
        out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        out.extend_from_slice(piece);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// Writes `request` on a fresh connection to `addr` (in the background,
/// tolerating a reset once the server has answered) and reads the answer
/// until the server closes or `limit` passes.
pub async fn exchange(addr: &str, request: Vec<u8>, limit: Duration) -> Answer {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut r, mut w) = stream.into_split();
    let writer = tokio::spawn(async move {
        let _ = w.write_all(&request).await;
        // Keep the write half open until the server closes.
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(w);
    });
    let mut got = Vec::new();
    let mut buf = vec![0u8; 8192];
    let _ = tokio::time::timeout(limit, async {
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    writer.abort();
    Answer::parse(&got)
}
