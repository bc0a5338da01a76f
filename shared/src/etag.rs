//! The ETag formats and `If-None-Match` matching (RFC 9110 §13.1.2).
//!
//! A room's messages ETag is `"r{epoch}.{seq}"`: the room's epoch (changes
//! when its history is reset) and the seq of its last event. A room's members
//! ETag is `"m{version}"`. Both are opaque to clients; the edge compares them
//! byte for byte, formatting the current one on the stack so the 304 path
//! never allocates.

use std::fmt;

use crate::decimal::parse_decimal;

/// The version of a room's event log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct RoomVersion {
    /// Chosen at random when the room's log starts; 0 for a room with no log.
    pub epoch: u32,
    /// Seq of the last event; 0 for an empty log.
    pub seq: u64,
}

/// Longest ETag this module formats: quotes, a tag letter, a u32, a dot and
/// a u64.
pub const MAX_ETAG_LEN: usize = 2 + 1 + 10 + 1 + 20;

/// An ETag formatted on the stack.
#[derive(Clone, Copy)]
pub struct EtagBuf {
    bytes: [u8; MAX_ETAG_LEN],
    len: usize,
}

impl EtagBuf {
    fn new() -> Self {
        Self {
            bytes: [0; MAX_ETAG_LEN],
            len: 0,
        }
    }

    fn push(&mut self, s: &[u8]) {
        self.bytes[self.len..self.len + s.len()].copy_from_slice(s);
        self.len += s.len();
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII digits, letters, dots and quotes are ever pushed.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

impl fmt::Debug for EtagBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl RoomVersion {
    pub fn new(epoch: u32, seq: u64) -> Self {
        Self { epoch, seq }
    }

    /// The messages ETag, formatted without allocating.
    pub fn etag(&self) -> EtagBuf {
        let mut buf = EtagBuf::new();
        let mut num = itoa::Buffer::new();
        buf.push(b"\"r");
        buf.push(num.format(self.epoch).as_bytes());
        buf.push(b".");
        buf.push(num.format(self.seq).as_bytes());
        buf.push(b"\"");
        buf
    }
}

/// The members ETag for a members version, formatted without allocating.
pub fn members_etag(version: u64) -> EtagBuf {
    let mut buf = EtagBuf::new();
    let mut num = itoa::Buffer::new();
    buf.push(b"\"m");
    buf.push(num.format(version).as_bytes());
    buf.push(b"\"");
    buf
}

/// What an ETag this module formatted stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    Room(RoomVersion),
    Members(u64),
}

/// Parses one ETag (`"r1.2"`, `W/"m7"`); `None` for anything else.
pub fn parse_etag(s: &str) -> Option<Tag> {
    let s = s.trim();
    let s = s.strip_prefix("W/").unwrap_or(s);
    let inner = s.strip_prefix('"')?.strip_suffix('"')?;
    if let Some(rest) = inner.strip_prefix('r') {
        let (epoch, seq) = rest.split_once('.')?;
        return Some(Tag::Room(RoomVersion {
            epoch: parse_decimal(epoch)?,
            seq: parse_decimal(seq)?,
        }));
    }
    let rest = inner.strip_prefix('m')?;
    Some(Tag::Members(parse_decimal(rest)?))
}

/// True when an `If-None-Match` field value matches `current` (a quoted
/// ETag) under weak comparison: `*`, or any entity-tag of the list whose
/// opaque-tag equals `current`'s. Malformed members of the list never match.
/// `values` holds every `If-None-Match` field line of the request.
pub fn if_none_match<'a>(values: impl IntoIterator<Item = &'a [u8]>, current: &[u8]) -> bool {
    let current = strip_weak(current);
    values.into_iter().any(|value| list_matches(value, current))
}

fn strip_weak(tag: &[u8]) -> &[u8] {
    tag.strip_prefix(b"W/").unwrap_or(tag)
}

fn list_matches(value: &[u8], current: &[u8]) -> bool {
    let mut rest = value;
    loop {
        rest = trim_start(rest);
        if rest.is_empty() {
            return false;
        }
        if rest[0] == b'*' {
            let after = trim_start(&rest[1..]);
            if after.is_empty() || after[0] == b',' {
                return true;
            }
            return false;
        }
        let tag_start = if rest.starts_with(b"W/") { 2 } else { 0 };
        let body = &rest[tag_start..];
        if body.first() != Some(&b'"') {
            return false;
        }
        let Some(close) = body[1..].iter().position(|b| *b == b'"') else {
            return false;
        };
        let opaque = &body[..close + 2];
        if opaque == current {
            return true;
        }
        rest = trim_start(&body[close + 2..]);
        match rest.first() {
            None => return false,
            Some(b',') => rest = &rest[1..],
            Some(_) => return false,
        }
    }
}

fn trim_start(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|b| **b == b' ' || **b == b'\t').count();
    &s[n..]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inm(v: &str, current: &str) -> bool {
        if_none_match([v.as_bytes()], current.as_bytes())
    }

    #[test]
    fn formats_and_parses() {
        let v = RoomVersion::new(42, 7);
        assert_eq!(v.etag().as_str(), "\"r42.7\"");
        assert_eq!(parse_etag("\"r42.7\""), Some(Tag::Room(v)));
        assert_eq!(parse_etag("W/\"r42.7\""), Some(Tag::Room(v)));
        assert_eq!(members_etag(9).as_str(), "\"m9\"");
        assert_eq!(parse_etag("\"m9\""), Some(Tag::Members(9)));
        let max = RoomVersion::new(u32::MAX, u64::MAX);
        assert_eq!(parse_etag(max.etag().as_str()), Some(Tag::Room(max)));
        for bad in [
            "r1.2",
            "\"r1\"",
            "\"r.2\"",
            "\"x1\"",
            "\"r1.2",
            "\"m\"",
            "\"r-1.2\"",
            "\"r1.+2\"",
        ] {
            assert_eq!(parse_etag(bad), None, "{bad}");
        }
    }

    #[test]
    fn if_none_match_rules() {
        let cur = "\"r1.5\"";
        assert!(inm("\"r1.5\"", cur));
        assert!(inm("W/\"r1.5\"", cur));
        assert!(inm("\"r1.4\", \"r1.5\"", cur));
        assert!(inm("\"a\",W/\"r1.5\"  ,\"b\"", cur));
        assert!(inm("*", cur));
        assert!(inm("  * ", cur));
        assert!(inm("\"r1.5\"", "W/\"r1.5\""));
        assert!(!inm("\"r1.4\"", cur));
        assert!(!inm("\"r2.5\"", cur));
        assert!(!inm("", cur));
        assert!(!inm("r1.5", cur));
        assert!(!inm("\"r1.5", cur));
        assert!(!inm("\"r1.4\" \"r1.5\"", cur));
        assert!(!inm("\"r1.4\", junk, \"r1.5\"", cur));
        assert!(!inm("*x", cur));
        assert!(if_none_match(
            ["\"x\"".as_bytes(), "\"r1.5\"".as_bytes()],
            cur.as_bytes()
        ));
    }
}
