//! `chatty site audit`: what a site's moderators (and its secret) did.

use chatty_shared::wire::AuditEntry;
use clap::Args;

use super::{answer, Admin};

/// Flags of `chatty site audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// The site id.
    pub site: String,
    /// The site's admin secret.
    #[arg(long, env = "CHATTY_SITE_SECRET", hide_env_values = true)]
    pub secret: String,
    /// Most lines shown (1 to 1000).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub limit: u16,
}

pub(super) async fn get_audit(admin: &Admin, flags: &AuditArgs) -> anyhow::Result<Vec<AuditEntry>> {
    match admin {
        Admin::Embedded(chat, _) => chat
            .audit(&flags.site, usize::from(flags.limit), Some(&flags.secret))
            .await
            .map_err(|e| anyhow::anyhow!("{e}")),
        Admin::Remote(http, base, _) => {
            let url = format!("{base}/v1/sites/{}/audit?limit={}", flags.site, flags.limit);
            answer(http.get(url).bearer_auth(&flags.secret)).await
        }
    }
}

/// One audit line as text: when (UTC), where, who, what, on whom.
pub(super) fn audit_line(line: &AuditEntry) -> String {
    let who = if line.moderator_id.is_empty() {
        "(site secret)".to_owned()
    } else {
        format!("{} ({})", line.moderator_nick, line.moderator_id)
    };
    let mut what = line.action.name().to_owned();
    if let Some(secs) = line.secs {
        what.push_str(&format!(" {secs}s"));
    }
    if let Some(member) = &line.member_id {
        what.push_str(&format!(" {member}"));
    }
    let seq = line.seq.map(|s| format!("  seq {s}")).unwrap_or_default();
    format!(
        "{}  {}  {who}  {what}{seq}",
        chat_api::utc_time(line.at_ms),
        line.room
    )
}
