//! The rules matcher, table-driven: one line a case.

use super::*;

fn rules(words: &[&str], patterns: &[&str], action: BlockAction, links: LinkPolicy) -> Rules {
    Rules::compile(SiteRules {
        blocked_words: words.iter().map(|s| (*s).to_owned()).collect(),
        blocked_patterns: patterns.iter().map(|s| (*s).to_owned()).collect(),
        action,
        links,
        ..SiteRules::default()
    })
    .unwrap()
}

fn masking(words: &[&str], patterns: &[&str]) -> Rules {
    rules(words, patterns, BlockAction::Mask, LinkPolicy::Allow)
}

/// `text` through `r` as a guest: the stored text, or the refusal.
fn check(r: &Rules, text: &str, expect: Result<&str, Refusal>) {
    let got = r.apply(text, Sender::default()).map(|c| match c {
        Checked::Clean => text.to_owned(),
        Checked::Masked(m) => m,
    });
    assert_eq!(got.as_deref().map_err(|e| *e), expect, "{text:?}");
}

#[test]
fn words_match_whole_words_in_any_case() {
    let r = masking(&["darn", "Heck"], &[]);
    for (text, stored) in [
        ("darn it", "**** it"),
        ("DARN it", "**** it"),
        ("Darn, heck!", "****, ****!"),
        ("darned", "darned"),
        ("undarn", "undarn"),
        ("darn_it", "darn_it"),
        ("darn-it", "****-it"),
        ("oh heck.", "oh ****."),
        ("hecks and darns", "hecks and darns"),
        ("", ""),
    ] {
        check(&r, text, Ok(stored));
    }
}

#[test]
fn unicode_words_and_boundaries() {
    let r = masking(&["café", "ñandú", "дурак", "バカ"], &[]);
    for (text, stored) in [
        ("un CAFÉ noir", "un **** noir"),
        ("cafés", "cafés"),
        ("Ñandú!", "*****!"),
        ("ты ДУРАК", "ты *****"),
        ("дураки", "дураки"),
        // No spaces between Japanese words: a boundary is any change
        // from word to non-word character.
        ("バカ!", "**!"),
        ("é café é", "é **** é"),
        // Masks count characters, not bytes.
        ("café🙂café", "****🙂****"),
    ] {
        check(&r, text, Ok(stored));
    }
}

#[test]
fn phrases_and_words_that_begin_or_end_in_punctuation() {
    let r = masking(&["buy now", "c++", "@spam"], &[]);
    for (text, stored) in [
        ("please buy  now", "please ********"),
        ("buy\tnow", "*******"),
        ("buy nowhere", "buy nowhere"),
        ("I like C++.", "I like ***."),
        ("hi @spam there", "hi ***** there"),
        ("hi @spammer", "hi @spammer"),
    ] {
        check(&r, text, Ok(stored));
    }
}

#[test]
fn words_are_literal_not_patterns() {
    let r = masking(&["a.b", "(x)"], &[]);
    check(&r, "a.b and axb", Ok("*** and axb"));
    check(&r, "see (x) and x", Ok("see *** and x"));
}

#[test]
fn patterns_match_case_insensitively_and_can_say_otherwise() {
    let p = masking(&[], &[r"fr[e3]{2}\s*money", r"(?-i)SHOUT", r"\d{4}-\d{4}"]);
    for (text, stored) in [
        ("get FR33 money", "get **********"),
        ("get free  money", "get ***********"),
        ("SHOUT shout", "***** shout"),
        ("call 1234-5678 now", "call ********* now"),
    ] {
        check(&p, text, Ok(stored));
    }
    // The same text as a word is literal.
    let w = masking(&[r"fr[e3]{2}\s*money"], &[]);
    check(&w, "free money", Ok("free money"));
}

#[test]
fn overlapping_matches_are_masked_once() {
    let r = masking(&["bad word"], &["word!"]);
    check(&r, "a bad word! words", Ok("a ********* words"));
    let r = masking(&["ab", "bc"], &[]);
    check(&r, "ab bc abc", Ok("** ** abc"));
}

#[test]
fn refuse_stores_nothing() {
    let r = rules(&["darn"], &["x{3}"], BlockAction::Refuse, LinkPolicy::Allow);
    check(&r, "darn", Err(Refusal::BlockedText));
    check(&r, "xxx", Err(Refusal::BlockedText));
    check(&r, "darned xx", Ok("darned xx"));
}

#[test]
fn links_are_refused_to_guests_when_denied() {
    let r = rules(&[], &[], BlockAction::Mask, LinkPolicy::Deny);
    for (text, link) in [
        ("see https://example.org/x", true),
        ("see HTTP://EXAMPLE.ORG", true),
        ("ftp://files.example", true),
        ("go to www.example", true),
        ("example.com", true),
        ("visit Shop.Example.CO.uk/path?q=1", true),
        ("at example.com:8080/x", true),
        ("mail me: ann@example.org", true),
        ("example.com.", true),
        ("(example.io)", true),
        ("hello world", false),
        ("e.g. this, i.e. that", false),
        ("version 1.2.3 and 3.14", false),
        ("open notes.txt or main.rs", false),
        ("example.company", false),
        ("example . com", false),
        ("10.0.0.1", false),
        ("end.Next", false),
        ("", false),
    ] {
        let expect = if link { Err(Refusal::Link) } else { Ok(text) };
        check(&r, text, expect);
        assert_eq!(links::find(text).is_some(), link, "{text:?}");
    }
    let verified = Sender {
        verified: true,
        moderator: false,
    };
    assert_eq!(r.apply("https://example.org", verified), Ok(Checked::Clean));
    let moderator = Sender {
        verified: false,
        moderator: true,
    };
    assert_eq!(r.apply("example.com", moderator), Ok(Checked::Clean));
    let allowed = masking(&[], &[]);
    check(&allowed, "https://example.org", Ok("https://example.org"));
}

