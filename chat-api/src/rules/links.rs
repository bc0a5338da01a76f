//! What counts as a link in a message, for sites that deny links to guests.
//!
//! A link is any of:
//! - a scheme and `://` (`https://…`, `ftp://…`, any scheme), or `www.`
//!   followed by anything;
//! - a bare domain: dot-separated ASCII labels ending in one of
//!   [`TLDS`], as a whole word (`example.com`, `Shop.Example.CO.uk/path`,
//!   the domain of `name@example.org`), with or without a port and path.
//!
//! Not links: a bare IP address, a domain under an ending not in the list
//! (`notes.txt`, `main.rs`), a name with a non-ASCII label, and addresses
//! written to dodge detection (`example dot com`, `example . com`). The list
//! leans to the endings spam uses, so that ordinary words with a dot in
//! them (`e.g.`, `v1.2`, `3.14`) stay words.

use std::sync::LazyLock;

use regex::Regex;

/// The endings a bare domain must have to count as a link.
pub const TLDS: &[&str] = &[
    "com", "net", "org", "info", "biz", "edu", "gov", "io", "co", "me", "tv", "app", "dev", "xyz",
    "online", "site", "shop", "store", "club", "top", "live", "link", "click", "ly", "gg", "to",
    "cc", "ru", "cn", "de", "uk", "fr", "nl", "eu", "us", "ca", "au", "in", "br", "jp", "es", "it",
    "pl", "ch", "se", "tk", "ml", "ga", "cf", "gq", "pw", "ws", "su", "ua", "kr", "tw", "vn",
];

static LINK: LazyLock<Regex> = LazyLock::new(|| {
    let tlds = TLDS.join("|");
    let source = format!(
        r"(?i)\b[a-z][a-z0-9+.\-]*://\S|\bwww\.\S|\b(?:[a-z0-9](?:[a-z0-9\-]{{0,61}}[a-z0-9])?\.)+(?:{tlds})\b"
    );
    Regex::new(&source).expect("a valid regex")
});

/// The first link in `text`, if any.
pub fn find(text: &str) -> Option<&str> {
    LINK.find(text).map(|m| m.as_str())
}
