//! Rules for what clients send: nicknames, message text, client ids, and the
//! site origin patterns (`https://example.com`, `http://localhost:*`) with
//! the matching of an `Origin` against them.

/// Longest nickname, in characters.
pub const MAX_NICK_CHARS: usize = 32;
/// Longest client id, in bytes.
pub const MAX_CLIENT_ID: usize = 64;
/// Longest member id, in bytes.
pub const MAX_MEMBER_ID: usize = 64;
/// Most origins a site may list.
pub const MAX_ORIGINS: usize = 32;
/// Longest origin pattern.
pub const MAX_ORIGIN_LEN: usize = 253 + 16;

/// Characters that reorder text around them (bidi overrides, isolates and
/// marks) or break lines: refused in nicknames so that a name cannot
/// disguise itself or the text after it.
fn is_bidi_or_separator(c: char) -> bool {
    matches!(c,
        '\u{202A}'..='\u{202E}'
        | '\u{2066}'..='\u{2069}'
        | '\u{200E}' | '\u{200F}'
        | '\u{061C}'
        | '\u{2028}' | '\u{2029}')
}

/// Checks a nickname; returns it trimmed.
pub fn nick(raw: &str) -> Result<String, &'static str> {
    let n = raw.trim();
    if n.is_empty() {
        return Err("nick must not be empty");
    }
    if n.chars().count() > MAX_NICK_CHARS {
        return Err("nick must be at most 32 characters");
    }
    if n.chars().any(|c| c.is_control() || is_bidi_or_separator(c)) {
        return Err("nick must not contain control or bidirectional-override characters");
    }
    Ok(n.to_owned())
}

/// Checks a message text against the byte limit in force.
pub fn text(raw: &str, max_bytes: usize) -> Result<(), String> {
    if raw.trim().is_empty() {
        return Err("text must not be empty".into());
    }
    if raw.len() > max_bytes {
        return Err(format!("text must be at most {max_bytes} bytes"));
    }
    if raw
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err("text must not contain control characters".into());
    }
    Ok(())
}

/// Checks an idempotency key: 1–64 of `A-Z a-z 0-9 _ -`.
pub fn client_id(raw: &str) -> Result<(), &'static str> {
    if raw.is_empty()
        || raw.len() > MAX_CLIENT_ID
        || !raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err("client_id must be 1-64 characters of A-Z, a-z, 0-9, '_' and '-'");
    }
    Ok(())
}

/// Checks a member id as the ban endpoint receives it.
pub fn member_id(raw: &str) -> Result<(), &'static str> {
    if raw.is_empty()
        || raw.len() > MAX_MEMBER_ID
        || !raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err("member_id must be 1-64 characters of A-Z, a-z, 0-9, '_' and '-'");
    }
    Ok(())
}

/// An origin pattern split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern<'a> {
    scheme: &'a str,
    host: &'a str,
    /// `None`: the scheme's default port; `Some("*")`: any port.
    port: Option<&'a str>,
}

fn split(origin: &str) -> Option<Pattern<'_>> {
    let (scheme, rest) = origin.split_once("://")?;
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (inside, after) = v6.split_once(']')?;
        let host = &rest[..inside.len() + 2];
        match after {
            "" => (host, None),
            p => (host, Some(p.strip_prefix(':')?)),
        }
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    Some(Pattern { scheme, host, port })
}

fn valid_host(host: &str, allow_wildcard: bool) -> bool {
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return !v6.is_empty()
            && v6
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
    }
    let name = match host.strip_prefix("*.") {
        Some(rest) if allow_wildcard => rest,
        _ => host,
    };
    !name.is_empty()
        && name.len() <= 253
        && !name.starts_with('.')
        && !name.ends_with('.')
        && !name.contains("..")
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

fn valid_port(port: &str, allow_any: bool) -> bool {
    (allow_any && port == "*")
        || (!port.is_empty()
            && port.len() <= 5
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u16>().is_ok_and(|p| p > 0))
}

/// Normalises and checks an origin pattern given by a site owner:
/// `scheme://host[:port]` with scheme http or https, a lowercase host (a
/// leading `*.` allows subdomains), and a port or `*` for any port. The
/// result is safe to put in a CSP header.
pub fn origin_pattern(raw: &str) -> Result<String, String> {
    let o = raw.trim().trim_end_matches('/').to_ascii_lowercase();
    let refuse =
        || format!("{raw:?} is not an origin like https://example.com or http://localhost:*");
    if o.len() > MAX_ORIGIN_LEN {
        return Err(refuse());
    }
    let p = split(&o).ok_or_else(refuse)?;
    if !valid_host(p.host, true) {
        return Err(refuse());
    }
    if let Some(port) = p.port {
        if !valid_port(port, true) {
            return Err(refuse());
        }
    }
    Ok(o)
}

