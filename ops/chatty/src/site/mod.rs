//! `chatty site add|list|rules|keys|erase|audit`: a site owner's sites, in
//! the embedded store of `chatty up` (--data-dir) or through a running
//! cluster's admin API (--target with the operator token); a site's rules,
//! user-token keys, erasures and moderation audit with its own secret.

use std::path::PathBuf;

use anyhow::Context;
use chatty_shared::wire::{CreateSiteRequest, CreatedSite, EraseRequest, ErasedCount, SiteInfo};
use clap::{Args, Subcommand};

mod audit;
mod keys;
mod rules;

pub use audit::AuditArgs;
use audit::{audit_line, get_audit};
use keys::keys;
pub use keys::{KeyAlgArg, KeysArgs};
use rules::{get_rules, print_rules, set_rules};
pub use rules::{ActionArg, GuestsArg, LinksArg, RulesArgs};

/// Flags of `chatty site`.
#[derive(Debug, Args)]
pub struct SiteArgs {
    #[command(subcommand)]
    pub command: SiteCommand,

    /// The embedded store's directory (when no --target is given).
    #[arg(
        long,
        env = "CHATTY_DATA_DIR",
        default_value = ".chatty",
        global = true
    )]
    pub data_dir: PathBuf,

    /// Base URL of a running cluster's API (or edge), e.g. http://127.0.0.1:8080.
    #[arg(long, env = "CHATTY_TARGET", global = true)]
    pub target: Option<String>,

    /// The cluster's operator token (its --admin-token), for `add` and
    /// `list` with --target.
    #[arg(long, env = "CHATTY_ADMIN_TOKEN", global = true)]
    pub admin_token: Option<String>,

    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum SiteCommand {
    /// Create a site: prints its id, its admin secret (shown only now) and
    /// the snippet to paste into the site's pages.
    Add {
        /// An origin allowed to embed the chat, e.g. https://www.example.org
        /// (repeatable; `http://localhost` allows any port).
        #[arg(long = "origin", required = true)]
        origins: Vec<String>,
        /// The site id (a-z, 0-9, '-'); generated when absent.
        #[arg(long)]
        id: Option<String>,
        /// The chat's public address, written into the snippet.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        public_url: String,
    },
    /// List the sites.
    List,
    /// Show a site's rules, or change them (blocked words and patterns,
    /// masked or refused; links for guests; slow mode), with the site's
    /// secret. In force on every API node at once.
    Rules(RulesArgs),
    /// List, add or remove the keys that verify the user tokens your
    /// backend signs for its signed-in users, with the site's secret. To
    /// rotate: add the new key, sign with it, then remove the old one.
    Keys(KeysArgs),
    /// Erase everything a member wrote on the site, in every room (deleted
    /// in every viewer's log, the text gone from the store), with the
    /// site's secret.
    Erase {
        /// The site id.
        site: String,
        /// The site's admin secret.
        #[arg(long, env = "CHATTY_SITE_SECRET", hide_env_values = true)]
        secret: String,
        /// The member's id: a guest's, or `u_` and your user's id.
        #[arg(long = "member", value_name = "ID")]
        member_id: String,
    },
    /// List what the site's moderators (and its secret) did, newest first.
    Audit(AuditArgs),
}

/// Runs `chatty site …`; answers the exit status.
pub fn main(args: SiteArgs) -> i32 {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("chatty site: {e}");
            return 1;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("chatty site: {e:#}");
            1
        }
    }
}

/// Where the sites live.
enum Admin {
    Embedded(actix_web::web::Data<chat_api::Chat>, String),
    Remote(reqwest::Client, String, String),
}

async fn admin(args: &SiteArgs) -> anyhow::Result<Admin> {
    if let Some(target) = &args.target {
        // `rules` authenticates with the site's secret instead.
        let token = match (&args.admin_token, &args.command) {
            (Some(token), _) => token.clone(),
            (
                None,
                SiteCommand::Rules(_)
                | SiteCommand::Keys(_)
                | SiteCommand::Erase { .. }
                | SiteCommand::Audit(_),
            ) => String::new(),
            (None, _) => {
                anyhow::bail!("--target needs --admin-token (the cluster's operator token)")
            }
        };
        return Ok(Admin::Remote(
            reqwest::Client::new(),
            target.trim_end_matches('/').to_owned(),
            token,
        ));
    }
    // The embedded store, opened beside a possibly running `chatty up`, with
    // a one-off operator token of this process's own.
    let token = chat_api::new_token_key();
    let mut config = chat_api::Config::embedded(&args.data_dir);
    config.admin_token = Some(token.clone());
    config.demo_site = Some(false);
    let app = chat_api::App::build(config)
        .await
        .with_context(|| format!("opening the embedded store in {}", args.data_dir.display()))?;
    Ok(Admin::Embedded(app.chat(), token))
}

