//! User tokens from a host site: short-lived JSON Web Tokens that the site's
//! backend signs for a signed-in user (EdDSA with an Ed25519 key, so Chatty
//! holds only the public key, or HS256 with a shared secret), verified here
//! against the site's registered keys by their id (`kid`).
//!
//! A token is `base64url(header) "." base64url(claims) "." base64url(sig)`,
//! header `{"alg":"EdDSA"|"HS256","kid":…}`, claims
//! `{"aud":site,"sub":user id,"name":…,"roles":["moderator"],"iat":…,"exp":…,"jti":…}`.
//! Pure code: the store keeps the keys, the caller refuses replays.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ed25519_dalek::{Signature, VerifyingKey};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::validate;

/// Longest token looked at; anything longer is refused before decoding.
pub const MAX_HOST_TOKEN_LEN: usize = 2048;
/// Longest lifetime (`exp - iat`) a token may claim, in seconds: a token
/// is made for one page view, not for a session.
pub const MAX_LIFETIME_SECS: u64 = 3600;
/// Clock difference allowed between the host's backend and Chatty.
pub const CLOCK_SKEW_SECS: u64 = 60;
/// Most keys a site may register at once (rotation needs two).
pub const MAX_KEYS_PER_SITE: usize = 8;
/// Shortest HS256 secret accepted, in bytes.
pub const MIN_HMAC_KEY_BYTES: usize = 32;
/// Longest key id and token id.
pub const MAX_ID_LEN: usize = 64;
/// Prefix of the member id of a verified user (see the wire constant).
pub const VERIFIED_PREFIX: &str = chatty_shared::wire::VERIFIED_MEMBER_PREFIX;
/// The only role a host token can give.
pub const MODERATOR_ROLE: &str = "moderator";

/// How a key signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyAlg {
    /// Ed25519 (JWS `EdDSA`): the key registered is the 32-byte public key.
    #[serde(rename = "ed25519")]
    Ed25519,
    /// HMAC-SHA256 (JWS `HS256`): the key registered is the shared secret.
    #[serde(rename = "hmac-sha256")]
    HmacSha256,
}

impl KeyAlg {
    /// The JWS `alg` a token signed with this key must name.
    fn jws_name(self) -> &'static str {
        match self {
            KeyAlg::Ed25519 => "EdDSA",
            KeyAlg::HmacSha256 => "HS256",
        }
    }

    /// The stored code of the algorithm.
    pub fn code(self) -> u8 {
        match self {
            KeyAlg::Ed25519 => 1,
            KeyAlg::HmacSha256 => 2,
        }
    }

    pub fn from_code(code: u8) -> Option<KeyAlg> {
        match code {
            1 => Some(KeyAlg::Ed25519),
            2 => Some(KeyAlg::HmacSha256),
            _ => None,
        }
    }
}

/// A site's key for user tokens.
#[derive(Clone, PartialEq, Eq)]
pub struct UserKey {
    pub kid: String,
    pub alg: KeyAlg,
    pub key: Vec<u8>,
}

impl std::fmt::Debug for UserKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UserKey({}, {:?})", self.kid, self.alg)
    }
}

/// Why a key was refused at registration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("kid must be 1-64 characters of A-Z, a-z, 0-9, '_', '-' and '.'")]
    BadKid,
    #[error("key must be base64url")]
    NotBase64,
    #[error("an ed25519 key must be a 32-byte public key")]
    BadEd25519,
    #[error("an hmac-sha256 key must be at least 32 bytes")]
    ShortSecret,
}

