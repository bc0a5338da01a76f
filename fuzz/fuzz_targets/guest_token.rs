//! Fuzz target: guest-token verification (`chat_api::token::TokenKeys`) on arbitrary strings.
//!
//! Checked with fixed keys: verifying any string never panics and never
//! accepts a token that is not for the room or already expired; a token signed
//! from input-chosen claims verifies (also after a key rotation), is refused
//! in another room and once expired; the same token with one byte changed
//! never verifies.

#![no_main]

/// The API's own token module, compiled in from its source file.
#[path = "../../chat-api/src/token.rs"]
#[allow(dead_code)]
mod token;

use token::{Claims, TokenError, TokenKeys};
use chatty_shared::RoomKey;
use libfuzzer_sys::fuzz_target;

/// "Now" for every check, so that runs are reproducible.
const NOW: u64 = 1_700_000_000;

fuzz_target!(|data: &[u8]| {
    let keys = TokenKeys::new(vec![vec![1; 32], vec![2; 32]]).unwrap();
    let rotated = TokenKeys::new(vec![vec![3; 40], vec![1; 32]]).unwrap();
    let lobby = RoomKey::new("demo", "lobby").unwrap();
    let other = RoomKey::new("demo", "other").unwrap();

    // Arbitrary input as a token.
    if let Ok(s) = std::str::from_utf8(data) {
        for k in [&keys, &rotated] {
            if let Ok(c) = k.verify(s, &lobby, NOW) {
                assert!(c.site == "demo" && c.room == "lobby" && c.exp > NOW, "{s:?} gave {c:?}");
            }
        }
    }

    // A token signed from claims the input chooses.
    let text = String::from_utf8_lossy(data);
    let (nick, member) = text.split_once('\n').unwrap_or((&text, "m1"));
    let sum = data.iter().fold(0u64, |a, b| a.wrapping_mul(31).wrapping_add(u64::from(*b)));
    let claims = Claims {
        site: "demo".into(),
        room: "lobby".into(),
        // As long as the API issues at most (nicks of 32 characters, member
        // ids shorter still), whatever the characters: every token it can
        // sign must fit within MAX_TOKEN_LEN and verify.
        member_id: member.chars().take(32).collect(),
        nick: nick.chars().take(32).collect(),
        exp: NOW + 1 + sum % 100_000,
        moderator: sum % 2 == 0,
    };
    let token = keys.sign(&claims);
    assert_eq!(keys.verify(&token, &lobby, NOW), Ok(claims.clone()), "{token}");
    assert_eq!(rotated.verify(&token, &lobby, NOW), Ok(claims.clone()), "{token}");
    assert_eq!(keys.verify(&token, &other, NOW), Err(TokenError::WrongRoom));
    assert_eq!(keys.verify(&token, &lobby, claims.exp), Err(TokenError::Expired));
    let other_keys = TokenKeys::new(vec![vec![4; 32]]).unwrap();
    assert_eq!(other_keys.verify(&token, &lobby, NOW), Err(TokenError::BadSignature));

    // One byte changed (within ASCII, so it stays a string) never verifies.
    let mut bytes = token.clone().into_bytes();
    let at = (sum / 7) as usize % bytes.len();
    let mask = 1 + (sum % 127) as u8;
    bytes[at] ^= mask;
    let flipped = String::from_utf8(bytes).expect("ASCII stays UTF-8");
    for k in [&keys, &rotated] {
        assert!(
            k.verify(&flipped, &lobby, NOW).is_err(),
            "byte {at} of {token:?} xor {mask:#x} still verifies: {flipped:?}"
        );
    }
});