#[test]
fn a_link_refusal_comes_before_masking() {
    let r = rules(&["spam"], &[], BlockAction::Mask, LinkPolicy::Deny);
    check(&r, "spam at spam.com", Err(Refusal::Link));
    check(&r, "spam at home", Ok("**** at home"));
}

#[test]
fn bad_rules_are_refused() {
    let long = "x".repeat(MAX_ENTRY_CHARS + 1);
    let many: Vec<String> = (0..=MAX_ENTRIES).map(|i| format!("w{i}")).collect();
    let cases: Vec<(SiteRules, RulesError)> = vec![
        (
            SiteRules {
                blocked_words: many.clone(),
                ..SiteRules::default()
            },
            RulesError::TooMany {
                field: "blocked_words",
                count: MAX_ENTRIES + 1,
            },
        ),
        (
            SiteRules {
                blocked_patterns: many,
                ..SiteRules::default()
            },
            RulesError::TooMany {
                field: "blocked_patterns",
                count: MAX_ENTRIES + 1,
            },
        ),
        (
            SiteRules {
                blocked_words: vec!["ok".into(), "  ".into()],
                ..SiteRules::default()
            },
            RulesError::Empty {
                field: "blocked_words",
                index: 1,
            },
        ),
        (
            SiteRules {
                blocked_words: vec![long.clone()],
                ..SiteRules::default()
            },
            RulesError::TooLong {
                field: "blocked_words",
                index: 0,
            },
        ),
        (
            SiteRules {
                blocked_patterns: vec![long],
                ..SiteRules::default()
            },
            RulesError::TooLong {
                field: "blocked_patterns",
                index: 0,
            },
        ),
        (
            SiteRules {
                blocked_words: vec!["a\u{0}b".into()],
                ..SiteRules::default()
            },
            RulesError::Control {
                field: "blocked_words",
                index: 0,
            },
        ),
        (
            SiteRules {
                slow_mode_secs: MAX_SLOW_MODE_SECS + 1,
                ..SiteRules::default()
            },
            RulesError::SlowModeTooLong,
        ),
        (
            SiteRules {
                blocked_patterns: vec!["x*".into()],
                ..SiteRules::default()
            },
            RulesError::MatchesEmpty { index: 0 },
        ),
    ];
    for (r, expect) in cases {
        assert_eq!(Rules::compile(r).unwrap_err(), expect);
    }
    for bad in ["(", "a{2,1}", r"(?<=a)b", r"(a)\1", "[z-a]"] {
        let r = SiteRules {
            blocked_patterns: vec!["fine".into(), bad.into()],
            ..SiteRules::default()
        };
        assert!(
            matches!(
                Rules::compile(r),
                Err(RulesError::BadPattern { index: 1, .. })
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn oversized_patterns_are_refused() {
    // Short to write, huge once compiled (Unicode classes repeated).
    for big in [
        r"\w{100}\w{100}\w{100}",
        r"(\w{50}){50}",
        r"[\p{L}\p{N}]{1000}",
    ] {
        let r = SiteRules {
            blocked_patterns: vec![big.into()],
            ..SiteRules::default()
        };
        let err = Rules::compile(r).unwrap_err();
        assert!(
            matches!(err, RulesError::BadPattern { index: 0, ref reason } if reason.contains("large")),
            "{big:?}: {err}"
        );
    }
}

#[test]
fn the_most_rules_allowed_compile_and_match() {
    let words: Vec<String> = (0..MAX_ENTRIES)
        .map(|i| format!("{}{i}", "wörd".repeat(20)))
        .collect();
    let patterns: Vec<String> = (0..MAX_ENTRIES)
        .map(|i| format!(r"p{i}x[a-z]{{2,8}}\d+"))
        .collect();
    let r = Rules::compile(SiteRules {
        blocked_words: words.clone(),
        blocked_patterns: patterns,
        ..SiteRules::default()
    })
    .unwrap();
    let text = format!("a {} b p499xab12 c", words[321].to_uppercase());
    let stored = format!("a {} b {} c", "*".repeat(83), "*".repeat(9));
    check(&r, &text, Ok(&stored));
}

#[test]
fn words_are_trimmed_and_slow_mode_read() {
    let r = Rules::compile(SiteRules {
        blocked_words: vec!["  darn ".into()],
        slow_mode_secs: 30,
        ..SiteRules::default()
    })
    .unwrap();
    assert_eq!(r.source().blocked_words, vec!["darn".to_owned()]);
    assert_eq!(r.source().slow_mode_secs, 30);
    assert_eq!(slow_mode(30), Some(Duration::from_secs(30)));
    assert_eq!(slow_mode(0), None);
    assert!(Sender::default().is_slowed());
    assert!(!Sender::default().may_send_links());
}
