//! Signed-in users of the host sites: the user-token keys a site's owner
//! registers (cached per node like the site's other settings, and
//! forgotten everywhere on the bus word of a change),
//! the exchange of a user token for a verified member at join (each token
//! once), and the names that verified users hold in a room.

use std::sync::Arc;
use std::time::Duration;

use chatty_shared::wire::{AddUserKeyRequest, Member, UserKeyInfo};
use chatty_shared::{Decision, Rate, RoomKey};

use super::Chat;
use crate::error::ApiError;
use crate::host_token::{
    self, HostTokenError, HostUser, KeyAlg, UserKey, CLOCK_SKEW_SECS, MAX_KEYS_PER_SITE,
    MAX_LIFETIME_SECS,
};
use crate::metrics::{StoreOp, METRICS};
use crate::store::StoreError;
use crate::token::now_secs;

/// How long a used token id is remembered: longer than any token is
/// accepted, so a token is refused the second time for as long as it lives.
const REPLAY_WINDOW: Duration = Duration::from_secs(MAX_LIFETIME_SECS + 2 * CLOCK_SKEW_SECS);
/// Characters that look like the verified mark: refused in guest names.
const MARKS: &[char] = &[
    '\u{2713}',
    '\u{2714}',
    '\u{2611}',
    '\u{2705}',
    '\u{1F5F8}',
    '\u{1F5F9}',
    '\u{2610}',
];

fn alg_name(alg: KeyAlg) -> &'static str {
    match alg {
        KeyAlg::Ed25519 => "ed25519",
        KeyAlg::HmacSha256 => "hmac-sha256",
    }
}

fn info(key: &UserKey) -> UserKeyInfo {
    UserKeyInfo {
        kid: key.kid.clone(),
        alg: alg_name(key.alg).to_owned(),
    }
}

