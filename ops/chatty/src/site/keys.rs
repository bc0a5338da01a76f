//! `chatty site keys`: the keys that verify a site's user tokens, listed,
//! added or removed with the site's secret.

use chatty_shared::wire::{AddUserKeyRequest, UserKeyInfo};
use clap::{Args, ValueEnum};

use super::{answer, Admin};

/// Flags of `chatty site keys`. Without `--add` or `--remove`, the keys are
/// listed.
#[derive(Debug, Args)]
pub struct KeysArgs {
    /// The site id.
    pub site: String,
    /// The site's admin secret.
    #[arg(long, env = "CHATTY_SITE_SECRET", hide_env_values = true)]
    pub secret: String,
    /// Add a key with this id (the `kid` of the tokens it verifies); needs
    /// --key.
    #[arg(long, value_name = "KID", requires = "key", conflicts_with = "remove")]
    pub add: Option<String>,
    /// The key to add, base64url: an Ed25519 public key (32 bytes) or an
    /// HMAC secret (32 bytes or more).
    #[arg(long, value_name = "BASE64URL")]
    pub key: Option<String>,
    /// The key's algorithm.
    #[arg(long, value_enum, default_value = "ed25519")]
    pub alg: KeyAlgArg,
    /// Remove the key with this id.
    #[arg(long, value_name = "KID")]
    pub remove: Option<String>,
}

/// `--alg`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KeyAlgArg {
    Ed25519,
    HmacSha256,
}

impl KeyAlgArg {
    fn name(self) -> &'static str {
        match self {
            KeyAlgArg::Ed25519 => "ed25519",
            KeyAlgArg::HmacSha256 => "hmac-sha256",
        }
    }
}

/// `chatty site keys`: adds or removes a key when asked, then lists them.
pub(super) async fn keys(admin: &Admin, flags: &KeysArgs, json: bool) -> anyhow::Result<()> {
    let (site, secret) = (flags.site.as_str(), Some(flags.secret.as_str()));
    let fail = |e: chat_api::ApiError| anyhow::anyhow!("{e}");
    if let (Some(kid), Some(key)) = (&flags.add, &flags.key) {
        let req = AddUserKeyRequest {
            kid: kid.clone(),
            alg: flags.alg.name().to_owned(),
            key: key.clone(),
        };
        let _: UserKeyInfo = match admin {
            Admin::Embedded(chat, _) => chat.add_user_key(site, req, secret).await.map_err(fail)?,
            Admin::Remote(http, base, _) => {
                let post = http.post(format!("{base}/v1/sites/{site}/user-keys"));
                answer(post.bearer_auth(&flags.secret).json(&req)).await?
            }
        };
    }
    if let Some(kid) = &flags.remove {
        match admin {
            Admin::Embedded(chat, _) => chat
                .remove_user_key(site, kid, secret)
                .await
                .map_err(fail)?,
            Admin::Remote(http, base, _) => {
                let delete = http.delete(format!("{base}/v1/sites/{site}/user-keys/{kid}"));
                let resp = delete.bearer_auth(&flags.secret).send().await?;
                let status = resp.status();
                anyhow::ensure!(status.is_success(), "{status}: {}", resp.text().await?);
            }
        }
    }
    let keys: Vec<UserKeyInfo> = match admin {
        Admin::Embedded(chat, _) => chat.list_user_keys(site, secret).await.map_err(fail)?,
        Admin::Remote(http, base, _) => {
            let get = http.get(format!("{base}/v1/sites/{site}/user-keys"));
            answer(get.bearer_auth(&flags.secret)).await?
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&keys)?);
    } else {
        for k in keys {
            println!("{}\t{}", k.kid, k.alg);
        }
    }
    Ok(())
}
