//! A site's own rules for what is said in its rooms: blocked words and
//! patterns (masked or refused, as the site chooses), links for guests,
//! and slow mode. [`Rules::compile`] checks a site's [`SiteRules`] and
//! builds its matchers once; [`Rules::apply`] is what every send asks.
//!
//! What a match is:
//! - a blocked *word* (or phrase) matches case-insensitively (Unicode simple
//!   case folding), on word boundaries wherever it begins or ends with a
//!   word character (Unicode `\w`), with any run of white space between
//!   the words of a phrase;
//! - a blocked *pattern* is a regular expression of the `regex` crate
//!   (linear-time matching, no look-around or back-references), matched
//!   case-insensitively unless it says `(?-i)`; empty matches are ignored
//!   and a pattern that matches empty text is refused;
//! - a *link* is what [`links::find`] finds.
//!
//! Every list and every compiled matcher is bounded, so no site can make a
//! send slow or a node's memory grow.

use std::time::Duration;

use chatty_shared::wire::{BlockAction, LinkPolicy, SiteRules};
use regex::{Regex, RegexBuilder};

pub(crate) mod links;
#[cfg(test)]
mod tests;

/// Most blocked words, and most blocked patterns, a site may have.
pub const MAX_ENTRIES: usize = 500;
/// Longest blocked word or pattern, in characters.
pub const MAX_ENTRY_CHARS: usize = 100;
/// Longest slow mode: a day.
pub const MAX_SLOW_MODE_SECS: u32 = 86_400;
/// Compiled size allowed for one pattern.
const PATTERN_SIZE_LIMIT: usize = 256 * 1024;
/// Compiled size allowed for all words, and for all patterns, together.
const ALL_SIZE_LIMIT: usize = 8 * 1024 * 1024;

/// Why a site's rules were refused (answered `400 invalid_field`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RulesError {
    #[error("{field} holds {count} entries; at most {MAX_ENTRIES} are allowed")]
    TooMany { field: &'static str, count: usize },
    #[error("{field} entry {index} is empty")]
    Empty { field: &'static str, index: usize },
    #[error("{field} entry {index} is longer than {MAX_ENTRY_CHARS} characters")]
    TooLong { field: &'static str, index: usize },
    #[error("{field} entry {index} holds a control character")]
    Control { field: &'static str, index: usize },
    #[error("blocked_patterns entry {index} is not a valid pattern: {reason}")]
    BadPattern { index: usize, reason: String },
    #[error("blocked_patterns entry {index} matches empty text")]
    MatchesEmpty { index: usize },
    #[error("{field} are too large to compile together; use fewer or simpler entries")]
    TooLarge { field: &'static str },
    #[error("slow_mode_secs must be at most {MAX_SLOW_MODE_SECS}")]
    SlowModeTooLong,
}

/// Why a message was refused by the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A blocked word or pattern, and the site refuses rather than masks.
    BlockedText,
    /// A link from a sender who may not send one.
    Link,
}

/// Who sends, as far as the rules care: a guest unless its signed guest
/// token says otherwise (never the request).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sender {
    /// A user the site itself signed in.
    pub verified: bool,
    /// A moderator of the site.
    pub moderator: bool,
}

impl Sender {
    /// Links are denied to guests only.
    pub fn may_send_links(self) -> bool {
        self.verified || self.moderator
    }

    /// Moderators are not slowed down.
    pub fn is_slowed(self) -> bool {
        !self.moderator
    }
}

/// What the rules make of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    /// Stored as sent.
    Clean,
    /// Stored as this text, the matches masked.
    Masked(String),
}

/// A site's rules, compiled.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    source: SiteRules,
    words: Option<Regex>,
    patterns: Option<Regex>,
}

impl Rules {
    /// Checks and compiles `rules`, with its words trimmed (what is stored
    /// and shown is [`source`](Self::source)).
    pub fn compile(rules: SiteRules) -> Result<Rules, RulesError> {
        let mut rules = rules;
        for w in &mut rules.blocked_words {
            *w = w.trim().to_owned();
        }
        check_list("blocked_words", &rules.blocked_words)?;
        check_list("blocked_patterns", &rules.blocked_patterns)?;
        if rules.slow_mode_secs > MAX_SLOW_MODE_SECS {
            return Err(RulesError::SlowModeTooLong);
        }
        let words = words_regex(&rules.blocked_words)?;
        let patterns = patterns_regex(&rules.blocked_patterns)?;
        Ok(Rules {
            source: rules,
            words,
            patterns,
        })
    }

    /// The rules as the site set them (words trimmed).
    pub fn source(&self) -> &SiteRules {
        &self.source
    }

    /// Applies the rules to a message's text: links first (refused for a
    /// sender who may not send them, when the site denies them), then the
    /// blocked words and patterns (masked or refused).
    pub fn apply(&self, text: &str, sender: Sender) -> Result<Checked, Refusal> {
        if self.source.links == LinkPolicy::Deny
            && !sender.may_send_links()
            && links::find(text).is_some()
        {
            return Err(Refusal::Link);
        }
        let spans = self.matches(text);
        if spans.is_empty() {
            return Ok(Checked::Clean);
        }
        match self.source.action {
            BlockAction::Refuse => Err(Refusal::BlockedText),
            BlockAction::Mask => Ok(Checked::Masked(mask(text, &spans))),
        }
    }