async fn run(args: SiteArgs) -> anyhow::Result<()> {
    let admin = admin(&args).await?;
    match &args.command {
        SiteCommand::Add {
            origins,
            id,
            public_url,
        } => {
            let req = CreateSiteRequest {
                id: id.clone(),
                origins: origins.clone(),
            };
            let created = match &admin {
                Admin::Embedded(chat, token) => chat
                    .create_site(req, Some(token))
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
                Admin::Remote(http, base, token) => {
                    let resp = http
                        .post(format!("{base}/v1/admin/sites"))
                        .bearer_auth(token)
                        .json(&req)
                        .send()
                        .await?;
                    let status = resp.status();
                    let body = resp.text().await?;
                    anyhow::ensure!(status.as_u16() == 201, "{status}: {body}");
                    serde_json::from_str::<CreatedSite>(&body)?
                }
            };
            print_created(&created, public_url, args.json);
        }
        SiteCommand::List => {
            let sites: Vec<SiteInfo> = match &admin {
                Admin::Embedded(chat, token) => chat
                    .list_sites(Some(token))
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
                Admin::Remote(http, base, token) => {
                    answer(
                        http.get(format!("{base}/v1/admin/sites"))
                            .bearer_auth(token),
                    )
                    .await?
                }
            };
            if args.json {
                println!("{}", serde_json::to_string_pretty(&sites)?);
            } else {
                for s in sites {
                    println!("{}\t{}", s.id, s.origins.join(" "));
                }
            }
        }
        SiteCommand::Rules(flags) => {
            let mut rules = get_rules(&admin, flags).await?;
            if flags.changes() {
                rules = set_rules(&admin, flags, flags.apply(rules)).await?;
            }
            print_rules(&rules, args.json)?;
        }
        SiteCommand::Keys(flags) => keys(&admin, flags, args.json).await?,
        SiteCommand::Erase {
            site,
            secret,
            member_id,
        } => {
            let erased: ErasedCount = match &admin {
                Admin::Embedded(chat, _) => chat
                    .erase(site, member_id, Some(secret))
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
                Admin::Remote(http, base, _) => {
                    let body = EraseRequest {
                        member_id: member_id.clone(),
                    };
                    let req = http
                        .post(format!("{base}/v1/sites/{site}/erase"))
                        .json(&body);
                    answer(req.bearer_auth(secret)).await?
                }
            };
            if args.json {
                println!("{}", serde_json::to_string_pretty(&erased)?);
            } else {
                println!(
                    "erased {} messages in {} rooms",
                    erased.messages, erased.rooms
                );
            }
        }
        SiteCommand::Audit(flags) => {
            let lines = get_audit(&admin, flags).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&lines)?);
            } else {
                for line in &lines {
                    println!("{}", audit_line(line));
                }
            }
        }
    }
    Ok(())
}

/// Sends `req` and reads a successful answer's JSON; any other status is
/// an error carrying the API's own message.
async fn answer<T: serde::de::DeserializeOwned>(req: reqwest::RequestBuilder) -> anyhow::Result<T> {
    let resp = req.send().await?;
    let status = resp.status();
    let body = resp.text().await?;
    anyhow::ensure!(status.is_success(), "{status}: {body}");
    Ok(serde_json::from_str(&body)?)
}

/// The tag a site owner pastes into their pages.
pub fn snippet(public_url: &str, site: &str) -> String {
    format!(
        "<script src=\"{}/v1/widget.js\" data-site=\"{site}\" data-room=\"lobby\" async></script>",
        public_url.trim_end_matches('/')
    )
}

