//! The cluster store: MySQL / MariaDB through a bounded `mysql_async` pool.
//!
//! Every operation is bounded by the store timeout, so a database that is
//! down or hung turns into a [`StoreError`] in well under a second instead
//! of a hang; broken connections are dropped by the pool and new ones made
//! on the next call, so the store recovers by itself when the server is
//! back. Reads that fail on a broken pooled connection
//! ([`StoreError::retry_may_help`]) are tried once more, within the same
//! time bound.
//!
//! This file holds the pool, the error mapping, sites and bans; `log.rs`
//! the rooms' event logs; `rules.rs` sites' rules and rooms' slow mode;
//! `schema.rs` the tables and their migrations.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chatty_shared::wire::{Event, SiteLimits, SiteRules};
use chatty_shared::RoomKey;
use chatty_shared::RoomVersion;
use mysql_async::prelude::{FromRow, Queryable};
use mysql_async::{Conn, Opts, OptsBuilder, Pool, PoolConstraints, PoolOpts, Row};

use super::rows::{self, origins_to_json, site_record};
use super::{Appended, Erased, NewMessage, NewSite, SiteRecord, Store, StoreError};
use crate::host_token::UserKey;

mod log;
mod moderation;
mod rules;
mod schema;
#[cfg(test)]
mod tests;

/// Most connections one node keeps to the database.
const MAX_CONNECTIONS: usize = 16;

/// `ER_DUP_ENTRY`.
const DUPLICATE_ENTRY: u16 = 1062;

/// The cluster store.
pub struct MysqlStore {
    pool: Pool,
    timeout: Duration,
}

impl std::fmt::Debug for MysqlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlStore")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

fn is_duplicate(e: &mysql_async::Error) -> bool {
    matches!(e, mysql_async::Error::Server(s) if s.code == DUPLICATE_ENTRY)
}

/// A MySQL failure by kind: a broken connection (I/O, or the driver's
/// view of it), or the server refusing or failing the statement.
fn db_error(e: mysql_async::Error) -> StoreError {
    match e {
        mysql_async::Error::Io(_) | mysql_async::Error::Driver(_) => {
            StoreError::Connection(e.to_string())
        }
        other => StoreError::Server(other.to_string()),
    }
}

/// Decodes a row without panicking on a type mismatch.
fn decode<T: FromRow>(row: Row) -> Result<T, StoreError> {
    mysql_async::from_row_opt(row).map_err(|e| StoreError::Corrupt(format!("unexpected row: {e}")))
}

type SiteRow = (String, String, Vec<u8>, u32, u32, u32);

fn site(row: Row) -> Result<SiteRecord, StoreError> {
    let (id, origins, hash, max_text_bytes, guest_messages, guest_window_secs): SiteRow =
        decode(row)?;
    let limits = SiteLimits {
        max_text_bytes,
        guest_messages,
        guest_window_secs,
    };
    site_record(id, &origins, &hash, limits)
}

impl MysqlStore {
    /// Connects, creates the database named in `url` if it is missing (when
    /// allowed to), and applies the migrations. `timeout` bounds every later
    /// operation.
    pub async fn connect(url: &str, timeout: Duration) -> Result<Arc<MysqlStore>, StoreError> {
        let opts = Opts::from_url(url)
            .map_err(|e| StoreError::Connection(format!("bad MySQL URL: {e}")))?;
        // Always the address given: mysql_async would otherwise switch a
        // loopback TCP address to the server's Unix socket behind our back.
        let mut builder = OptsBuilder::from_opts(opts.clone()).prefer_socket(false);
        if !url.contains("pool_min=") && !url.contains("pool_max=") {
            let constraints = PoolConstraints::new(1, MAX_CONNECTIONS)
                .ok_or_else(|| StoreError::Connection("bad pool constraints".into()))?;
            builder = builder.pool_opts(PoolOpts::default().with_constraints(constraints));
        }
        let store = MysqlStore {
            pool: Pool::new(builder),
            timeout,
        };
        schema::prepare(&store.pool, &opts).await?;
        Ok(Arc::new(store))
    }

    /// Closes the pool's connections (before a test drops its database).
    #[cfg(test)]
    pub(crate) async fn disconnect(&self) {
        if let Err(e) = self.pool.clone().disconnect().await {
            tracing::debug!(error = %e, "closing the MySQL pool");
        }
    }

