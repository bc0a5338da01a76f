//! Fuzz target: `If-None-Match` matching and ETag parsing on arbitrary header bytes.
//!
//! Input: the raw bytes of one or more `If-None-Match` field lines (split on
//! `\n`). Checked, for a few current ETags (fixed ones and any the input
//! names):
//! - matching never panics, and it only says "match" when a line holds `*`
//!   or the current ETag's opaque-tag;
//! - a well-formed list built from the input that contains the current ETag
//!   (strong or weak) always matches;
//! - `parse_etag` of a formatted ETag gives back what was formatted, and
//!   whatever `parse_etag` accepts formats back to an ETag it accepts the same.

#![no_main]

use chatty_shared::{if_none_match, members_etag, parse_etag, RoomVersion, Tag};
use libfuzzer_sys::fuzz_target;

fn format_tag(tag: Tag) -> String {
    match tag {
        Tag::Room(v) => v.etag().as_str().to_owned(),
        Tag::Members(m) => members_etag(m).as_str().to_owned(),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// The quoted strings of `data`, in order (at most `max`).
fn quoted(data: &[u8], max: usize) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while out.len() < max {
        let Some(open) = rest.iter().position(|b| *b == b'"') else { break };
        let after = &rest[open + 1..];
        let Some(close) = after.iter().position(|b| *b == b'"') else { break };
        out.push(&rest[open..open + close + 2]);
        rest = &after[close + 1..];
    }
    out
}

/// A well-formed entity-tag list made of the input's comma-separated pieces,
/// with `current` inserted at a position the input chooses.
fn list_with(data: &[u8], current: &[u8]) -> Vec<u8> {
    let pieces: Vec<&[u8]> = data.split(|b| *b == b',').take(16).collect();
    let at = data.len() % (pieces.len() + 1);
    let mut tags: Vec<Vec<u8>> = pieces
        .iter()
        .map(|p| {
            let mut t = Vec::new();
            if p.first() == Some(&b'W') {
                t.extend_from_slice(b"W/");
            }
            t.push(b'"');
            t.extend(p.iter().copied().filter(|b| *b != b'"' && *b != b'\n'));
            t.push(b'"');
            t
        })
        .collect();
    tags.insert(at, current.to_vec());
    let sep: &[u8] = match data.len() % 4 {
        0 => b",",
        1 => b", ",
        2 => b" \t,  ",
        _ => b"\t,",
    };
    let mut out = Vec::new();
    if data.len() % 3 == 0 {
        out.extend_from_slice(b"  ");
    }
    for (i, t) in tags.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(sep);
        }
        out.extend_from_slice(t);
    }
    if data.len() % 5 == 0 {
        out.extend_from_slice(b" \t");
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let lines: Vec<&[u8]> = data.split(|b| *b == b'\n').take(8).collect();

    // Numbers from the input exercise formatting at every width.
    let mut currents: Vec<String> = vec!["\"r1.5\"".into(), "\"m7\"".into(), "W/\"r0.0\"".into()];
    if data.len() >= 12 {
        let epoch = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
        let seq = u64::from_le_bytes([
            data[4], data[5], data[6], data[7], data[8], data[9], data[10], data[11],
        ]);
        let v = RoomVersion::new(epoch, seq);
        let etag = v.etag();
        assert_eq!(parse_etag(etag.as_str()), Some(Tag::Room(v)), "{etag:?}");
        let m = members_etag(seq);
        assert_eq!(parse_etag(m.as_str()), Some(Tag::Members(seq)), "{m:?}");
        currents.push(etag.as_str().to_owned());
    }

    // Whatever parses formats back to something that parses the same.
    for q in quoted(data, 4) {
        let Ok(s) = std::str::from_utf8(q) else { continue };
        if let Some(tag) = parse_etag(s) {
            let formatted = format_tag(tag);
            assert_eq!(parse_etag(&formatted), Some(tag), "{s:?} -> {formatted:?}");
            currents.push(formatted);
        }
    }
    if let Ok(s) = std::str::from_utf8(data) {
        if let Some(tag) = parse_etag(s) {
            assert_eq!(parse_etag(&format_tag(tag)), Some(tag), "{s:?}");
        }
    }

    for current in &currents {
        let cur = current.as_bytes();
        let opaque = cur.strip_prefix(b"W/").unwrap_or(cur);

        // Sound: a match needs `*` or the current opaque-tag in some line.
        if if_none_match(lines.iter().copied(), cur) {
            assert!(
                lines.iter().any(|l| l.contains(&b'*') || contains(l, opaque)),
                "matched {current:?} without it: {:?}",
                String::from_utf8_lossy(data)
            );
        }

        // Complete: a well-formed list holding the current ETag matches,
        // strong or weak, on its own line or after other lines.
        for tag in [opaque.to_vec(), [b"W/".as_slice(), opaque].concat()] {
            let list = list_with(data, &tag);
            assert!(
                if_none_match([list.as_slice()], cur),
                "no match for {current:?} in {:?}",
                String::from_utf8_lossy(&list)
            );
            assert!(if_none_match([b"\"x\"".as_slice(), list.as_slice()], cur));
        }
    }
});
