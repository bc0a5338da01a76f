//! The unchanged poll answered at the connection layer: the protections
//! have already read the request header into a buffer, so a plain
//! `GET …/messages` or `…/members` whose `If-None-Match` matches the room's
//! fresh ETag is answered `304` right there, from a stack buffer, without
//! building a pingora session, a request header map or a response header.
//!
//! Anything unusual falls through to pingora, whose `ProxyHttp` applies the
//! same rule: a request it cannot parse completely with a small header
//! table, another method or path, a body, `Upgrade`, HTTP/1.0, bytes of a
//! pipelined next request behind the header, a poll that prefers to wait
//! (`Prefer: wait`) or an event stream (`Accept: text/event-stream`), which
//! only that path can hold. The answer is the same
//! either way (status, `ETag`, `Cache-Control: no-cache`).

use std::sync::Arc;

use chatty_shared::parse_room_path;
use chatty_shared::{if_none_match, EtagBuf};

use crate::hold::preferred_wait;
use crate::stream::wants_stream;
use crate::versions::{Refresh, VersionMap};

/// Header lines parsed on the fast path; a request with more goes to
/// pingora.
const MAX_HEADERS: usize = 32;

/// Longest `304` written here: the status line and two headers around an
/// ETag of at most [`EtagBuf`]'s capacity.
const MAX_ANSWER: usize = 160;

/// What the fast path says about one request header.
pub enum Verdict {
    /// Answer `304` with this ETag; `close` when the client asked for it.
    NotModified { etag: EtagBuf, close: bool },
    /// Let pingora handle it.
    Pass,
}

/// The fast path's view of the version map.
pub struct Shortcut {
    map: Arc<VersionMap>,
}

impl Shortcut {
    pub fn new(map: Arc<VersionMap>) -> Self {
        Self { map }
    }

    /// Decides on a complete request header (`head` holds exactly it).
    pub fn check(&self, head: &[u8]) -> Verdict {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(head) {
            Ok(httparse::Status::Complete(len)) if len == head.len() => {}
            _ => return Verdict::Pass,
        }
        if req.method != Some("GET") || req.version != Some(1) {
            return Verdict::Pass;
        }
        let Some(target) = req.path else {
            return Verdict::Pass;
        };
        let path = target.split_once('?').map_or(target, |(p, _)| p);
        let Some(room) = parse_room_path(path) else {
            return Verdict::Pass;
        };
        let Some(part) = room.resource("GET") else {
            return Verdict::Pass;
        };
        let mut close = false;
        let mut conditional = false;
        for h in req.headers.iter() {
            let name = h.name;
            if name.eq_ignore_ascii_case("if-none-match") {
                conditional = true;
            } else if name.eq_ignore_ascii_case("connection") {
                close |= has_token(h.value, b"close");
            } else if name.eq_ignore_ascii_case("prefer") {
                if preferred_wait([h.value]).is_some() {
                    return Verdict::Pass;
                }
            } else if name.eq_ignore_ascii_case("accept") {
                if wants_stream([h.value]) {
                    return Verdict::Pass;
                }
            } else if name.eq_ignore_ascii_case("transfer-encoding")
                || name.eq_ignore_ascii_case("upgrade")
                || (name.eq_ignore_ascii_case("content-length") && h.value.trim_ascii() != b"0")
            {
                return Verdict::Pass;
            }
        }
        if !conditional {
            return Verdict::Pass;
        }
        let key = self.map.room_hash(room.site, room.room);
        let now = self.map.now();
        // An entry due for a refresh is left to pingora's path, which lets
        // one request through to re-confirm it.
        let Some(known) = self.map.answerable(key, part, now, Refresh::Leave) else {
            return Verdict::Pass;
        };
        let etag = known.etag();
        let asked = req
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("if-none-match"))
            .map(|h| h.value);
        if if_none_match(asked, etag.as_bytes()) {
            Verdict::NotModified { etag, close }
        } else {
            Verdict::Pass
        }
    }
}

/// Whether a comma-separated header value holds `token` (any case).
fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// The bytes of a `304` with `etag`, closing the connection when `close`.
pub struct Answer {
    buf: [u8; MAX_ANSWER],
    len: usize,
}

impl Answer {
    pub fn not_modified(etag: &EtagBuf, close: bool) -> Answer {
        let mut a = Answer {
            buf: [0; MAX_ANSWER],
            len: 0,
        };
        a.push(b"HTTP/1.1 304 Not Modified\r\nETag: ");
        a.push(etag.as_bytes());
        a.push(b"\r\nCache-Control: no-cache\r\n");
        if close {
            a.push(b"Connection: close\r\n");
        }
        a.push(b"\r\n");
        a
    }

