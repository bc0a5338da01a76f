//! Unsigned decimal numbers as they appear in paths, queries, ETags and bus
//! lines: ASCII digits only, no sign, no spaces, no other notation.

use std::str::FromStr;

/// `s` as a number of type `T` when it is one or more ASCII digits whose
/// value fits `T`; `None` for anything else (`+1`, `-1`, ` 1`, `1.0`, ``).
/// `str::parse` alone would accept a leading `+`.
pub fn parse_decimal<T: FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::parse_decimal;

    #[test]
    fn digits_only_and_within_range() {
        assert_eq!(parse_decimal::<u64>("0"), Some(0));
        assert_eq!(parse_decimal::<u64>("007"), Some(7));
        assert_eq!(parse_decimal::<u64>("18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_decimal::<u32>("4294967296"), None);
        for bad in [
            "",
            "-1",
            "+1",
            "1.0",
            "18446744073709551616",
            "x",
            " 1",
            "1 ",
            "１",
        ] {
            assert_eq!(parse_decimal::<u64>(bad), None, "{bad:?}");
        }
    }
}
