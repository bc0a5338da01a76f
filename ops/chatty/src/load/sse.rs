//! A Server-Sent Events parser (the WHATWG "event stream interpretation"):
//! bytes in, in whatever pieces the connection hands over, items out —
//! events (`id`, `event`, `data`), `retry` hints and comments. No I/O, so
//! it is tested on its own, chunk boundaries anywhere.

use std::time::Duration;

/// One thing the stream said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseItem {
    /// An event: dispatched at a blank line when it had data.
    Event(SseEvent),
    /// `retry: <ms>`: how long to wait before reconnecting.
    Retry(Duration),
    /// `: text` (the edge's keepalives).
    Comment,
}

/// A dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, or empty for a default (unnamed) event.
    pub event: String,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
    /// The last event ID in force when the event was dispatched (an `id:`
    /// carries over to later events until another one), if any.
    pub id: Option<String>,
}

impl SseEvent {
    /// True for an unnamed event (or one named `message`, the same thing).
    pub fn is_default(&self) -> bool {
        self.event.is_empty() || self.event == "message"
    }
}

/// Most bytes of one line kept: a longer line is a broken or hostile stream.
pub const MAX_LINE: usize = 1 << 20;

/// Why the parser gave up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("an event-stream line longer than {MAX_LINE} bytes")]
    LineTooLong,
}