/// What two names are compared by: letters and digits only, in lower case,
/// so that spacing, punctuation and marks cannot make a copy look new.
fn name_key(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

impl Chat {
    /// `GET /v1/sites/{site}/user-keys` (site secret).
    pub async fn list_user_keys(
        &self,
        site: &str,
        secret: Option<&str>,
    ) -> Result<Vec<UserKeyInfo>, ApiError> {
        self.site_admin(site, secret).await?;
        let keys = self
            .store_call(StoreOp::UserKeys, self.store.user_keys(site))
            .await?;
        Ok(keys.iter().map(info).collect())
    }

    /// `POST /v1/sites/{site}/user-keys` (site secret): at most
    /// [`MAX_KEYS_PER_SITE`], ids unique.
    pub async fn add_user_key(
        &self,
        site: &str,
        req: AddUserKeyRequest,
        secret: Option<&str>,
    ) -> Result<UserKeyInfo, ApiError> {
        self.site_admin(site, secret).await?;
        let alg = match req.alg.as_str() {
            "ed25519" => KeyAlg::Ed25519,
            "hmac-sha256" => KeyAlg::HmacSha256,
            _ => {
                return Err(ApiError::InvalidField(
                    "alg must be ed25519 or hmac-sha256".into(),
                ))
            }
        };
        let key = UserKey::parse(&req.kid, alg, &req.key)
            .map_err(|e| ApiError::InvalidField(e.to_string()))?;
        let held = self
            .store_call(StoreOp::UserKeys, self.store.user_keys(site))
            .await?;
        if held.len() >= MAX_KEYS_PER_SITE {
            return Err(ApiError::Conflict(format!(
                "a site holds at most {MAX_KEYS_PER_SITE} keys: remove one first"
            )));
        }
        self.store_call(StoreOp::AddUserKey, self.store.add_user_key(site, &key))
            .await
            .map_err(|e| match e {
                StoreError::Conflict => ApiError::Conflict("a key with this kid exists".into()),
                e => e.into(),
            })?;
        self.site_changed(site).await;
        tracing::info!(site, kid = %key.kid, alg = alg_name(alg), "user-token key added");
        Ok(info(&key))
    }

    /// `DELETE /v1/sites/{site}/user-keys/{kid}` (site secret).
    pub async fn remove_user_key(
        &self,
        site: &str,
        kid: &str,
        secret: Option<&str>,
    ) -> Result<(), ApiError> {
        self.site_admin(site, secret).await?;
        self.store_call(
            StoreOp::RemoveUserKey,
            self.store.remove_user_key(site, kid),
        )
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::NotFound("no such key".into()),
            e => e.into(),
        })?;
        self.site_changed(site).await;
        tracing::info!(site, kid, "user-token key removed");
        Ok(())
    }

    async fn site_user_keys(&self, site: &str) -> Result<Arc<Vec<UserKey>>, ApiError> {
        let load = || async {
            let keys = self
                .store_call(StoreOp::UserKeys, self.store.user_keys(site))
                .await?;
            Ok(Arc::new(keys))
        };
        self.user_keys.get_or_load(&site.to_owned(), load).await
    }

    /// The user a host token vouches for, refused (401, the reason named,
    /// the token never logged) when it does not verify for `site` or was
    /// used before.
    pub(crate) async fn verified_user(
        &self,
        site: &str,
        token: &str,
    ) -> Result<HostUser, ApiError> {
        let keys = self.site_user_keys(site).await?;
        let refused = |e: HostTokenError| {
            tracing::info!(site, reason = e.reason(), "user token refused");
            METRICS.user_tokens.with_label_values(&[e.reason()]).inc();
            ApiError::Unauthorized(e.to_string())
        };
        let user = host_token::verify(token, site, &keys, now_secs()).map_err(refused)?;
        let once = Rate {
            count: 1,
            per: REPLAY_WINDOW,
        };
        let used = format!("jti:{site}:{}", user.jti);
        match self.limiter.hit(&used, once).await {
            Decision::Allowed => {
                METRICS.user_tokens.with_label_values(&["accepted"]).inc();
                Ok(user)
            }
            Decision::Limited { .. } => Err(refused(HostTokenError::Replayed)),
        }
    }

    /// Refuses a guest's name that looks like the verified mark or that a
    /// verified user present in the room holds (compared by [`name_key`]).
    /// Without presence, only the mark is checked.
    pub(crate) async fn guest_name_free(&self, key: &RoomKey, nick: &str) -> Result<(), ApiError> {
        if nick.contains(MARKS) {
            return Err(ApiError::InvalidField(
                "nick must not contain check marks: the chat marks verified users itself".into(),
            ));
        }
        let Ok(members) = self.presence.verified(key).await else {
            return Ok(());
        };
        let wanted = name_key(nick);
        let taken = |m: &Member| host_token::is_verified(&m.id) && name_key(&m.nick) == wanted;
        if members.iter().any(taken) {
            return Err(ApiError::Conflict(
                "a signed-in user of this site is using this name".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_reason_is_a_metric_label() {
        use crate::metrics::USER_TOKEN_OUTCOMES;
        use HostTokenError::*;
        let all = [
            Malformed,
            UnknownKey,
            WrongAlgorithm,
            BadSignature,
            WrongSite,
            Expired,
            NotYetValid,
            TooLongLived,
            BadClaims,
            Replayed,
        ];
        for e in all {
            assert!(USER_TOKEN_OUTCOMES.contains(&e.reason()), "{e:?}");
        }
        assert_eq!(USER_TOKEN_OUTCOMES.len(), all.len() + 1, "and accepted");
    }

    #[test]
    fn names_compare_by_letters_and_digits() {
        assert_eq!(name_key("Ann Editor"), name_key("ann-editor"));
        assert_eq!(name_key("Ann Editor"), name_key(" ANN.EDITOR ✓"));
        assert_ne!(name_key("Ann Editor"), name_key("Ann Editor2"));
        assert_eq!(name_key("Zoë"), name_key("ZOË"));
    }
}
