//! `chatty site add|list`: a site owner's sites, in the embedded store of
//! `chatty up` (--data-dir) or through a running cluster's admin API
//! (--target with the operator token).

use std::path::PathBuf;

use anyhow::Context;
use chatty_shared::wire::{CreateSiteRequest, CreatedSite, SiteInfo};
use clap::{Args, Subcommand};

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
    #[arg(long, env = "CHATTY_TARGET", global = true, requires = "admin_token")]
    pub target: Option<String>,

    /// The cluster's operator token (its --admin-token).
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
    if let (Some(target), Some(token)) = (&args.target, &args.admin_token) {
        return Ok(Admin::Remote(
            reqwest::Client::new(),
            target.trim_end_matches('/').to_owned(),
            token.clone(),
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
                    let resp = http
                        .get(format!("{base}/v1/admin/sites"))
                        .bearer_auth(token)
                        .send()
                        .await?;
                    let status = resp.status();
                    let body = resp.text().await?;
                    anyhow::ensure!(status.is_success(), "{status}: {body}");
                    serde_json::from_str(&body)?
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
    }
    Ok(())
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

    #[test]
    fn snippet_has_the_site_and_the_widget_address() {
        assert_eq!(
            snippet("https://chat.example.org/", "acme"),
            "<script src=\"https://chat.example.org/v1/widget.js\" data-site=\"acme\" data-room=\"lobby\" async></script>"
        );
    }
}
