//! Administration: a site's owner (its secret) bans guests, erases a
//! member and sets limits; the operator (the operator token) creates and
//! lists sites; and the demo site is created at start-up.

use std::sync::Arc;

use chatty_shared::is_valid_site;
use chatty_shared::wire::{CreateSiteRequest, CreatedSite, ErasedCount, SiteInfo, SiteLimits};

use super::{Chat, DEMO_ORIGINS, DEMO_SITE};
use crate::error::ApiError;
use crate::metrics::StoreOp;
use crate::secrets;
use crate::store::{NewSite, SiteRecord, StoreError};
use crate::token::now_ms;
use crate::validate;

/// Longest an erasure may take (it writes to every room of the member).
const ERASE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

impl Chat {
    /// Checks a site owner's secret; 401 otherwise.
    pub(super) async fn site_admin(
        &self,
        site: &str,
        secret: Option<&str>,
    ) -> Result<Arc<SiteRecord>, ApiError> {
        let secret = secret.ok_or_else(|| ApiError::Unauthorized("site secret required".into()))?;
        let rec = self.site(site).await?;
        if !secrets::matches(secret, &rec.secret_hash) {
            return Err(ApiError::Unauthorized("wrong site secret".into()));
        }
        Ok(rec)
    }

    /// `POST /v1/sites/{site}/bans` (site secret).
    pub(crate) async fn ban(
        &self,
        site: &str,
        member_id: &str,
        secret: Option<&str>,
    ) -> Result<(), ApiError> {
        self.site_admin(site, secret).await?;
        validate::member_id(member_id).map_err(|m| ApiError::InvalidField(m.into()))?;
        self.store_call(StoreOp::Ban, self.store.ban(site, member_id))
            .await?;
        self.site_changed(site).await;
        Ok(())
    }

    /// `POST /v1/sites/{site}/erase` (site secret): everything a member
    /// wrote on the site, in every room, erased from the store and deleted
    /// in every viewer's log. Bounded by [`ERASE_TIMEOUT`], not the store
    /// timeout; an erasure cut short has committed whole rooms and is
    /// finished by asking again.
    pub async fn erase(
        &self,
        site: &str,
        member_id: &str,
        secret: Option<&str>,
    ) -> Result<ErasedCount, ApiError> {
        self.site_admin(site, secret).await?;
        validate::member_id(member_id).map_err(|m| ApiError::InvalidField(m.into()))?;
        let erased = tokio::time::timeout(
            ERASE_TIMEOUT,
            self.store.erase_member(site, member_id, now_ms()),
        )
        .await
        .unwrap_or(Err(StoreError::Timeout(ERASE_TIMEOUT)))
        .inspect_err(|e| tracing::warn!(site, error = %e, "erasure failed"))?;
        for (key, version) in &erased.moved {
            self.room_moved(key, *version).await;
        }
        tracing::info!(
            site,
            messages = erased.messages,
            rooms = erased.moved.len(),
            "member erased"
        );
        Ok(ErasedCount {
            messages: erased.messages,
            rooms: erased.moved.len() as u64,
        })
    }

    /// `PUT /v1/sites/{site}/limits` (site secret).
    pub(crate) async fn set_limits(
        &self,
        site: &str,
        limits: SiteLimits,
        secret: Option<&str>,
    ) -> Result<SiteLimits, ApiError> {
        self.site_admin(site, secret).await?;
        let max = crate::config::MAX_TEXT_BYTES_LIMIT;
        if limits.max_text_bytes == 0 || limits.max_text_bytes > max {
            return Err(ApiError::InvalidField(format!(
                "max_text_bytes must be 1..={max}"
            )));
        }
        if (limits.guest_messages == 0) != (limits.guest_window_secs == 0) {
            return Err(ApiError::InvalidField(
                "guest_messages and guest_window_secs must both be 0 (no limit) or both positive"
                    .into(),
            ));
        }
        if limits.guest_window_secs > 86_400 {
            return Err(ApiError::InvalidField(
                "guest_window_secs must be at most 86400".into(),
            ));
        }
        self.store_call(StoreOp::SetLimits, self.store.set_limits(site, limits))
            .await?;
        self.site_changed(site).await;
        Ok(limits)
    }

    /// Checks the operator token; 401 otherwise (always, when admin is off).
    pub(crate) fn operator(&self, token: Option<&str>) -> Result<(), ApiError> {
        match (&self.settings.admin_token_hash, token) {
            (Some(h), Some(t)) if secrets::matches(t, h) => Ok(()),
            _ => Err(ApiError::Unauthorized("operator token required".into())),
        }
    }

    /// The limits a new site starts with.
    fn default_limits(&self) -> SiteLimits {
        SiteLimits {
            max_text_bytes: self.settings.max_text_bytes,
            guest_messages: 0,
            guest_window_secs: 0,
        }
    }

    /// `POST /v1/admin/sites` (operator token).
    pub async fn create_site(
        &self,
        req: CreateSiteRequest,
        token: Option<&str>,
    ) -> Result<CreatedSite, ApiError> {
        self.operator(token)?;
        let id = match req.id {
            Some(id) if is_valid_site(id.as_bytes()) => id,
            Some(_) => {
                return Err(ApiError::InvalidField(
                    "id must be 1-32 characters of a-z, 0-9 and '-'".into(),
                ))
            }
            None => format!("s{}", secrets::random_id(11)),
        };
        let origins = validate::origin_patterns(&req.origins).map_err(ApiError::InvalidField)?;
        let secret = self.add_site(&id, &origins).await.map_err(|e| match e {
            StoreError::Conflict => ApiError::Conflict(format!("site {id:?} already exists")),
            e => e.into(),
        })?;
        self.forget_site(&id);
        Ok(CreatedSite {
            site: SiteInfo {
                id,
                origins,
                limits: self.default_limits(),
            },
            secret,
        })
    }

    /// Stores a new site with a new secret and the default limits; returns
    /// the secret, which is shown only now.
    async fn add_site(&self, id: &str, origins: &[String]) -> Result<String, StoreError> {
        let (secret, secret_hash) = secrets::new_secret();
        let site = NewSite {
            id: id.to_owned(),
            origins: origins.to_vec(),
            secret_hash,
            limits: self.default_limits(),
        };
        self.store_call(StoreOp::CreateSite, self.store.create_site(&site))
            .await?;
        Ok(secret)
    }

    /// `GET /v1/admin/sites` (operator token).
    pub async fn list_sites(&self, token: Option<&str>) -> Result<Vec<SiteInfo>, ApiError> {
        self.operator(token)?;
        let sites = self
            .store_call(StoreOp::Sites, self.store.list_sites())
            .await?;
        Ok(sites
            .into_iter()
            .map(|s| SiteInfo {
                id: s.id,
                origins: s.origins,
                limits: s.limits,
            })
            .collect())
    }

    /// Creates the demo site unless it exists; returns its secret when it
    /// was created now.
    pub(crate) async fn ensure_demo_site(&self) -> Result<Option<String>, StoreError> {
        if self
            .store_call(StoreOp::Site, self.store.site(DEMO_SITE))
            .await?
            .is_some()
        {
            return Ok(None);
        }
        let origins: Vec<String> = DEMO_ORIGINS.iter().map(|s| (*s).to_owned()).collect();
        match self.add_site(DEMO_SITE, &origins).await {
            Ok(secret) => Ok(Some(secret)),
            Err(StoreError::Conflict) => Ok(None),
            Err(e) => Err(e),
        }
    }
}
