//! Sites' rules (`site_rules`, one JSON document a site) and rooms' own
//! slow mode (`room_slow_mode`) in MySQL.

use chatty_shared::wire::SiteRules;
use chatty_shared::RoomKey;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};

use super::{db_error, decode, MysqlStore};
use crate::store::rows::{rules_from_json, rules_to_json};
use crate::store::StoreError;

pub(super) async fn rules(s: &MysqlStore, site: &str) -> Result<Option<SiteRules>, StoreError> {
    let row: Option<Row> = s
        .conn()
        .await?
        .exec_first("SELECT rules FROM site_rules WHERE site = ?", (site,))
        .await
        .map_err(db_error)?;
    row.map(|r| rules_from_json(&decode::<(String,)>(r)?.0))
        .transpose()
}

/// [`StoreError::NotFound`] unless the site exists.
async fn require_site(conn: &mut Conn, site: &str) -> Result<(), StoreError> {
    let found: Option<Row> = conn
        .exec_first("SELECT 1 FROM sites WHERE id = ?", (site,))
        .await
        .map_err(db_error)?;
    found.map(|_| ()).ok_or(StoreError::NotFound)
}

pub(super) async fn set_rules(
    s: &MysqlStore,
    site: &str,
    rules: &SiteRules,
) -> Result<(), StoreError> {
    let mut conn = s.conn().await?;
    require_site(&mut conn, site).await?;
    conn.exec_drop(
        "INSERT INTO site_rules (site, rules) VALUES (?, ?)
         ON DUPLICATE KEY UPDATE rules = VALUES(rules)",
        (site, rules_to_json(rules)),
    )
    .await
    .map_err(db_error)
}

pub(super) async fn room_slow_mode(
    s: &MysqlStore,
    key: &RoomKey,
) -> Result<Option<u32>, StoreError> {
    let row: Option<Row> = s
        .conn()
        .await?
        .exec_first(
            "SELECT secs FROM room_slow_mode WHERE site = ? AND room = ?",
            (key.site(), key.room()),
        )
        .await
        .map_err(db_error)?;
    row.map(|r| decode::<(u32,)>(r).map(|(secs,)| secs))
        .transpose()
}

pub(super) async fn set_room_slow_mode(
    s: &MysqlStore,
    key: &RoomKey,
    secs: Option<u32>,
) -> Result<(), StoreError> {
    let mut conn = s.conn().await?;
    require_site(&mut conn, key.site()).await?;
    match secs {
        Some(secs) => {
            conn.exec_drop(
                "INSERT INTO room_slow_mode (site, room, secs) VALUES (?, ?, ?)
                 ON DUPLICATE KEY UPDATE secs = VALUES(secs)",
                (key.site(), key.room(), secs),
            )
            .await
        }
        None => {
            conn.exec_drop(
                "DELETE FROM room_slow_mode WHERE site = ? AND room = ?",
                (key.site(), key.room()),
            )
            .await
        }
    }
    .map_err(db_error)
}