impl UserKey {
    /// A key from its registration: the id, the algorithm and the key in
    /// base64url.
    pub fn parse(kid: &str, alg: KeyAlg, key_b64: &str) -> Result<UserKey, KeyError> {
        if !is_token_id(kid) || kid.contains(':') {
            return Err(KeyError::BadKid);
        }
        let key = B64
            .decode(key_b64.trim_end_matches('='))
            .map_err(|_| KeyError::NotBase64)?;
        match alg {
            KeyAlg::Ed25519 => {
                let bytes: [u8; 32] = key
                    .as_slice()
                    .try_into()
                    .map_err(|_| KeyError::BadEd25519)?;
                VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::BadEd25519)?;
            }
            KeyAlg::HmacSha256 if key.len() < MIN_HMAC_KEY_BYTES => {
                return Err(KeyError::ShortSecret)
            }
            KeyAlg::HmacSha256 => {}
        }
        Ok(UserKey {
            kid: kid.to_owned(),
            alg,
            key,
        })
    }

    /// Whether `sig` signs `signed` under this key.
    fn verifies(&self, signed: &[u8], sig: &[u8]) -> bool {
        match self.alg {
            KeyAlg::Ed25519 => {
                let Ok(bytes) = <[u8; 32]>::try_from(self.key.as_slice()) else {
                    return false;
                };
                let Ok(key) = VerifyingKey::from_bytes(&bytes) else {
                    return false;
                };
                let Ok(sig) = Signature::from_slice(sig) else {
                    return false;
                };
                key.verify_strict(signed, &sig).is_ok()
            }
            KeyAlg::HmacSha256 => {
                let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
                    return false;
                };
                mac.update(signed);
                mac.verify_slice(sig).is_ok()
            }
        }
    }
}

/// Why a user token was refused; the client is told which, never the
/// token itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HostTokenError {
    #[error("user token is malformed")]
    Malformed,
    #[error("user token names a key this site has not registered")]
    UnknownKey,
    #[error("user token's algorithm is not its key's")]
    WrongAlgorithm,
    #[error("user token's signature does not verify")]
    BadSignature,
    #[error("user token is for another site")]
    WrongSite,
    #[error("user token has expired")]
    Expired,
    #[error("user token is not valid yet")]
    NotYetValid,
    #[error("user token lives longer than an hour")]
    TooLongLived,
    #[error("user token's claims are invalid")]
    BadClaims,
    #[error("user token was already used")]
    Replayed,
}

impl HostTokenError {
    /// A stable name for logs and metrics.
    pub fn reason(self) -> &'static str {
        match self {
            HostTokenError::Malformed => "malformed",
            HostTokenError::UnknownKey => "unknown_key",
            HostTokenError::WrongAlgorithm => "wrong_algorithm",
            HostTokenError::BadSignature => "bad_signature",
            HostTokenError::WrongSite => "wrong_site",
            HostTokenError::Expired => "expired",
            HostTokenError::NotYetValid => "not_yet_valid",
            HostTokenError::TooLongLived => "too_long_lived",
            HostTokenError::BadClaims => "bad_claims",
            HostTokenError::Replayed => "replayed",
        }
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: String,
}

/// What a host token claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostClaims {
    /// The site the token is for.
    pub aud: String,
    /// The user's id at the host site.
    pub sub: String,
    /// The user's display name.
    pub name: String,
    #[serde(default)]
    pub roles: Vec<String>,
    /// Issued at, seconds since the Unix epoch.
    pub iat: u64,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// The token's own id, used once.
    pub jti: String,
}

/// A user the host site vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostUser {
    /// The member id in Chatty: [`VERIFIED_PREFIX`] and the host's id.
    pub member_id: String,
    pub name: String,
    pub moderator: bool,
    /// The token's id and expiry, for the caller's replay check.
    pub jti: String,
    pub exp: u64,
}

/// 1–64 of `A-Z a-z 0-9 _ - .` (key ids, token ids).
fn is_token_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn decode_part(part: &str) -> Result<Vec<u8>, HostTokenError> {
    B64.decode(part).map_err(|_| HostTokenError::Malformed)
}

