//! Every refusal of a user token, key rotation, and no token signed with
//! another site's key accepted, whatever it claims.

use super::*;

const NOW: u64 = 1_800_000_000;
const SEED_A: [u8; 32] = [7; 32];
const SEED_B: [u8; 32] = [9; 32];
const SECRET: &[u8] = b"a shared secret of at least thirty-two bytes";

fn claims() -> HostClaims {
    HostClaims {
        aud: "acme".into(),
        sub: "42".into(),
        name: "Ann Editor".into(),
        roles: vec![],
        iat: NOW - 10,
        exp: NOW + 290,
        jti: "t-1".into(),
    }
}

fn ed_key(kid: &str, seed: &[u8; 32]) -> UserKey {
    UserKey::parse(kid, KeyAlg::Ed25519, &ed25519_public(seed)).unwrap()
}

fn hmac_key(kid: &str) -> UserKey {
    UserKey::parse(kid, KeyAlg::HmacSha256, &B64.encode(SECRET)).unwrap()
}

fn ed_token(c: &HostClaims, kid: &str, seed: &[u8; 32]) -> String {
    sign(c, kid, KeyAlg::Ed25519, seed)
}

#[test]
fn a_good_token_of_either_algorithm_names_the_user() {
    let keys = [ed_key("k1", &SEED_A), hmac_key("h1")];
    for token in [
        ed_token(&claims(), "k1", &SEED_A),
        sign(&claims(), "h1", KeyAlg::HmacSha256, SECRET),
    ] {
        let user = verify(&token, "acme", &keys, NOW).unwrap();
        assert_eq!(user.member_id, "u_42");
        assert_eq!(user.name, "Ann Editor");
        assert!(!user.moderator);
        assert_eq!((user.jti.as_str(), user.exp), ("t-1", NOW + 290));
        assert!(is_verified(&user.member_id));
    }
    let mut m = claims();
    m.roles = vec!["reader".into(), "moderator".into()];
    let user = verify(&ed_token(&m, "k1", &SEED_A), "acme", &keys, NOW).unwrap();
    assert!(user.moderator);
}