    /// The byte ranges matched by any word or pattern, sorted and merged;
    /// empty matches left out.
    fn matches(&self, text: &str) -> Vec<(usize, usize)> {
        let mut spans: Vec<(usize, usize)> = [&self.words, &self.patterns]
            .into_iter()
            .flatten()
            .flat_map(|re| re.find_iter(text))
            .filter(|m| !m.is_empty())
            .map(|m| (m.start(), m.end()))
            .collect();
        spans.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(spans.len());
        for (start, end) in spans {
            match merged.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        merged
    }
}

/// `secs` as a slow mode: `None` for 0 (off).
pub fn slow_mode(secs: u32) -> Option<Duration> {
    (secs > 0).then(|| Duration::from_secs(u64::from(secs)))
}

/// Checks a room's own slow mode.
pub fn check_slow_mode(secs: u32) -> Result<(), RulesError> {
    if secs > MAX_SLOW_MODE_SECS {
        return Err(RulesError::SlowModeTooLong);
    }
    Ok(())
}

fn check_list(field: &'static str, list: &[String]) -> Result<(), RulesError> {
    if list.len() > MAX_ENTRIES {
        return Err(RulesError::TooMany {
            field,
            count: list.len(),
        });
    }
    for (index, entry) in list.iter().enumerate() {
        if entry.is_empty() {
            return Err(RulesError::Empty { field, index });
        }
        if entry.chars().count() > MAX_ENTRY_CHARS {
            return Err(RulesError::TooLong { field, index });
        }
        if entry.chars().any(char::is_control) {
            return Err(RulesError::Control { field, index });
        }
    }
    Ok(())
}

/// Whether `c` is a word character (Unicode `\w`) as `\b` sees it, asked
/// of the regex engine itself so that the boundaries put around a word
/// agree with the ones it matches.
fn is_word_char(c: char) -> bool {
    use std::sync::LazyLock;
    static WORD: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^\w$").expect("a valid regex"));
    let mut buf = [0u8; 4];
    WORD.is_match(c.encode_utf8(&mut buf))
}

/// One regex for every word: `(?i)` alternation of the escaped words, each
/// with `\b` where it starts or ends with a word character, white space
/// inside a phrase matching any run of white space.
fn words_regex(words: &[String]) -> Result<Option<Regex>, RulesError> {
    if words.is_empty() {
        return Ok(None);
    }
    let alternatives: Vec<String> = words
        .iter()
        .map(|w| {
            let body: Vec<String> = w.split_whitespace().map(regex::escape).collect();
            let body = body.join(r"\s+");
            let first = w.chars().next().is_some_and(is_word_char);
            let last = w.chars().next_back().is_some_and(is_word_char);
            format!(
                "{}{body}{}",
                if first { r"\b" } else { "" },
                if last { r"\b" } else { "" }
            )
        })
        .collect();
    let source = format!("(?:{})", alternatives.join("|"));
    build(&source, ALL_SIZE_LIMIT)
        .map(Some)
        .map_err(|_| RulesError::TooLarge {
            field: "blocked_words",
        })
}

/// Each pattern compiled alone (to name the one refused), then all of them
/// as one alternation.
fn patterns_regex(patterns: &[String]) -> Result<Option<Regex>, RulesError> {
    if patterns.is_empty() {
        return Ok(None);
    }
    for (index, p) in patterns.iter().enumerate() {
        let re = build(p, PATTERN_SIZE_LIMIT).map_err(|e| RulesError::BadPattern {
            index,
            reason: pattern_error(&e),
        })?;
        if re.is_match("") {
            return Err(RulesError::MatchesEmpty { index });
        }
    }
    let source = patterns
        .iter()
        .map(|p| format!("(?:{p})"))
        .collect::<Vec<_>>()
        .join("|");
    build(&source, ALL_SIZE_LIMIT)
        .map(Some)
        .map_err(|_| RulesError::TooLarge {
            field: "blocked_patterns",
        })
}

/// What is wrong with a pattern, in one line.
fn pattern_error(e: &regex::Error) -> String {
    match e {
        regex::Error::CompiledTooBig(_) => "too large once compiled".into(),
        e => e
            .to_string()
            .lines()
            .last()
            .unwrap_or("syntax error")
            .trim()
            .to_owned(),
    }
}

fn build(source: &str, size_limit: usize) -> Result<Regex, regex::Error> {
    RegexBuilder::new(source)
        .case_insensitive(true)
        .size_limit(size_limit)
        .dfa_size_limit(size_limit)
        .nest_limit(50)
        .build()
}

/// `text` with each span (sorted, disjoint byte ranges on char boundaries)
/// replaced by as many `*` as it has characters.
fn mask(text: &str, spans: &[(usize, usize)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for &(start, end) in spans {
        out.push_str(&text[at..start]);
        out.extend(std::iter::repeat_n('*', text[start..end].chars().count()));
        at = end;
    }
    out.push_str(&text[at..]);
    out
}
