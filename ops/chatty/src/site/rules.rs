//! `chatty site rules`: a site's rules shown, or edited flag by flag and
//! put back whole, with the site's secret.

use chatty_shared::wire::{BlockAction, GuestAccess, LinkPolicy, SiteRules};
use clap::{Args, ValueEnum};

use super::{answer, Admin};

/// Flags of `chatty site rules`. Without a change flag, the rules are shown.
#[derive(Debug, Args)]
pub struct RulesArgs {
    /// The site id.
    pub site: String,
    /// The site's admin secret.
    #[arg(long, env = "CHATTY_SITE_SECRET", hide_env_values = true)]
    pub secret: String,
    /// Block a word or phrase, matched whole and in any case (repeatable).
    #[arg(long = "block", value_name = "WORD")]
    pub block: Vec<String>,
    /// Stop blocking a word or phrase (repeatable).
    #[arg(long = "unblock", value_name = "WORD")]
    pub unblock: Vec<String>,
    /// Block a regular expression, any case unless it says (?-i) (repeatable).
    #[arg(long = "block-pattern", value_name = "RE")]
    pub block_pattern: Vec<String>,
    /// Stop blocking a regular expression (repeatable).
    #[arg(long = "unblock-pattern", value_name = "RE")]
    pub unblock_pattern: Vec<String>,
    /// What to do with a blocked word or pattern.
    #[arg(long, value_enum)]
    pub action: Option<ActionArg>,
    /// Whether guests may send links.
    #[arg(long, value_enum)]
    pub links: Option<LinksArg>,
    /// One message per member per SECS in every room of the site; 0 is off.
    #[arg(long = "slow-mode", value_name = "SECS")]
    pub slow_mode: Option<u32>,
    /// Whether guests (visitors you have not signed in) may write, or only
    /// read.
    #[arg(long, value_enum)]
    pub guests: Option<GuestsArg>,
}

/// `--guests`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GuestsArg {
    Write,
    Read,
}

/// `--action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ActionArg {
    /// Store the message with each match replaced by `*`.
    Mask,
    /// Refuse the message.
    Refuse,
}

/// `--links`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LinksArg {
    Allow,
    Deny,
}

impl RulesArgs {
    /// Whether any flag changes the rules.
    pub fn changes(&self) -> bool {
        !(self.block.is_empty()
            && self.unblock.is_empty()
            && self.block_pattern.is_empty()
            && self.unblock_pattern.is_empty()
            && self.action.is_none()
            && self.links.is_none()
            && self.slow_mode.is_none()
            && self.guests.is_none())
    }

    /// The rules `current` with these flags applied: words and patterns
    /// added (once) and removed, the rest replaced when given.
    pub fn apply(&self, current: SiteRules) -> SiteRules {
        let mut rules = current;
        edit(&mut rules.blocked_words, &self.block, &self.unblock);
        edit(
            &mut rules.blocked_patterns,
            &self.block_pattern,
            &self.unblock_pattern,
        );
        if let Some(action) = self.action {
            rules.action = match action {
                ActionArg::Mask => BlockAction::Mask,
                ActionArg::Refuse => BlockAction::Refuse,
            };
        }
        if let Some(links) = self.links {
            rules.links = match links {
                LinksArg::Allow => LinkPolicy::Allow,
                LinksArg::Deny => LinkPolicy::Deny,
            };
        }
        if let Some(secs) = self.slow_mode {
            rules.slow_mode_secs = secs;
        }
        if let Some(guests) = self.guests {
            rules.guests = match guests {
                GuestsArg::Write => GuestAccess::Write,
                GuestsArg::Read => GuestAccess::Read,
            };
        }
        rules
    }
}

/// `list` with `add` appended (those not in it yet) and `remove` taken out.
fn edit(list: &mut Vec<String>, add: &[String], remove: &[String]) {
    for a in add {
        if !list.contains(a) {
            list.push(a.clone());
        }
    }
    list.retain(|x| !remove.contains(x));
}

pub(super) async fn get_rules(admin: &Admin, flags: &RulesArgs) -> anyhow::Result<SiteRules> {
    match admin {
        Admin::Embedded(chat, _) => chat
            .rules(&flags.site, Some(&flags.secret))
            .await
            .map_err(|e| anyhow::anyhow!("{e}")),
        Admin::Remote(http, base, _) => {
            let url = format!("{base}/v1/sites/{}/rules", flags.site);
            answer(http.get(url).bearer_auth(&flags.secret)).await
        }
    }
}

pub(super) async fn set_rules(
    admin: &Admin,
    flags: &RulesArgs,
    rules: SiteRules,
) -> anyhow::Result<SiteRules> {
    match admin {
        Admin::Embedded(chat, _) => chat
            .set_rules(&flags.site, rules, Some(&flags.secret))
            .await
            .map_err(|e| anyhow::anyhow!("{e}")),
        Admin::Remote(http, base, _) => {
            let url = format!("{base}/v1/sites/{}/rules", flags.site);
            answer(http.put(url).bearer_auth(&flags.secret).json(&rules)).await
        }
    }
}

pub(super) fn print_rules(rules: &SiteRules, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(rules)?);
        return Ok(());
    }
    let action = match rules.action {
        BlockAction::Mask => "mask",
        BlockAction::Refuse => "refuse",
    };
    let links = match rules.links {
        LinkPolicy::Allow => "allow",
        LinkPolicy::Deny => "deny",
    };
    println!("blocked words:    {}", rules.blocked_words.join(", "));
    println!("blocked patterns: {}", rules.blocked_patterns.join("  "));
    println!("action:           {action}");
    println!("links:            {links}");
    match rules.slow_mode_secs {
        0 => println!("slow mode:        off"),
        secs => println!("slow mode:        {secs} s"),
    }
    match rules.guests {
        GuestAccess::Write => println!("guests:           write"),
        GuestAccess::Read => println!("guests:           read only"),
    }
    Ok(())
}