#[test]
fn every_refusal_names_its_reason() {
    let keys = [ed_key("k1", &SEED_A), hmac_key("h1")];
    let with = |f: fn(&mut HostClaims)| {
        let mut c = claims();
        f(&mut c);
        ed_token(&c, "k1", &SEED_A)
    };
    let good = ed_token(&claims(), "k1", &SEED_A);
    // A claim changed after signing (the name, in the middle part).
    let mut renamed = claims();
    renamed.name = "Someone Else".into();
    let parts: Vec<&str> = good.split('.').collect();
    let forged_body = B64.encode(serde_json::to_vec(&renamed).unwrap());
    let tampered = format!("{}.{forged_body}.{}", parts[0], parts[2]);
    let hs_claiming_ed = {
        // An HS256 token whose header names the Ed25519 key: the public key
        // used as an HMAC secret (the classic confusion) is refused.
        let public = B64.decode(ed25519_public(&SEED_A)).unwrap();
        sign(&claims(), "k1", KeyAlg::HmacSha256, &public)
    };
    let cases: Vec<(&str, String, &str, u64, HostTokenError)> = vec![
        (
            "empty",
            String::new(),
            "acme",
            NOW,
            HostTokenError::Malformed,
        ),
        (
            "two parts",
            "a.b".into(),
            "acme",
            NOW,
            HostTokenError::Malformed,
        ),
        (
            "four parts",
            format!("{good}.x"),
            "acme",
            NOW,
            HostTokenError::Malformed,
        ),
        (
            "not base64",
            "!.!.!".into(),
            "acme",
            NOW,
            HostTokenError::Malformed,
        ),
        (
            "too long",
            "a".repeat(MAX_HOST_TOKEN_LEN + 1),
            "acme",
            NOW,
            HostTokenError::Malformed,
        ),
        (
            "unknown key",
            ed_token(&claims(), "k9", &SEED_A),
            "acme",
            NOW,
            HostTokenError::UnknownKey,
        ),
        (
            "wrong algorithm",
            hs_claiming_ed,
            "acme",
            NOW,
            HostTokenError::WrongAlgorithm,
        ),
        (
            "another key",
            ed_token(&claims(), "k1", &SEED_B),
            "acme",
            NOW,
            HostTokenError::BadSignature,
        ),
        (
            "hmac other secret",
            sign(
                &claims(),
                "h1",
                KeyAlg::HmacSha256,
                b"another secret of at least thirty-two bytes!",
            ),
            "acme",
            NOW,
            HostTokenError::BadSignature,
        ),
        (
            "tampered claims",
            tampered,
            "acme",
            NOW,
            HostTokenError::BadSignature,
        ),
        (
            "wrong site",
            good.clone(),
            "other",
            NOW,
            HostTokenError::WrongSite,
        ),
        (
            "expired",
            good.clone(),
            "acme",
            NOW + 290 + CLOCK_SKEW_SECS,
            HostTokenError::Expired,
        ),
        (
            "future",
            with(|c| {
                c.iat = NOW + CLOCK_SKEW_SECS + 5;
                c.exp = c.iat + 60;
            }),
            "acme",
            NOW,
            HostTokenError::NotYetValid,
        ),
        (
            "too long lived",
            with(|c| c.exp = c.iat + MAX_LIFETIME_SECS + 1),
            "acme",
            NOW,
            HostTokenError::TooLongLived,
        ),
        (
            "exp before iat",
            with(|c| c.exp = c.iat - 1),
            "acme",
            NOW - 20,
            HostTokenError::TooLongLived,
        ),
        (
            "empty sub",
            with(|c| c.sub.clear()),
            "acme",
            NOW,
            HostTokenError::BadClaims,
        ),
        (
            "sub with a colon",
            with(|c| c.sub = "a:b".into()),
            "acme",
            NOW,
            HostTokenError::BadClaims,
        ),
        (
            "sub too long",
            with(|c| c.sub = "x".repeat(63)),
            "acme",
            NOW,
            HostTokenError::BadClaims,
        ),
        (
            "empty name",
            with(|c| c.name = "  ".into()),
            "acme",
            NOW,
            HostTokenError::BadClaims,
        ),
        (
            "bidi name",
            with(|c| c.name = "Ann\u{202E}".into()),
            "acme",
            NOW,
            HostTokenError::BadClaims,
        ),
        (
            "bad jti",
            with(|c| c.jti = "a b".into()),
            "acme",
            NOW,
            HostTokenError::BadClaims,
        ),
    ];
    for (what, token, site, now, want) in cases {
        assert_eq!(verify(&token, site, &keys, now), Err(want), "{what}");
    }
}

#[test]
fn the_edges_of_time_hold() {
    let keys = [ed_key("k1", &SEED_A)];
    let good = ed_token(&claims(), "k1", &SEED_A);
    let exp = claims().exp;
    assert!(verify(&good, "acme", &keys, exp + CLOCK_SKEW_SECS - 1).is_ok());
    let mut c = claims();
    c.iat = NOW + CLOCK_SKEW_SECS;
    c.exp = c.iat + MAX_LIFETIME_SECS;
    assert!(verify(&ed_token(&c, "k1", &SEED_A), "acme", &keys, NOW).is_ok());
}