    /// Runs `f` within the store timeout.
    async fn bounded<T>(
        &self,
        f: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(self.timeout, f)
            .await
            .map_err(|_| StoreError::Timeout(self.timeout))?
    }

    /// Runs a read within the store timeout, once more if the first attempt
    /// met a broken connection.
    async fn read<'a, T, F, Fut>(&'a self, f: F) -> Result<T, StoreError>
    where
        F: Fn(&'a Self) -> Fut,
        Fut: Future<Output = Result<T, StoreError>> + 'a,
    {
        self.bounded(async {
            match f(self).await {
                Err(e) if e.retry_may_help() => {
                    tracing::debug!(error = %e, "retrying a MySQL read on a fresh connection");
                    f(self).await
                }
                other => other,
            }
        })
        .await
    }

    async fn conn(&self) -> Result<Conn, StoreError> {
        self.pool.get_conn().await.map_err(db_error)
    }
}

#[async_trait]
impl Store for MysqlStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|s| async move { s.conn().await?.ping().await.map_err(db_error) })
            .await
    }

    async fn create_site(&self, site: &NewSite) -> Result<(), StoreError> {
        self.bounded(async {
            let r = self
                .conn()
                .await?
                .exec_drop(
                    "INSERT INTO sites (id, origins, secret_hash, max_text_bytes, guest_messages, guest_window_secs)
                     VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        &site.id,
                        origins_to_json(&site.origins),
                        &site.secret_hash[..],
                        site.limits.max_text_bytes,
                        site.limits.guest_messages,
                        site.limits.guest_window_secs,
                    ),
                )
                .await;
            match r {
                Ok(()) => Ok(()),
                Err(e) if is_duplicate(&e) => Err(StoreError::Conflict),
                Err(e) => Err(db_error(e)),
            }
        })
        .await
    }

    async fn site(&self, id: &str) -> Result<Option<SiteRecord>, StoreError> {
        self.read(|s| async move {
            let row: Option<Row> = s
                .conn()
                .await?
                .exec_first(
                    "SELECT id, origins, secret_hash, max_text_bytes, guest_messages, guest_window_secs
                     FROM sites WHERE id = ?",
                    (id,),
                )
                .await
                .map_err(db_error)?;
            row.map(site).transpose()
        })
        .await
    }

    async fn list_sites(&self) -> Result<Vec<SiteRecord>, StoreError> {
        self.read(|s| async move {
            let rows: Vec<Row> = s
                .conn()
                .await?
                .query(
                    "SELECT id, origins, secret_hash, max_text_bytes, guest_messages, guest_window_secs
                     FROM sites ORDER BY id",
                )
                .await
                .map_err(db_error)?;
            rows.into_iter().map(site).collect()
        })
        .await
    }

    async fn set_limits(&self, site: &str, limits: SiteLimits) -> Result<(), StoreError> {
        self.bounded(async {
            let mut conn = self.conn().await?;
            // Matched rather than changed rows: setting the same limits twice
            // is not "not found".
            let found: Option<Row> = conn
                .exec_first("SELECT 1 FROM sites WHERE id = ?", (site,))
                .await
                .map_err(db_error)?;
            if found.is_none() {
                return Err(StoreError::NotFound);
            }
            conn.exec_drop(
                "UPDATE sites SET max_text_bytes = ?, guest_messages = ?, guest_window_secs = ?
                 WHERE id = ?",
                (
                    limits.max_text_bytes,
                    limits.guest_messages,
                    limits.guest_window_secs,
                    site,
                ),
            )
            .await
            .map_err(db_error)
        })
        .await
    }

    async fn ban(&self, site: &str, member_id: &str) -> Result<(), StoreError> {
        self.bounded(async {
            self.conn()
                .await?
                .exec_drop(
                    "INSERT IGNORE INTO bans (site, member_id) VALUES (?, ?)",
                    (site, member_id),
                )
                .await
                .map_err(db_error)
        })
        .await
    }

    async fn is_banned(&self, site: &str, member_id: &str) -> Result<bool, StoreError> {
        self.read(|s| async move {
            let row: Option<Row> = s
                .conn()
                .await?
                .exec_first(
                    "SELECT 1 FROM bans WHERE site = ? AND member_id = ?",
                    (site, member_id),
                )
                .await
                .map_err(db_error)?;
            Ok(row.is_some())
        })
        .await
    }

    async fn user_keys(&self, site: &str) -> Result<Vec<UserKey>, StoreError> {
        self.read(|s| async move {
            let found: Vec<(String, i64, Vec<u8>)> = s
                .conn()
                .await?
                .exec(
                    "SELECT kid, alg, key_bytes FROM user_keys WHERE site = ? ORDER BY kid",
                    (site,),
                )
                .await
                .map_err(db_error)?;
            found
                .into_iter()
                .map(|(kid, alg, key)| rows::user_key(kid, alg, key))
                .collect()
        })
        .await
    }

    async fn add_user_key(&self, site: &str, key: &UserKey) -> Result<(), StoreError> {
        self.bounded(async {
            let mut conn = self.conn().await?;
            conn.exec_drop(
                "INSERT IGNORE INTO user_keys (site, kid, alg, key_bytes) VALUES (?, ?, ?, ?)",
                (site, &key.kid, key.alg.code(), &key.key),
            )
            .await
            .map_err(db_error)?;
            match conn.affected_rows() {
                0 => Err(StoreError::Conflict),
                _ => Ok(()),
            }
        })
        .await
    }

    async fn remove_user_key(&self, site: &str, kid: &str) -> Result<(), StoreError> {
        self.bounded(async {
            let mut conn = self.conn().await?;
            conn.exec_drop(
                "DELETE FROM user_keys WHERE site = ? AND kid = ?",
                (site, kid),
            )
            .await
            .map_err(db_error)?;
            match conn.affected_rows() {
                0 => Err(StoreError::NotFound),
                _ => Ok(()),
            }
        })
        .await
    }

    async fn erase_member(
        &self,
        site: &str,
        member_id: &str,
        at_ms: i64,
    ) -> Result<Erased, StoreError> {
        // Not bounded by the store timeout: room by room, each committed
        // on its own, so a long erasure cut short is finished by the next.
        log::erase(self, site, member_id, at_ms).await
    }

    async fn append_messages(
        &self,
        batch: &[(RoomKey, NewMessage)],
    ) -> Result<Vec<Appended>, StoreError> {
        self.bounded(log::append_batch(self, batch)).await
    }

    async fn delete_message(
        &self,
        key: &RoomKey,
        seq: u64,
        at_ms: i64,
    ) -> Result<Appended, StoreError> {
        if seq > i64::MAX as u64 {
            return Err(StoreError::NotFound);
        }
        self.bounded(log::delete(self, key, seq, at_ms)).await
    }

    async fn events_after(
        &self,
        key: &RoomKey,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<Event>, RoomVersion), StoreError> {
        if limit == 0 {
            return Ok((Vec::new(), self.room_version(key).await?));
        }
        self.read(|s| log::events_after(s, key, after, limit)).await
    }

    async fn recent_messages(
        &self,
        key: &RoomKey,
        limit: usize,
    ) -> Result<(Vec<Event>, RoomVersion), StoreError> {
        if limit == 0 {
            return Ok((Vec::new(), self.room_version(key).await?));
        }
        self.read(|s| log::recent_messages(s, key, limit)).await
    }

    async fn room_version(&self, key: &RoomKey) -> Result<RoomVersion, StoreError> {
        self.read(|s| log::room_version(s, key)).await
    }

    async fn rules(&self, site: &str) -> Result<Option<SiteRules>, StoreError> {
        self.read(|s| rules::rules(s, site)).await
    }

    async fn set_rules(&self, site: &str, rules: &SiteRules) -> Result<(), StoreError> {
        self.bounded(rules::set_rules(self, site, rules)).await
    }

    async fn room_slow_mode(&self, key: &RoomKey) -> Result<Option<u32>, StoreError> {
        self.read(|s| rules::room_slow_mode(s, key)).await
    }

    async fn set_room_slow_mode(&self, key: &RoomKey, secs: Option<u32>) -> Result<(), StoreError> {
        self.bounded(rules::set_room_slow_mode(self, key, secs))
            .await
    }
}