fn print_created(created: &CreatedSite, public_url: &str, json: bool) {
    let snippet = snippet(public_url, &created.site.id);
    if json {
        let out = serde_json::json!({
            "site": created.site,
            "secret": created.secret,
            "snippet": snippet,
        });
        println!("{out:#}");
        return;
    }
    println!("site:    {}", created.site.id);
    println!("origins: {}", created.site.origins.join(" "));
    println!(
        "secret:  {}   (the site's admin secret: keep it; it is shown only now)",
        created.secret
    );
    println!();
    println!("Paste this into the pages of the site (any room name works for data-room):");
    println!("{snippet}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatty_shared::wire::{AuditEntry, BlockAction, GuestAccess, LinkPolicy, SiteRules};
    use clap::Parser;

    /// `chatty site …` as the command line would give it.
    #[derive(Debug, Parser)]
    struct Site {
        #[command(flatten)]
        args: SiteArgs,
    }

    fn rules_flags(args: &[&str]) -> RulesArgs {
        let argv = ["site", "rules", "acme", "--secret", "s3cret"];
        let parsed = Site::try_parse_from(argv.iter().chain(args)).unwrap();
        match parsed.args.command {
            SiteCommand::Rules(flags) => flags,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rules_flags_edit_the_current_rules() {
        let current = SiteRules {
            blocked_words: vec!["darn".into(), "heck".into()],
            blocked_patterns: vec!["x+".into()],
            ..SiteRules::default()
        };
        let flags = rules_flags(&[]);
        assert!(!flags.changes(), "no flag only shows them");
        assert_eq!(flags.site, "acme");
        assert_eq!(flags.secret, "s3cret");
        assert_eq!(flags.apply(current.clone()), current);

        let flags = rules_flags(&[
            "--block",
            "buy now",
            "--block",
            "darn",
            "--unblock",
            "heck",
            "--block-pattern",
            r"fr[e3]{2}",
            "--unblock-pattern",
            "x+",
            "--action",
            "refuse",
            "--links",
            "deny",
            "--slow-mode",
            "30",
            "--guests",
            "read",
        ]);
        assert!(flags.changes());
        assert_eq!(
            flags.apply(current),
            SiteRules {
                blocked_words: vec!["darn".into(), "buy now".into()],
                blocked_patterns: vec![r"fr[e3]{2}".into()],
                action: BlockAction::Refuse,
                links: LinkPolicy::Deny,
                slow_mode_secs: 30,
                guests: GuestAccess::Read,
            }
        );
        let flags = rules_flags(&["--slow-mode", "0", "--action", "mask"]);
        let rules = flags.apply(SiteRules {
            slow_mode_secs: 9,
            action: BlockAction::Refuse,
            ..SiteRules::default()
        });
        assert_eq!((rules.slow_mode_secs, rules.action), (0, BlockAction::Mask));
    }

    #[test]
    fn bad_rules_flags_are_refused() {
        let argv = |extra: &[&'static str]| {
            let mut v = vec!["site", "rules", "acme", "--secret", "s"];
            v.extend_from_slice(extra);
            Site::try_parse_from(v)
        };
        assert!(argv(&["--action", "delete"]).is_err());
        assert!(argv(&["--links", "maybe"]).is_err());
        assert!(argv(&["--slow-mode", "-1"]).is_err());
        assert!(
            Site::try_parse_from(["site", "rules"]).is_err(),
            "the site is required"
        );
    }

    #[test]
    fn snippet_has_the_site_and_the_widget_address() {
        assert_eq!(
            snippet("https://chat.example.org/", "acme"),
            "<script src=\"https://chat.example.org/v1/widget.js\" data-site=\"acme\" data-room=\"lobby\" async></script>"
        );
    }

    #[test]
    fn audit_flags_and_lines() {
        let argv = ["site", "audit", "acme", "--secret", "s", "--limit", "5"];
        let SiteCommand::Audit(flags) = Site::try_parse_from(argv).unwrap().args.command else {
            panic!("not audit");
        };
        assert_eq!((flags.site.as_str(), flags.limit), ("acme", 5));
        for bad in ["0", "1001", "x"] {
            let argv = ["site", "audit", "acme", "--secret", "s", "--limit", bad];
            assert!(Site::try_parse_from(argv).is_err(), "{bad}");
        }
        let line = AuditEntry {
            at_ms: 0,
            room: "lobby".into(),
            moderator_id: "u_7".into(),
            moderator_nick: "Mo".into(),
            action: chatty_shared::wire::ModerationAction::Timeout,
            member_id: Some("g1".into()),
            secs: Some(60),
            seq: Some(4),
        };
        assert_eq!(
            audit_line(&line),
            "1970-01-01 00:00:00 UTC  lobby  Mo (u_7)  timeout 60s g1  seq 4"
        );
        let owner = AuditEntry {
            moderator_id: String::new(),
            moderator_nick: String::new(),
            action: chatty_shared::wire::ModerationAction::SlowMode,
            member_id: None,
            secs: Some(0),
            ..line
        };
        assert_eq!(
            audit_line(&owner),
            "1970-01-01 00:00:00 UTC  lobby  (site secret)  slow_mode 0s  seq 4"
        );
    }
}
