//! Site ids, room names and the room key `site/room`, with their validation.
//!
//! A site id is 1–32 characters of `a-z`, `0-9` and `-`. A room name is 1–64
//! characters of `A-Z`, `a-z`, `0-9`, `-` and `_`. The room key joins the two
//! with `/`; it is what the bus carries and what the edge hashes.

use std::fmt;

/// Longest site id accepted.
pub const MAX_SITE_LEN: usize = 32;
/// Longest room name accepted.
pub const MAX_ROOM_LEN: usize = 64;

/// Why a site id or room name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("site id must be 1-32 characters of a-z, 0-9 and '-'")]
    BadSite,
    #[error("room name must be 1-64 characters of A-Z, a-z, 0-9, '-' and '_'")]
    BadRoom,
}

/// True when `s` is a valid site id.
pub fn is_valid_site(s: &[u8]) -> bool {
    !s.is_empty()
        && s.len() <= MAX_SITE_LEN
        && s.iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

/// True when `s` is a valid room name.
pub fn is_valid_room(s: &[u8]) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ROOM_LEN
        && s.iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
}

/// A validated `(site, room)` pair.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomKey {
    site: String,
    room: String,
}

impl RoomKey {
    /// Validates both parts.
    pub fn new(site: &str, room: &str) -> Result<Self, KeyError> {
        if !is_valid_site(site.as_bytes()) {
            return Err(KeyError::BadSite);
        }
        if !is_valid_room(room.as_bytes()) {
            return Err(KeyError::BadRoom);
        }
        Ok(Self {
            site: site.to_owned(),
            room: room.to_owned(),
        })
    }

    /// Parses the `site/room` form used on the bus.
    pub fn parse(key: &str) -> Result<Self, KeyError> {
        let (site, room) = key.split_once('/').ok_or(KeyError::BadRoom)?;
        Self::new(site, room)
    }

    pub fn site(&self) -> &str {
        &self.site
    }

    pub fn room(&self) -> &str {
        &self.room
    }
}

impl fmt::Display for RoomKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.site, self.room)
    }
}

/// Which room resource a request path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Messages,
    Members,
}

/// A room path of the form `/v1/sites/{site}/rooms/{room}/{rest}`, split
/// without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomPath<'a> {
    pub site: &'a str,
    pub room: &'a str,
    /// What follows the room name, without the leading `/` (may be empty).
    pub rest: &'a str,
}

/// Splits a request path (no query string) into its room parts; `None` when
/// it is not a valid room path.
pub fn parse_room_path(path: &str) -> Option<RoomPath<'_>> {
    let tail = path.strip_prefix("/v1/sites/")?;
    let (site, after_site) = tail.split_once('/')?;
    let after_rooms = after_site.strip_prefix("rooms/")?;
    let (room, rest) = after_rooms.split_once('/').unwrap_or((after_rooms, ""));
    if !is_valid_site(site.as_bytes()) || !is_valid_room(room.as_bytes()) {
        return None;
    }
    Some(RoomPath { site, room, rest })
}

impl RoomPath<'_> {
    /// Which versioned part of the room a request with `method` on this
    /// path reads or writes: the polls (`GET …/messages`, `GET …/members`),
    /// a send, and a join (it answers with the messages ETag too). `None`
    /// for anything else.
    #[inline]
    pub fn resource(&self, method: &str) -> Option<Resource> {
        match (method, self.rest) {
            ("GET" | "POST", "messages") | ("POST", "join") => Some(Resource::Messages),
            ("GET", "members") => Some(Resource::Members),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_and_room_alphabets() {
        assert!(is_valid_site(b"demo"));
        assert!(is_valid_site(b"my-site-2"));
        assert!(!is_valid_site(b""));
        assert!(!is_valid_site(b"Demo"));
        assert!(!is_valid_site(b"a_b"));
        assert!(!is_valid_site(&[b'a'; 33]));
        assert!(is_valid_room(b"Lobby_2-x"));
        assert!(!is_valid_room(b"lob by"));
        assert!(!is_valid_room(b"a/b"));
        assert!(!is_valid_room(b"caf\xc3\xa9"));
        assert!(is_valid_room(&[b'r'; 64]));
        assert!(!is_valid_room(&[b'r'; 65]));
    }

    #[test]
    fn room_key_round_trip() {
        let k = RoomKey::new("demo", "lobby").unwrap();
        assert_eq!(k.to_string(), "demo/lobby");
        assert_eq!(RoomKey::parse("demo/lobby").unwrap(), k);
        assert_eq!(RoomKey::parse("demo"), Err(KeyError::BadRoom));
        assert_eq!(RoomKey::parse("DEMO/lobby"), Err(KeyError::BadSite));
        assert_eq!(RoomKey::parse("demo/lob/by"), Err(KeyError::BadRoom));
    }

    #[test]
    fn room_paths() {
        let p = parse_room_path("/v1/sites/demo/rooms/lobby/messages").unwrap();
        assert_eq!((p.site, p.room, p.rest), ("demo", "lobby", "messages"));
        let p = parse_room_path("/v1/sites/demo/rooms/lobby").unwrap();
        assert_eq!(p.rest, "");
        assert!(parse_room_path("/v1/sites/demo/rooms/").is_none());
        assert!(parse_room_path("/v1/sites/de mo/rooms/x/messages").is_none());
        assert!(parse_room_path("/v1/sites/demo/lobby/messages").is_none());
        assert!(parse_room_path("/v2/sites/demo/rooms/lobby").is_none());
    }

    fn check(method: &str, rest: &str, expect: Option<Resource>) {
        let path = format!("/v1/sites/demo/rooms/lobby/{rest}");
        let p = parse_room_path(&path).unwrap();
        assert_eq!(p.resource(method), expect, "{method} {rest}");
    }

    #[test]
    fn resources_of_room_paths() {
        use Resource::{Members, Messages};
        check("GET", "messages", Some(Messages));
        check("POST", "messages", Some(Messages));
        check("POST", "join", Some(Messages));
        check("GET", "members", Some(Members));
        check("POST", "members", None);
        check("HEAD", "messages", None);
        check("GET", "join", None);
        check("GET", "frame", None);
        check("GET", "messages/3", None);
        check("GET", "", None);
    }
}
