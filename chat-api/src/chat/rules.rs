//! A site's own rules at work: the site's owner reads and sets them and a
//! room's own slow mode (site secret); every send passes slow mode (asked
//! with the send's rate limits), then the rules on its text. A change is published on the bus (`v1 s
//! {site}`) so that every node forgets its cached settings of the site at
//! once; a word lost leaves them in force for at most the cache's max age.

use std::sync::Arc;

use chatty_shared::wire::{GuestAccess, RoomSlowMode, SiteRules};
use chatty_shared::{BusMessage, RoomKey};

use super::{Chat, Guard};
use crate::error::ApiError;
use crate::limits::Check;
use crate::metrics::{StoreOp, METRICS};
use crate::rules::{self, Checked, Refusal, Rules, RulesError, Sender};

impl Chat {
    /// `GET /v1/sites/{site}/rules` (site secret): as stored.
    pub async fn rules(&self, site: &str, secret: Option<&str>) -> Result<SiteRules, ApiError> {
        self.site_admin(site, secret).await?;
        Ok(self
            .store_call(StoreOp::Rules, self.store.rules(site))
            .await?
            .unwrap_or_default())
    }

    /// `PUT /v1/sites/{site}/rules` (site secret): replaces the rules.
    pub async fn set_rules(
        &self,
        site: &str,
        rules: SiteRules,
        secret: Option<&str>,
    ) -> Result<SiteRules, ApiError> {
        self.site_admin(site, secret).await?;
        let compiled = compile(rules)
            .await?
            .map_err(|e| ApiError::InvalidField(e.to_string()))?;
        self.store_call(
            StoreOp::SetRules,
            self.store.set_rules(site, compiled.source()),
        )
        .await?;
        self.site_changed(site).await;
        Ok(compiled.source().clone())
    }

    /// `PUT /v1/sites/{site}/rooms/{room}/slow-mode` (site secret): the
    /// room's own slow mode, or (`secs: null`) back to the site's.
    pub(crate) async fn set_room_slow_mode(
        &self,
        site: &str,
        room: &str,
        body: RoomSlowMode,
        secret: Option<&str>,
    ) -> Result<RoomSlowMode, ApiError> {
        self.site_admin(site, secret).await?;
        let key = RoomKey::new(site, room).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        if let Some(secs) = body.secs {
            rules::check_slow_mode(secs).map_err(|e| ApiError::InvalidField(e.to_string()))?;
        }
        self.store_call(
            StoreOp::SetRoomSlowMode,
            self.store.set_room_slow_mode(&key, body.secs),
        )
        .await?;
        self.site_changed(site).await;
        Ok(body)
    }

    /// A site's settings changed on this node: forgotten here, and the
    /// word published for the other nodes.
    pub(super) async fn site_changed(&self, site: &str) {
        self.forget_site(site);
        self.publish(BusMessage::Site {
            site: site.to_owned(),
        })
        .await;
    }

    /// Forgets what this node cached of a site: its record, its rules, its
    /// bans and timeouts, its user-token keys, its rooms' own slow mode.
    pub(crate) fn forget_site(&self, site: &str) {
        self.sites.forget_where(|id| id == site);
        self.standing.forget_where(|id| id == site);
        self.rules.forget_where(|id| id == site);
        self.user_keys.forget_where(|id| id == site);
        self.room_slow_mode.forget_where(|key| key.site() == site);
    }

    /// Forgets every site's settings (the bus was lost: words may be
    /// missed).
    pub(super) fn forget_sites(&self) {
        self.sites.forget_where(|_| true);
        self.standing.forget_where(|_| true);
        self.rules.forget_where(|_| true);
        self.user_keys.forget_where(|_| true);
        self.room_slow_mode.forget_where(|_| true);
    }