    fn push(&mut self, bytes: &[u8]) {
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chatty_shared::RoomVersion;

    use super::*;

    fn shortcut() -> Shortcut {
        let map = Arc::new(VersionMap::new(1000, Duration::from_secs(5)));
        let now = map.now();
        let k = map.room_hash("demo", "lobby");
        map.observe_messages(k, RoomVersion::new(1, 3), now);
        map.observe_members(k, 7, now);
        Shortcut::new(map)
    }

    fn verdict(s: &Shortcut, head: &str) -> Verdict {
        s.check(head.as_bytes())
    }

    #[test]
    fn answers_matching_polls() {
        let s = shortcut();
        for (head, tag, close) in [
            (
                "GET /v1/sites/demo/rooms/lobby/messages?after=3 HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"r1.3\"\r\n\r\n",
                "\"r1.3\"",
                false,
            ),
            (
                "GET /v1/sites/demo/rooms/lobby/messages HTTP/1.1\r\nif-none-match: \"x\"\r\nIF-NONE-MATCH: W/\"r1.3\"\r\nConnection: keep-alive, Close\r\n\r\n",
                "\"r1.3\"",
                true,
            ),
            (
                "GET /v1/sites/demo/rooms/lobby/members HTTP/1.1\r\nIf-None-Match: *\r\nContent-Length: 0\r\n\r\n",
                "\"m7\"",
                false,
            ),
            (
                "GET /v1/sites/demo/rooms/lobby/members HTTP/1.1\r\nPrefer: return=minimal, wait=0\r\nIf-None-Match: \"m7\"\r\n\r\n",
                "\"m7\"",
                false,
            ),
        ] {
            match verdict(&s, head) {
                Verdict::NotModified { etag, close: c } => {
                    assert_eq!(etag.as_str(), tag, "{head}");
                    assert_eq!(c, close, "{head}");
                }
                Verdict::Pass => panic!("passed: {head}"),
            }
        }
    }

    #[test]
    fn passes_everything_else() {
        let s = shortcut();
        for head in [
            // Another version, no If-None-Match, unknown room, other path.
            "GET /v1/sites/demo/rooms/lobby/messages HTTP/1.1\r\nIf-None-Match: \"r1.2\"\r\n\r\n",
            "GET /v1/sites/demo/rooms/lobby/messages HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET /v1/sites/demo/rooms/other/messages HTTP/1.1\r\nIf-None-Match: \"r1.3\"\r\n\r\n",
            "GET /v1/sites/demo/rooms/lobby/join HTTP/1.1\r\nIf-None-Match: \"r1.3\"\r\n\r\n",
            // Another method, HTTP/1.0, a body, an upgrade.
            "POST /v1/sites/demo/rooms/lobby/messages HTTP/1.1\r\nIf-None-Match: \"r1.3\"\r\n\r\n",
            "GET /v1/sites/demo/rooms/lobby/messages HTTP/1.0\r\nIf-None-Match: \"r1.3\"\r\n\r\n",
            "GET /v1/sites/demo/rooms/lobby/messages HTTP/1.1\r\nIf-None-Match: \"r1.3\"\r\nContent-Length: 2\r\n\r\n",
            "GET /v1/sites/demo/rooms/lobby/messages HTTP/1.1\r\nIf-None-Match: \"r1.3\"\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /v1/sites/demo/rooms/lobby/messages HTTP/1.1\r\nIf-None-Match: \"r1.3\"\r\nUpgrade: h2c\r\n\r\n",
            // A poll that prefers to wait, or a stream: pingora's path.
            "GET /v1/sites/demo/rooms/lobby/messages HTTP/1.1\r\nIf-None-Match: \"r1.3\"\r\nAccept: text/event-stream\r\n\r\n",
            "GET /v1/sites/demo/rooms/lobby/messages HTTP/1.1\r\nIf-None-Match: \"r1.3\"\r\nPrefer: wait=10\r\n\r\n",
            "GET /v1/sites/demo/rooms/lobby/members HTTP/1.1\r\nprefer: respond-async, WAIT=1\r\nIf-None-Match: \"m7\"\r\n\r\n",
            // A pipelined request behind the header, or a broken header.
            "GET /v1/sites/demo/rooms/lobby/messages HTTP/1.1\r\nIf-None-Match: \"r1.3\"\r\n\r\nGET / HTTP/1.1\r\n\r\n",
            "GET /v1/sites/demo/rooms/lobby/messages HTTP/1.1\r\nIf-None-Match \"r1.3\"\r\n\r\n",
            "GARBAGE\r\n\r\n",
        ] {
            assert!(matches!(verdict(&s, head), Verdict::Pass), "{head}");
        }
        // More header lines than the fast path parses.
        let mut many = String::from("GET /v1/sites/demo/rooms/lobby/messages HTTP/1.1\r\n");
        for i in 0..MAX_HEADERS {
            many.push_str(&format!("X-{i}: y\r\n"));
        }
        many.push_str("If-None-Match: \"r1.3\"\r\n\r\n");
        assert!(matches!(verdict(&s, &many), Verdict::Pass));
    }

    #[test]
    fn the_answer_bytes() {
        let s = shortcut();
        let Verdict::NotModified { etag, .. } = verdict(
            &s,
            "GET /v1/sites/demo/rooms/lobby/messages HTTP/1.1\r\nIf-None-Match: \"r1.3\"\r\n\r\n",
        ) else {
            panic!("passed")
        };
        assert_eq!(
            Answer::not_modified(&etag, false).as_bytes(),
            b"HTTP/1.1 304 Not Modified\r\nETag: \"r1.3\"\r\nCache-Control: no-cache\r\n\r\n"
        );
        assert!(Answer::not_modified(&etag, true)
            .as_bytes()
            .ends_with(b"Connection: close\r\n\r\n"));
    }
}
