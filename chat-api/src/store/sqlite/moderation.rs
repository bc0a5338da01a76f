//! Moderation in the embedded store: moderation events with their audit
//! line in one transaction, the audit, timeouts and moderators.

use async_trait::async_trait;
use chatty_shared::wire::AuditEntry;
use chatty_shared::RoomKey;
use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::{failed, insert_event, room_row, SqliteStore};
use crate::store::moderation::{
    action_code, action_from_code, Moderation, ModerationStore, Standing,
};
use crate::store::rows::{limit_to_i64, new_epoch, seq_to_i64};
use crate::store::{Appended, StoreError};

/// The tables, appended to the schema.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    site TEXT NOT NULL,
    room TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    moderator_id TEXT NOT NULL,
    moderator_nick TEXT NOT NULL,
    action INTEGER NOT NULL,
    member_id TEXT,
    secs INTEGER,
    seq INTEGER
);
CREATE INDEX IF NOT EXISTS audit_by_site ON audit (site, id);
CREATE TABLE IF NOT EXISTS timeouts (
    site TEXT NOT NULL,
    member_id TEXT NOT NULL,
    until_ms INTEGER NOT NULL,
    PRIMARY KEY (site, member_id)
);
CREATE TABLE IF NOT EXISTS moderators (
    site TEXT NOT NULL,
    member_id TEXT NOT NULL,
    PRIMARY KEY (site, member_id)
);
";

fn insert_audit(
    c: &rusqlite::Connection,
    key: &RoomKey,
    m: &Moderation,
    seq: u64,
) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO audit (site, room, at_ms, moderator_id, moderator_nick, action, member_id, secs, seq)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            key.site(),
            key.room(),
            m.at_ms,
            m.moderator_id,
            m.moderator_nick,
            action_code(m.action),
            m.member_id,
            m.secs,
            seq_to_i64(seq),
        ],
    )
    .map_err(failed)?;
    Ok(())
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
impl ModerationStore for SqliteStore {
    async fn append_moderation(
        &self,
        key: &RoomKey,
        m: &Moderation,
    ) -> Result<Appended, StoreError> {
        let (key, m) = (key.clone(), m.clone());
        self.write(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(failed)?;
            let (epoch, last) = match room_row(&tx, &key)? {
                Some(row) => row,
                None => {
                    let epoch = new_epoch();
                    tx.execute(
                        "INSERT INTO rooms (site, room, epoch, seq) VALUES (?1, ?2, ?3, 0)",
                        params![key.site(), key.room(), epoch],
                    )
                    .map_err(failed)?;
                    (epoch, 0)
                }
            };
            let event = m.event(last + 1);
            insert_event(&tx, &key, &event)?;
            insert_audit(&tx, &key, &m, event.seq)?;
            tx.commit().map_err(failed)?;
            Ok(Appended::written(event, epoch))
        })
        .await
    }

    async fn add_audit(&self, key: &RoomKey, m: &Moderation, seq: u64) -> Result<(), StoreError> {
        let (key, m) = (key.clone(), m.clone());
        self.write(move |c| insert_audit(c, &key, &m, seq)).await
    }

    async fn audit(&self, site: &str, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let site = site.to_owned();
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT room, at_ms, moderator_id, moderator_nick, action, member_id, secs, seq
                     FROM audit WHERE site = ?1 ORDER BY id DESC LIMIT ?2",
                )
                .map_err(failed)?;
            let rows = stmt
                .query_map(params![site, limit_to_i64(limit)], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                        r.get(7)?,
                    ))
                })
                .map_err(failed)?
                .collect::<rusqlite::Result<Vec<AuditRow>>>()
                .map_err(failed)?;
            rows.into_iter()
                .map(
                    |(room, at_ms, moderator_id, moderator_nick, action, member_id, secs, seq)| {
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
                    },
                )
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
        let (site, member_id) = (site.to_owned(), member_id.to_owned());
        self.write(move |c| {
            c.execute(
                "INSERT INTO timeouts (site, member_id, until_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (site, member_id) DO UPDATE SET until_ms = excluded.until_ms",
                params![site, member_id, until_ms],
            )
            .map_err(failed)?;
            Ok(())
        })
        .await
    }

    async fn timeout_until(&self, site: &str, member_id: &str) -> Result<Option<i64>, StoreError> {
        let (site, member_id) = (site.to_owned(), member_id.to_owned());
        self.read(move |c| {
            c.query_row(
                "SELECT until_ms FROM timeouts WHERE site = ?1 AND member_id = ?2",
                params![site, member_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(failed)
        })
        .await
    }

    async fn standing(
        &self,
        site: &str,
        now_ms: i64,
        max: usize,
    ) -> Result<Option<Standing>, StoreError> {
        let site = site.to_owned();
        let over = limit_to_i64(max.saturating_add(1));
        self.read(move |c| {
            let banned = c
                .prepare_cached("SELECT member_id FROM bans WHERE site = ?1 LIMIT ?2")
                .and_then(|mut st| {
                    st.query_map(params![site, over], |r| r.get(0))?
                        .collect::<Result<Vec<String>, _>>()
                })
                .map_err(failed)?;
            let timed_out = c
                .prepare_cached(
                    "SELECT member_id, until_ms FROM timeouts
                     WHERE site = ?1 AND until_ms > ?2 LIMIT ?3",
                )
                .and_then(|mut st| {
                    st.query_map(params![site, now_ms, over], |r| Ok((r.get(0)?, r.get(1)?)))?
                        .collect::<Result<Vec<(String, i64)>, _>>()
                })
                .map_err(failed)?;
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
        let (site, member_id) = (site.to_owned(), member_id.to_owned());
        self.write(move |c| {
            let sql = if moderator {
                "INSERT OR IGNORE INTO moderators (site, member_id) VALUES (?1, ?2)"
            } else {
                "DELETE FROM moderators WHERE site = ?1 AND member_id = ?2"
            };
            c.execute(sql, params![site, member_id]).map_err(failed)?;
            Ok(())
        })
        .await
    }

    async fn is_moderator(&self, site: &str, member_id: &str) -> Result<bool, StoreError> {
        let (site, member_id) = (site.to_owned(), member_id.to_owned());
        self.read(move |c| {
            c.query_row(
                "SELECT 1 FROM moderators WHERE site = ?1 AND member_id = ?2",
                params![site, member_id],
                |_| Ok(()),
            )
            .optional()
            .map(|r| r.is_some())
            .map_err(failed)
        })
        .await
    }
}
