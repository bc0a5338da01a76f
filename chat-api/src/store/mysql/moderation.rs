//! Moderation in MySQL: moderation events with their audit line under the
//! room's row lock, the audit, timeouts and moderators.

use async_trait::async_trait;
use chatty_shared::wire::AuditEntry;
use chatty_shared::RoomKey;
use mysql_async::prelude::Queryable;
use mysql_async::Row;

use super::log::{insert_event, lock_new_room};
use super::{db_error, decode, MysqlStore};
use crate::store::moderation::{
    action_code, action_from_code, Moderation, ModerationStore, Standing,
};
use crate::store::rows::limit_to_i64;
use crate::store::{Appended, StoreError};

const INSERT_AUDIT: &str = "INSERT INTO audit
    (site, room, at_ms, moderator_id, moderator_nick, action, member_id, secs, seq)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)";

fn audit_params(key: &RoomKey, m: &Moderation, seq: u64) -> mysql_async::Params {
    (
        key.site(),
        key.room(),
        m.at_ms,
        &m.moderator_id,
        &m.moderator_nick,
        action_code(m.action),
        &m.member_id,
        m.secs,
        seq,
    )
        .into()
}

async fn append(s: &MysqlStore, key: &RoomKey, m: &Moderation) -> Result<Appended, StoreError> {
    let (mut tx, epoch, seq) = lock_new_room(s, key).await?;
    let event = m.event(seq + 1);
    insert_event(&mut tx, key, &event).await?;
    tx.exec_drop(INSERT_AUDIT, audit_params(key, m, event.seq))
        .await
        .map_err(db_error)?;
    tx.commit().await.map_err(db_error)?;
    Ok(Appended::written(event, epoch))
}

type AuditRow = (
    String,
    i64,
    String,
    String,
    i64,
    Option<String>,
    Option<u32>,
    Option<u64>,
);

#[async_trait]
impl ModerationStore for MysqlStore {
    async fn append_moderation(
        &self,
        key: &RoomKey,
        m: &Moderation,
    ) -> Result<Appended, StoreError> {
        self.bounded(append(self, key, m)).await
    }

    async fn add_audit(&self, key: &RoomKey, m: &Moderation, seq: u64) -> Result<(), StoreError> {
        self.bounded(async {
            self.conn()
                .await?
                .exec_drop(INSERT_AUDIT, audit_params(key, m, seq))
                .await
                .map_err(db_error)
        })
        .await
    }

    async fn audit(&self, site: &str, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.read(|s| async move {
            let rows: Vec<Row> = s
                .conn()
                .await?
                .exec(
                    "SELECT room, at_ms, moderator_id, moderator_nick, action, member_id, secs, seq
                     FROM audit WHERE site = ? ORDER BY id DESC LIMIT ?",
                    (site, limit_to_i64(limit)),
                )
                .await
                .map_err(db_error)?;
            rows.into_iter()
                .map(|row| {
                    let (room, at_ms, moderator_id, moderator_nick, action, member_id, secs, seq): AuditRow =
                        decode(row)?;
                    Ok(AuditEntry {
                        at_ms,
                        room,
                        moderator_id,
                        moderator_nick,
                        action: action_from_code(action)?,
                        member_id,
                        secs,
                        seq,
                    })
                })
                .collect()
        })
        .await
    }

    async fn set_timeout(
        &self,
        site: &str,
        member_id: &str,
        until_ms: i64,
    ) -> Result<(), StoreError> {
        self.bounded(async {
            self.conn()
                .await?
                .exec_drop(
                    "INSERT INTO timeouts (site, member_id, until_ms) VALUES (?, ?, ?)
                     ON DUPLICATE KEY UPDATE until_ms = VALUES(until_ms)",
                    (site, member_id, until_ms),
                )
                .await
                .map_err(db_error)
        })
        .await
    }

    async fn timeout_until(&self, site: &str, member_id: &str) -> Result<Option<i64>, StoreError> {
        self.read(|s| async move {
            let row: Option<Row> = s
                .conn()
                .await?
                .exec_first(
                    "SELECT until_ms FROM timeouts WHERE site = ? AND member_id = ?",
                    (site, member_id),
                )
                .await
                .map_err(db_error)?;
            row.map(|r| decode::<(i64,)>(r).map(|(until,)| until))
                .transpose()
        })
        .await
    }

    async fn standing(
        &self,
        site: &str,
        now_ms: i64,
        max: usize,
    ) -> Result<Option<Standing>, StoreError> {
        let over = limit_to_i64(max.saturating_add(1));
        self.read(|s| async move {
            let mut conn = s.conn().await?;
            let banned: Vec<String> = conn
                .exec(
                    "SELECT member_id FROM bans WHERE site = ? LIMIT ?",
                    (site, over),
                )
                .await
                .map_err(db_error)?;
            let timed_out: Vec<(String, i64)> = conn
                .exec(
                    "SELECT member_id, until_ms FROM timeouts
                     WHERE site = ? AND until_ms > ? LIMIT ?",
                    (site, now_ms, over),
                )
                .await
                .map_err(db_error)?;
            Ok(Standing::bounded(banned, timed_out, max))
        })
        .await
    }

    async fn set_moderator(
        &self,
        site: &str,
        member_id: &str,
        moderator: bool,
    ) -> Result<(), StoreError> {
        self.bounded(async {
            let sql = if moderator {
                "INSERT IGNORE INTO moderators (site, member_id) VALUES (?, ?)"
            } else {
                "DELETE FROM moderators WHERE site = ? AND member_id = ?"
            };
            self.conn()
                .await?
                .exec_drop(sql, (site, member_id))
                .await
                .map_err(db_error)
        })
        .await
    }

    async fn is_moderator(&self, site: &str, member_id: &str) -> Result<bool, StoreError> {
        self.read(|s| async move {
            let row: Option<Row> = s
                .conn()
                .await?
                .exec_first(
                    "SELECT 1 FROM moderators WHERE site = ? AND member_id = ?",
                    (site, member_id),
                )
                .await
                .map_err(db_error)?;
            Ok(row.is_some())
        })
        .await
    }
}
