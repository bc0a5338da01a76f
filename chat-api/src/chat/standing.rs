//! Whether a member may write on a site: not banned, not timed out. Asked
//! by every send, join and presence report, so it is answered from a copy
//! of the site's bans and running timeouts, read once per site for at most
//! [`SITE_MAX_AGE`](crate::cache::SITE_MAX_AGE) and forgotten at once when
//! the bus says the site changed (every ban and timeout publishes that
//! word). A site with more than [`MAX_STANDING`] of either is asked about
//! each member instead.

use std::sync::Arc;
use std::time::Duration;

use super::moderation::utc;
use super::Chat;
use crate::error::ApiError;
use crate::metrics::StoreOp;
use crate::store::Standing;
use crate::token::now_ms;

/// Most bans (or running timeouts) of a site kept in a node's copy.
pub(crate) const MAX_STANDING: usize = 10_000;

impl Chat {
    /// The site's bans and running timeouts, from the cache or the store;
    /// `None` when the site has too many to keep.
    async fn standing(&self, site: &str) -> Result<Option<Arc<Standing>>, ApiError> {
        let load = || async {
            let standing = self
                .store_call(
                    StoreOp::Standing,
                    self.store.standing(site, now_ms(), MAX_STANDING),
                )
                .await?;
            Ok(standing.map(Arc::new))
        };
        self.standing.get_or_load(&site.to_owned(), load).await
    }

    /// 403 `banned` for a banned member.
    pub(super) async fn check_banned(&self, site: &str, member_id: &str) -> Result<(), ApiError> {
        if self.is_banned(site, member_id).await? {
            return Err(ApiError::Banned);
        }
        Ok(())
    }

    pub(super) async fn is_banned(&self, site: &str, member_id: &str) -> Result<bool, ApiError> {
        match self.standing(site).await? {
            Some(standing) => Ok(standing.banned.contains(member_id)),
            None => Ok(self
                .store_call(StoreOp::IsBanned, self.store.is_banned(site, member_id))
                .await?),
        }
    }

    /// 403 `timed_out` (with the time left) while the member is timed out
    /// on the site.
    pub(super) async fn check_timed_out(
        &self,
        site: &str,
        member_id: &str,
    ) -> Result<(), ApiError> {
        let until = match self.standing(site).await? {
            Some(standing) => standing.timed_out.get(member_id).copied(),
            None => {
                self.store_call(
                    StoreOp::TimeoutUntil,
                    self.store.timeout_until(site, member_id),
                )
                .await?
            }
        };
        let now = now_ms();
        match until {
            Some(until) if until > now => {
                let left = u64::try_from(until - now).unwrap_or(0);
                Err(ApiError::TimedOut {
                    retry_after: Duration::from_millis(left),
                    until: utc(until),
                })
            }
            _ => Ok(()),
        }
    }
}