/// Verifies `token` for `site` against the site's `keys` at `now` (seconds
/// since the Unix epoch). The signature is checked before any claim is
/// believed.
pub fn verify(
    token: &str,
    site: &str,
    keys: &[UserKey],
    now: u64,
) -> Result<HostUser, HostTokenError> {
    if token.len() > MAX_HOST_TOKEN_LEN {
        return Err(HostTokenError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(head), Some(body), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HostTokenError::Malformed);
    };
    let header: Header =
        serde_json::from_slice(&decode_part(head)?).map_err(|_| HostTokenError::Malformed)?;
    let key = keys
        .iter()
        .find(|k| k.kid == header.kid)
        .ok_or(HostTokenError::UnknownKey)?;
    if header.alg != key.alg.jws_name() {
        return Err(HostTokenError::WrongAlgorithm);
    }
    let signed_len = head.len() + 1 + body.len();
    if !key.verifies(&token.as_bytes()[..signed_len], &decode_part(sig)?) {
        return Err(HostTokenError::BadSignature);
    }
    let claims: HostClaims =
        serde_json::from_slice(&decode_part(body)?).map_err(|_| HostTokenError::BadClaims)?;
    if claims.aud != site {
        return Err(HostTokenError::WrongSite);
    }
    if now >= claims.exp.saturating_add(CLOCK_SKEW_SECS) {
        return Err(HostTokenError::Expired);
    }
    if claims.iat > now + CLOCK_SKEW_SECS {
        return Err(HostTokenError::NotYetValid);
    }
    if claims.exp < claims.iat || claims.exp - claims.iat > MAX_LIFETIME_SECS {
        return Err(HostTokenError::TooLongLived);
    }
    let sub_ok = claims.sub.len() + VERIFIED_PREFIX.len() <= validate::MAX_MEMBER_ID
        && validate::member_id(&claims.sub).is_ok();
    if !sub_ok || !is_token_id(&claims.jti) {
        return Err(HostTokenError::BadClaims);
    }
    let name = validate::nick(&claims.name).map_err(|_| HostTokenError::BadClaims)?;
    Ok(HostUser {
        member_id: format!("{VERIFIED_PREFIX}{}", claims.sub),
        name,
        moderator: claims.roles.iter().any(|r| r == MODERATOR_ROLE),
        jti: claims.jti,
        exp: claims.exp,
    })
}

/// Whether a member id is a verified user's.
pub fn is_verified(member_id: &str) -> bool {
    member_id.starts_with(VERIFIED_PREFIX)
}

/// Signs `claims` with `key`, as a host site's backend does: for tests and
/// for `chatty site`'s example token. An Ed25519 `key` is the 32-byte
/// private seed here, not the public key.
pub fn sign(claims: &HostClaims, kid: &str, alg: KeyAlg, key: &[u8]) -> String {
    let header = serde_json::json!({"alg": alg.jws_name(), "kid": kid, "typ": "JWT"});
    let mut token = B64.encode(header.to_string());
    token.push('.');
    token.push_str(&B64.encode(serde_json::to_vec(claims).expect("claims serialize")));
    let sig = match alg {
        KeyAlg::Ed25519 => {
            use ed25519_dalek::Signer;
            let seed: [u8; 32] = key.try_into().expect("an Ed25519 seed is 32 bytes");
            ed25519_dalek::SigningKey::from_bytes(&seed)
                .sign(token.as_bytes())
                .to_bytes()
                .to_vec()
        }
        KeyAlg::HmacSha256 => {
            let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("hmac takes any key");
            mac.update(token.as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
    };
    token.push('.');
    token.push_str(&B64.encode(sig));
    token
}

/// The base64url public key of an Ed25519 seed, as a site registers it.
pub fn ed25519_public(seed: &[u8; 32]) -> String {
    B64.encode(
        ed25519_dalek::SigningKey::from_bytes(seed)
            .verifying_key()
            .to_bytes(),
    )
}

#[cfg(test)]
mod tests;