#[test]
fn rotation_old_key_verifies_while_registered_then_not() {
    let old = ed_token(&claims(), "2026-01", &SEED_A);
    let new = ed_token(&claims(), "2026-02", &SEED_B);
    let before = [ed_key("2026-01", &SEED_A)];
    let during = [ed_key("2026-01", &SEED_A), ed_key("2026-02", &SEED_B)];
    let after = [ed_key("2026-02", &SEED_B)];
    assert!(verify(&old, "acme", &before, NOW).is_ok());
    assert_eq!(
        verify(&new, "acme", &before, NOW),
        Err(HostTokenError::UnknownKey)
    );
    assert!(verify(&old, "acme", &during, NOW).is_ok());
    assert!(verify(&new, "acme", &during, NOW).is_ok());
    assert_eq!(
        verify(&old, "acme", &after, NOW),
        Err(HostTokenError::UnknownKey)
    );
    assert!(verify(&new, "acme", &after, NOW).is_ok());
}

#[test]
fn keys_are_checked_when_registered() {
    assert_eq!(
        UserKey::parse("", KeyAlg::Ed25519, &ed25519_public(&SEED_A)),
        Err(KeyError::BadKid)
    );
    assert_eq!(
        UserKey::parse("a b", KeyAlg::Ed25519, &ed25519_public(&SEED_A)),
        Err(KeyError::BadKid)
    );
    assert_eq!(
        UserKey::parse("k", KeyAlg::Ed25519, "***"),
        Err(KeyError::NotBase64)
    );
    assert_eq!(
        UserKey::parse("k", KeyAlg::Ed25519, &B64.encode([1u8; 31])),
        Err(KeyError::BadEd25519)
    );
    assert_eq!(
        UserKey::parse("k", KeyAlg::HmacSha256, &B64.encode([1u8; 31])),
        Err(KeyError::ShortSecret)
    );
    assert!(UserKey::parse("k.1_a-b", KeyAlg::HmacSha256, &B64.encode([1u8; 32])).is_ok());
    // Padding is tolerated.
    assert!(UserKey::parse(
        "k",
        KeyAlg::HmacSha256,
        &format!("{}==", B64.encode([1u8; 32]))
    )
    .is_ok());
}

/// A small deterministic generator (xorshift), so the property runs the
/// same cases every time and needs no extra crate.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn seed(&mut self) -> [u8; 32] {
        let mut s = [0u8; 32];
        for chunk in s.chunks_mut(8) {
            chunk.copy_from_slice(&self.next().to_le_bytes());
        }
        s
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[(self.next() % from.len() as u64) as usize]
    }
}

#[test]
fn no_token_signed_with_another_sites_key_is_ever_accepted() {
    let mut g = Gen(0x9e37_79b9_7f4a_7c15);
    let kids = ["k1", "k2", "main", "2026-01"];
    let sites = ["acme", "news", "shop"];
    for _ in 0..400 {
        // Site A's keys; site B has its own, possibly with the same ids.
        let (seed_a, seed_b) = (g.seed(), g.seed());
        let (kid_a, kid_b) = (g.pick(&kids), g.pick(&kids));
        let secret_b = g.seed();
        let keys_a = [
            ed_key(kid_a, &seed_a),
            UserKey::parse("h", KeyAlg::HmacSha256, &B64.encode(g.seed())).unwrap(),
        ];
        let site_a = g.pick(&sites);
        // B's token may claim any site, site A's included, any role.
        let mut c = claims();
        c.aud = g.pick(&[site_a, "news", "other"]).to_owned();
        c.roles = vec![g.pick(&["moderator", "reader"]).to_owned()];
        let by_b = [
            ed_token(&c, kid_b, &seed_b),
            sign(&c, "h", KeyAlg::HmacSha256, &secret_b),
            sign(&c, kid_a, KeyAlg::HmacSha256, &secret_b),
        ];
        for token in by_b {
            assert!(
                verify(&token, site_a, &keys_a, NOW).is_err(),
                "a token of another site's key was accepted: {c:?}"
            );
        }
        // The property is not vacuous: A's own key passes.
        let mut own = claims();
        own.aud = site_a.to_owned();
        assert!(verify(&ed_token(&own, kid_a, &seed_a), site_a, &keys_a, NOW).is_ok());
    }
}
