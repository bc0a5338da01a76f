//! Config helpers shared by every binary: durations (`5s`, `500ms`, `2m`),
//! rates (`5/10s` or `off`) and the exit code for bad configuration.

use std::time::Duration;

/// Exit status for bad configuration (EX_USAGE), before any port is bound.
pub const EXIT_BAD_CONFIG: i32 = 64;

/// Parses `250ms`, `5s`, `2m` or `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{s:?}: missing unit (ms, s, m or h)"))?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a number followed by ms, s, m or h"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m or h)")),
    };
    Ok(d)
}

/// A rate limit: at most `count` events per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

/// Parses `N/D` (e.g. `5/10s`) or `off` (no limit, `None`).
pub fn parse_rate(s: &str) -> Result<Option<Rate>, String> {
    if s.trim() == "off" {
        return Ok(None);
    }
    let (count, per) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?}: expected N/DURATION (e.g. 5/10s) or off"))?;
    let count: u32 = count
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: {count:?} is not a count"))?;
    let per = parse_duration(per)?;
    if count == 0 || per.is_zero() {
        return Err(format!(
            "{s:?}: count and window must be positive (or use off)"
        ));
    }
    Ok(Some(Rate { count, per }))
}

/// A rate limit flag's value: `N/DURATION`, or `off` (`None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSetting(pub Option<Rate>);

/// Parses a rate limit flag (a clap `value_parser`).
pub fn parse_rate_setting(s: &str) -> Result<RateSetting, String> {
    parse_rate(s).map(RateSetting)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("5d").is_err());
        assert!(parse_duration("-5s").is_err());
    }

    #[test]
    fn rates() {
        assert_eq!(
            parse_rate("5/10s"),
            Ok(Some(Rate {
                count: 5,
                per: Duration::from_secs(10)
            }))
        );
        assert_eq!(parse_rate("off"), Ok(None));
        assert!(parse_rate("0/1s").is_err());
        assert!(parse_rate("5").is_err());
        assert!(parse_rate("x/1s").is_err());
        assert!(parse_rate("5/0s").is_err());
    }
}