/// Checks a site's whole origin list.
pub fn origin_patterns(raw: &[String]) -> Result<Vec<String>, String> {
    if raw.is_empty() || raw.len() > MAX_ORIGINS {
        return Err(format!("origins must list 1-{MAX_ORIGINS} origins"));
    }
    let mut out = Vec::with_capacity(raw.len());
    for o in raw {
        let o = origin_pattern(o)?;
        if !out.contains(&o) {
            out.push(o);
        }
    }
    Ok(out)
}

/// True when the `Origin` of a request matches one of a site's patterns.
/// A pattern without a port matches only the scheme's default port (an
/// origin without a port); `:*` matches any port.
pub fn origin_allowed(patterns: &[String], origin: &str) -> bool {
    let Some(o) = split(origin) else {
        return false;
    };
    if !valid_host(o.host, false) || o.port.is_some_and(|p| !valid_port(p, false)) {
        return false;
    }
    patterns.iter().any(|pat| {
        let Some(p) = split(pat) else { return false };
        if p.scheme != o.scheme {
            return false;
        }
        let host_ok = match p.host.strip_prefix("*.") {
            Some(parent) => o
                .host
                .strip_suffix(parent)
                .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
            None => p.host == o.host,
        };
        let port_ok = match (p.port, o.port) {
            (Some("*"), _) => true,
            (a, b) => a == b,
        };
        host_ok && port_ok
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nicks() {
        assert_eq!(nick("  Ann "), Ok("Ann".into()));
        assert!(nick("Zoë 🚀").is_ok());
        assert!(nick(&"é".repeat(32)).is_ok());
        assert!(nick(&"é".repeat(33)).is_err());
        for bad in [
            "",
            "   ",
            "a\u{0}b",
            "a\nb",
            "a\u{7f}",
            "x\u{202E}y",
            "x\u{202A}",
            "\u{2066}x",
            "x\u{2069}",
            "x\u{200E}",
            "x\u{200F}",
            "x\u{061C}",
            "x\u{2028}y",
        ] {
            assert!(nick(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn texts_and_ids() {
        assert!(text("hello\nworld", 2000).is_ok());
        assert!(text("", 2000).is_err());
        assert!(text(" \n", 2000).is_err());
        assert!(text(&"a".repeat(2000), 2000).is_ok());
        assert!(text(&"a".repeat(2001), 2000).is_err());
        assert!(text("a\u{0}", 2000).is_err());
        assert!(client_id("abc-DEF_123").is_ok());
        assert!(client_id(&"a".repeat(64)).is_ok());
        for bad in ["", "a b", "é", &"a".repeat(65), "a/b"] {
            assert!(client_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn origin_patterns_are_checked() {
        assert_eq!(
            origin_pattern("HTTPS://Example.com/"),
            Ok("https://example.com".into())
        );
        for ok in [
            "http://localhost:*",
            "http://127.0.0.1:8080",
            "https://*.example.com",
            "http://[::1]:*",
        ] {
            assert!(origin_pattern(ok).is_ok(), "{ok}");
        }
        for bad in [
            "example.com",
            "ftp://x.com",
            "https://",
            "https://a b.com",
            "https://x.com/path",
            "https://x.com:0",
            "https://x.com:99999",
            "https://x.com;script-src *",
            "https://x.com, https://y.com",
            "https://*",
            "https://a..b",
        ] {
            assert!(origin_pattern(bad).is_err(), "{bad}");
        }
        assert!(origin_patterns(&[]).is_err());
    }

    #[test]
    fn origin_matching() {
        let pats: Vec<String> = vec![
            "http://localhost:*".into(),
            "http://127.0.0.1:*".into(),
            "https://example.com".into(),
            "https://*.blog.org".into(),
            "https://app.io:8443".into(),
        ];
        for ok in [
            "http://localhost",
            "http://localhost:5173",
            "http://127.0.0.1:8080",
            "https://example.com",
            "https://a.blog.org",
            "https://x.y.blog.org",
            "https://app.io:8443",
        ] {
            assert!(origin_allowed(&pats, ok), "{ok}");
        }
        for bad in [
            "https://localhost:5173",
            "http://localhost.evil.com",
            "http://evil-localhost:1",
            "https://example.com:444",
            "http://example.com",
            "https://blog.org",
            "https://evilblog.org",
            "https://app.io",
            "null",
            "",
            "http://localhost:abc",
        ] {
            assert!(!origin_allowed(&pats, bad), "{bad}");
        }
    }
}
