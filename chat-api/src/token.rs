//! Guest tokens: HMAC-SHA256 over (site, room, member id, nick, expiry),
//! base64url, verified in constant time against every configured key (the
//! first key signs, so keys rotate by prepending a new one).
//!
//! Format: `base64url(payload) "." base64url(mac)` where the payload is a
//! small JSON object. A token names one room: it is refused in any other.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use chatty_shared::RoomKey;

type HmacSha256 = Hmac<Sha256>;

/// Shortest key accepted, in bytes.
pub const MIN_KEY_BYTES: usize = 32;

/// Longest token looked at; anything longer is refused before decoding.
pub const MAX_TOKEN_LEN: usize = 1024;

/// How long a guest token is valid.
pub const TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    #[serde(rename = "s")]
    pub site: String,
    #[serde(rename = "r")]
    pub room: String,
    #[serde(rename = "m")]
    pub member_id: String,
    #[serde(rename = "n")]
    pub nick: String,
    /// Expiry, seconds since the Unix epoch.
    #[serde(rename = "e")]
    pub exp: u64,
    /// A verified user with the moderator role of the host site.
    #[serde(rename = "o", default, skip_serializing_if = "std::ops::Not::not")]
    pub moderator: bool,
}

/// Why a token was refused. The client sees only "unauthorized".
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("bad signature")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token is for another room")]
    WrongRoom,
}

/// Why a key set was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("at least one token key is required")]
    NoKey,
    #[error("token key {0} is shorter than 32 bytes")]
    TooShort(usize),
}

/// The signing and verifying keys.
#[derive(Clone)]
pub struct TokenKeys {
    keys: Vec<Vec<u8>>,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenKeys({} keys)", self.keys.len())
    }
}

impl TokenKeys {
    /// The first key signs; all of them verify.
    pub fn new(keys: Vec<Vec<u8>>) -> Result<Self, KeyError> {
        if keys.is_empty() {
            return Err(KeyError::NoKey);
        }
        if let Some(i) = keys.iter().position(|k| k.len() < MIN_KEY_BYTES) {
            return Err(KeyError::TooShort(i + 1));
        }
        Ok(Self { keys })
    }

    fn mac(key: &[u8]) -> HmacSha256 {
        // HMAC accepts keys of any length.
        <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!())
    }

    /// Signs `claims` with the first key.
    pub fn sign(&self, claims: &Claims) -> String {
        let payload = serde_json::to_vec(claims).unwrap_or_default();
        let mut mac = Self::mac(&self.keys[0]);
        mac.update(&payload);
        let tag = mac.finalize().into_bytes();
        let mut out = B64.encode(&payload);
        out.push('.');
        out.push_str(&B64.encode(tag));
        out
    }

    /// Checks the signature (constant time, any key), the expiry against
    /// `now_secs` and the room.
    pub fn verify(&self, token: &str, room: &RoomKey, now_secs: u64) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let (payload_b64, tag_b64) = token.split_once('.').ok_or(TokenError::Malformed)?;
        let payload = B64.decode(payload_b64).map_err(|_| TokenError::Malformed)?;
        let tag = B64.decode(tag_b64).map_err(|_| TokenError::Malformed)?;
        let signed = self.keys.iter().any(|key| {
            let mut mac = Self::mac(key);
            mac.update(&payload);
            mac.verify_slice(&tag).is_ok()
        });
        if !signed {
            return Err(TokenError::BadSignature);
        }
        let claims: Claims = serde_json::from_slice(&payload).map_err(|_| TokenError::Malformed)?;
        if claims.site != room.site() || claims.room != room.room() {
            return Err(TokenError::WrongRoom);
        }
        if claims.exp <= now_secs {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The token in an `Authorization: Bearer …` value, if any.
pub fn bearer(value: Option<&str>) -> Option<&str> {
    let (scheme, rest) = value?.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let t = rest.trim();
    (!t.is_empty()).then_some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(seeds: &[u8]) -> TokenKeys {
        TokenKeys::new(seeds.iter().map(|s| vec![*s; 32]).collect()).unwrap()
    }

    fn claims() -> Claims {
        Claims {
            site: "demo".into(),
            room: "lobby".into(),
            member_id: "m1".into(),
            nick: "Ann \"A\" .".into(),
            exp: 1000,
            moderator: false,
        }
    }

    fn lobby() -> RoomKey {
        RoomKey::new("demo", "lobby").unwrap()
    }

    #[test]
    fn round_trip() {
        let k = keys(&[1]);
        let t = k.sign(&claims());
        assert!(t
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'));
        assert_eq!(k.verify(&t, &lobby(), 999), Ok(claims()));
    }

    #[test]
    fn expired_wrong_room_forged() {
        let k = keys(&[1]);
        let t = k.sign(&claims());
        assert_eq!(k.verify(&t, &lobby(), 1000), Err(TokenError::Expired));
        let other = RoomKey::new("demo", "other").unwrap();
        assert_eq!(k.verify(&t, &other, 1), Err(TokenError::WrongRoom));
        let other_site = RoomKey::new("demo2", "lobby").unwrap();
        assert_eq!(k.verify(&t, &other_site, 1), Err(TokenError::WrongRoom));
        // Signed with a key we do not have.
        let t2 = keys(&[2]).sign(&claims());
        assert_eq!(k.verify(&t2, &lobby(), 1), Err(TokenError::BadSignature));
        // Payload changed, signature kept.
        let mut c = claims();
        c.member_id = "m2".into();
        let forged_payload = B64.encode(serde_json::to_vec(&c).unwrap());
        let sig = t.split_once('.').unwrap().1;
        let forged = format!("{forged_payload}.{sig}");
        assert_eq!(
            k.verify(&forged, &lobby(), 1),
            Err(TokenError::BadSignature)
        );
        for junk in ["", ".", "abc", "a.b.c", "!!!.???", &"a".repeat(5000)] {
            assert!(k.verify(junk, &lobby(), 1).is_err(), "{junk}");
        }
    }

    #[test]
    fn rotation_first_signs_all_verify() {
        let old = keys(&[1]);
        let rotated = keys(&[2, 1]);
        let t_old = old.sign(&claims());
        assert_eq!(rotated.verify(&t_old, &lobby(), 1), Ok(claims()));
        let t_new = rotated.sign(&claims());
        assert_eq!(
            old.verify(&t_new, &lobby(), 1),
            Err(TokenError::BadSignature)
        );
        assert_eq!(keys(&[2]).verify(&t_new, &lobby(), 1), Ok(claims()));
    }

    #[test]
    fn key_rules() {
        assert_eq!(TokenKeys::new(vec![]).unwrap_err(), KeyError::NoKey);
        assert_eq!(
            TokenKeys::new(vec![vec![0; 32], vec![0; 31]]).unwrap_err(),
            KeyError::TooShort(2)
        );
    }

    #[test]
    fn bearer_header() {
        assert_eq!(bearer(Some("Bearer abc.def")), Some("abc.def"));
        assert_eq!(bearer(Some("bearer   x ")), Some("x"));
        for bad in ["Basic abc", "Bearer", "Bearer  ", "abc"] {
            assert_eq!(bearer(Some(bad)), None, "{bad}");
        }
        assert_eq!(bearer(None), None);
    }
}