    /// The site's rules for a sender about to write: 403 `read_only` for
    /// a guest where the site's guests only read.
    pub(super) async fn rules_for(
        &self,
        site: &str,
        sender: Sender,
    ) -> Result<Arc<Rules>, ApiError> {
        let rules = self.compiled_rules(site).await?;
        if !sender.verified && rules.source().guests == GuestAccess::Read {
            return Err(ApiError::ReadOnly);
        }
        Ok(rules)
    }

    /// The room's slow mode for this sender, as a limit to pass with the
    /// send's others; `None` when the room is not slowed or the sender is
    /// a moderator.
    pub(super) async fn slow_mode_limit(
        &self,
        key: &RoomKey,
        rules: &Rules,
        member_id: &str,
        sender: Sender,
    ) -> Result<Option<(Guard, Check)>, ApiError> {
        if !sender.is_slowed() {
            return Ok(None);
        }
        let secs = match self.own_slow_mode(key).await? {
            Some(secs) => secs,
            None => rules.source().slow_mode_secs,
        };
        Ok(rules::slow_mode(secs).map(|period| {
            let key = format!("sm:{key}:{member_id}");
            (Guard::SlowMode, Check::Cooldown { key, period })
        }))
    }

    /// The site's rules on a message's text: the text to store (masked,
    /// where the site masks) or the refusal.
    pub(super) fn apply_rules(
        &self,
        rules: &Rules,
        sender: Sender,
        text: String,
    ) -> Result<String, ApiError> {
        match rules.apply(&text, sender) {
            Ok(Checked::Clean) => Ok(text),
            Ok(Checked::Masked(masked)) => {
                counted("masked");
                Ok(masked)
            }
            Err(Refusal::BlockedText) => {
                counted("blocked_text");
                Err(ApiError::BlockedText)
            }
            Err(Refusal::Link) => {
                counted("links_not_allowed");
                Err(ApiError::LinksNotAllowed)
            }
        }
    }

    /// The site's rules, compiled: from the cache, else from the store (the
    /// last compiled ones reused when the stored rules did not change).
    /// Refuses a guest's join where the site lets only its signed-in users
    /// write (a guest would have nothing to do with a token).
    pub(super) async fn guests_may_join(&self, site: &str) -> Result<(), ApiError> {
        match self.compiled_rules(site).await?.source().guests {
            GuestAccess::Write => Ok(()),
            GuestAccess::Read => Err(ApiError::ReadOnly),
        }
    }

    async fn compiled_rules(&self, site: &str) -> Result<Arc<Rules>, ApiError> {
        let id = site.to_owned();
        let load = || async {
            let stored = self
                .store_call(StoreOp::Rules, self.store.rules(site))
                .await?
                .unwrap_or_default();
            Ok(match self.rules.get_stale(&id) {
                Some(old) if *old.source() == stored => old,
                _ => Arc::new(compile(stored).await?.unwrap_or_else(|e| {
                    // Stored rules were checked by the same rules when set;
                    // a build with tighter bounds must not stop the site's
                    // chat.
                    tracing::error!(site, error = %e, "stored site rules refused; none applied");
                    Rules::default()
                })),
            })
        };
        self.rules.get_or_load(&id, load).await
    }

    /// The room's own slow mode, from the cache or the store.
    async fn own_slow_mode(&self, key: &RoomKey) -> Result<Option<u32>, ApiError> {
        let load = || async {
            Ok(self
                .store_call(StoreOp::RoomSlowMode, self.store.room_slow_mode(key))
                .await?)
        };
        self.room_slow_mode.get_or_load(key, load).await
    }
}

/// Compiles rules on the blocking pool: hundreds of patterns take a while,
/// and the node's workers answer polls meanwhile.
async fn compile(rules: SiteRules) -> Result<Result<Rules, RulesError>, ApiError> {
    tokio::task::spawn_blocking(move || Rules::compile(rules))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "compiling site rules failed");
            ApiError::Unavailable
        })
}

fn counted(outcome: &'static str) {
    METRICS.rules_applied.with_label_values(&[outcome]).inc();
}
