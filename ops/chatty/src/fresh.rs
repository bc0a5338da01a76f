//! `chatty up --fresh TAG`: a database and a Redis key prefix of their own
//! (`chatty_TAG_<random>`, `TAG<random>:`) for one run of a local cluster,
//! removed when it stops, so runs never see each other's rooms.

use anyhow::Context;
use fred::interfaces::{ClientLike, KeysInterface};
use futures::StreamExt;
use mysql_async::prelude::Queryable;

/// A database and a key prefix created for this run.
#[derive(Debug)]
pub struct Fresh {
    /// The database's name.
    pub database: String,
    /// `--mysql-url` naming the fresh database.
    pub mysql_url: String,
    /// The key prefix (ends in `:`).
    pub redis_prefix: String,
    server_url: String,
    redis_url: String,
}

impl Fresh {
    /// Creates the database on the server of `mysql_url`.
    pub async fn create(mysql_url: &str, redis_url: &str, tag: &str) -> anyhow::Result<Fresh> {
        anyhow::ensure!(
            !tag.is_empty() && tag.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "--fresh {tag:?}: letters, digits and _ only"
        );
        let suffix = format!("{:08x}", rand::random::<u32>());
        let database = format!("chatty_{tag}_{suffix}");
        let fresh = Fresh {
            mysql_url: with_database(mysql_url, &database)?,
            server_url: with_database(mysql_url, "")?,
            redis_prefix: format!("{tag}{suffix}:"),
            redis_url: redis_url.to_owned(),
            database,
        };
        fresh
            .query(&format!("CREATE DATABASE `{}`", fresh.database))
            .await?;
        Ok(fresh)
    }

    /// Drops the database and deletes the keys under the prefix.
    pub async fn remove(&self) -> anyhow::Result<()> {
        let dropped = self
            .query(&format!("DROP DATABASE IF EXISTS `{}`", self.database))
            .await;
        let deleted = self.delete_keys().await;
        dropped.and(deleted)
    }

    async fn query(&self, sql: &str) -> anyhow::Result<()> {
        let opts = mysql_async::Opts::from_url(&self.server_url).context("--mysql-url")?;
        let mut conn = mysql_async::Conn::new(opts)
            .await
            .context("connecting to MySQL")?;
        conn.query_drop(sql).await.with_context(|| sql.to_owned())?;
        conn.disconnect()
            .await
            .context("closing the MySQL connection")
    }

    async fn delete_keys(&self) -> anyhow::Result<()> {
        let config =
            fred::types::config::Config::from_url(&self.redis_url).context("--redis-url")?;
        let client = fred::clients::Client::new(config, None, None, None);
        client.init().await.context("connecting to Redis")?;
        let mut keys = client
            .scan_buffered(format!("{}*", self.redis_prefix), Some(1000), None)
            .chunks(1000);
        while let Some(chunk) = keys.next().await {
            let chunk = chunk.into_iter().collect::<Result<Vec<_>, _>>()?;
            let _: i64 = client.del(chunk).await.context("deleting keys")?;
        }
        client.quit().await.context("closing the Redis connection")
    }
}

/// `url` with its path (the database) replaced by `database`; any query
/// string is kept.
fn with_database(url: &str, database: &str) -> anyhow::Result<String> {
    let (scheme, rest) = url
        .split_once("://")
        .with_context(|| "--mysql-url: expected mysql://…")?;
    let (authority, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let query = tail.find('?').map_or("", |i| &tail[i..]);
    Ok(format!("{scheme}://{authority}/{database}{query}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_of_a_url_is_replaced() {
        let cases = [
            (
                "mysql://root@127.0.0.1:3306/test",
                "mysql://root@127.0.0.1:3306/x",
            ),
            (
                "mysql://u:p@h/test?pool_min=1",
                "mysql://u:p@h/x?pool_min=1",
            ),
            ("mysql://h:3306", "mysql://h:3306/x"),
        ];
        for (url, want) in cases {
            assert_eq!(with_database(url, "x").unwrap(), want, "{url}");
        }
        assert!(with_database("h:3306/x", "x").is_err());
    }
}