/// The parser's state between pieces.
#[derive(Debug, Default)]
pub struct SseParser {
    /// The current line, not yet ended.
    line: Vec<u8>,
    /// The last piece ended in CR: an LF starting the next one belongs to it.
    after_cr: bool,
    /// The stream's first line has ended (it may start with a BOM).
    started: bool,
    event: String,
    data: String,
    /// Whether a `data` field was seen since the last dispatch.
    has_data: bool,
    last_id: Option<String>,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one piece of the body; calls `out` for each complete item.
    pub fn feed(
        &mut self,
        mut bytes: &[u8],
        out: &mut impl FnMut(SseItem),
    ) -> Result<(), SseError> {
        if self.after_cr {
            self.after_cr = false;
            if let Some(rest) = bytes.strip_prefix(b"\n") {
                bytes = rest;
            }
        }
        while let Some(end) = bytes.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.push(&bytes[..end])?;
            let cr = bytes[end] == b'\r';
            bytes = &bytes[end + 1..];
            if cr {
                match bytes.first() {
                    Some(b'\n') => bytes = &bytes[1..],
                    None => self.after_cr = true,
                    Some(_) => {}
                }
            }
            let line = std::mem::take(&mut self.line);
            self.line_ended(&line, out);
            self.line = line;
            self.line.clear();
        }
        self.push(bytes)
    }

    fn push(&mut self, bytes: &[u8]) -> Result<(), SseError> {
        if self.line.len() + bytes.len() > MAX_LINE {
            return Err(SseError::LineTooLong);
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn line_ended(&mut self, mut line: &[u8], out: &mut impl FnMut(SseItem)) {
        if !self.started {
            // A UTF-8 BOM at the very start of the stream is ignored.
            self.started = true;
            line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        }
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line[0] == b':' {
            out(SseItem::Comment);
            return;
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &line[..0]),
        };
        let value = String::from_utf8_lossy(value);
        match name {
            b"event" => {
                self.event.clear();
                self.event.push_str(&value);
            }
            b"data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(&value);
                self.has_data = true;
            }
            b"id" if !value.contains('\0') => self.last_id = Some(value.into_owned()),
            b"retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                if let Ok(ms) = value.parse::<u64>() {
                    out(SseItem::Retry(Duration::from_millis(ms)));
                }
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut impl FnMut(SseItem)) {
        let event = std::mem::take(&mut self.event);
        if !std::mem::take(&mut self.has_data) {
            return;
        }
        out(SseItem::Event(SseEvent {
            event,
            data: std::mem::take(&mut self.data),
            id: self.last_id.clone(),
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(event: &str, data: &str, id: Option<&str>) -> SseItem {
        SseItem::Event(SseEvent {
            event: event.into(),
            data: data.into(),
            id: id.map(Into::into),
        })
    }

    fn parse_pieces(pieces: &[&[u8]]) -> Vec<SseItem> {
        let mut p = SseParser::new();
        let mut items = Vec::new();
        for piece in pieces {
            p.feed(piece, &mut |i| items.push(i)).unwrap();
        }
        items
    }

    /// The whole input at once, then cut at every byte offset into two
    /// pieces, then one byte at a time: always the same items.
    fn check(input: &str, expect: &[SseItem]) {
        let b = input.as_bytes();
        assert_eq!(parse_pieces(&[b]), expect, "whole: {input:?}");
        for cut in 0..=b.len() {
            let (x, y) = b.split_at(cut);
            assert_eq!(parse_pieces(&[x, y]), expect, "cut at {cut}: {input:?}");
        }
        let bytes: Vec<&[u8]> = b.chunks(1).collect();
        assert_eq!(parse_pieces(&bytes), expect, "bytewise: {input:?}");
    }

    #[test]
    fn the_edge_stream() {
        let body = "retry: 2000\n\
                    event: members\ndata: {\"members\":[]}\n\n\
                    id: 7\ndata: {\"seq\":7}\n\n\
                    : keepalive\n\n\
                    id: 8\ndata: {\"seq\":8}\n\n";
        check(
            body,
            &[
                SseItem::Retry(Duration::from_millis(2000)),
                ev("members", "{\"members\":[]}", None),
                ev("", "{\"seq\":7}", Some("7")),
                SseItem::Comment,
                ev("", "{\"seq\":8}", Some("8")),
            ],
        );
    }

    #[test]
    fn fields_one_case_a_line() {
        let e = |data, id| vec![ev("", data, id)];
        check("data: a\ndata: b\n\n", &e("a\nb", None));
        check("data:a\n\n", &e("a", None));
        check("data:  two spaces\n\n", &e(" two spaces", None));
        check("data\n\n", &e("", None));
        check("data: x\r\n\r\n", &e("x", None));
        check(
            "data: x\r\rdata: y\r\r",
            &[ev("", "x", None), ev("", "y", None)],
        );
        check(
            "id: 3\ndata: x\n\ndata: y\n\n",
            &[ev("", "x", Some("3")), ev("", "y", Some("3"))],
        );
        check("id: 1\0\ndata: x\n\n", &e("x", None));
        check("event: members\n\n", &[]);
        check("event: a\n\ndata: x\n\n", &e("x", None));
        check("data: unended", &[]);
        check("data: x\nunknown: y\n\n", &e("x", None));
        check("\u{feff}data: bom\n\n", &e("bom", None));
        check(": hi\n", &[SseItem::Comment]);
        check(":\n", &[SseItem::Comment]);
    }

    #[test]
    fn retry_takes_digits_only() {
        let r = |ms| vec![SseItem::Retry(Duration::from_millis(ms))];
        check("retry: 150\n", &r(150));
        check("retry:0\n", &r(0));
        check("retry: 1.5\n", &[]);
        check("retry: -1\n", &[]);
        check("retry:\n", &[]);
        check("retry: 99999999999999999999999\n", &[]);
    }

    #[test]
    fn a_crlf_split_between_pieces_is_one_line_end() {
        let items = parse_pieces(&[b"data: x\r", b"\ndata: y\r", b"\n\r", b"\n"]);
        assert_eq!(items, [ev("", "x\ny", None)]);
    }

    #[test]
    fn a_line_longer_than_the_limit_is_refused() {
        let mut p = SseParser::new();
        let big = vec![b'a'; MAX_LINE];
        p.feed(b"data: ", &mut |_| {}).unwrap();
        assert_eq!(p.feed(&big, &mut |_| {}), Err(SseError::LineTooLong));
    }
}
