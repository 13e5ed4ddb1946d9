//! The server's own view of what a test's sessions left behind, through a direct
//! superuser connection (not proxied): backends in `pg_stat_activity`, table contents.
//! One connection, so a look costs a round trip, not a psql start — timings taken with
//! it are close to what happened.

use std::time::{Duration, Instant};

use super::{common, Env};

/// A direct superuser connection to an env's database.
pub struct ServerView {
    client: tokio_postgres::Client,
}

impl ServerView {
    pub async fn connect(env: &Env) -> ServerView {
        let url = common::cluster().admin_url(&env.target);
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("superuser connection");
        tokio::spawn(conn);
        ServerView { client }
    }

    /// Whether a backend with this pid is in `pg_stat_activity`.
    pub async fn backend_alive(&self, pid: i32) -> bool {
        let row = self
            .client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
                &[&pid],
            )
            .await
            .expect("look at pg_stat_activity");
        row.get::<_, i64>(0) > 0
    }

    /// Whether the backend is running `query` (state active).
    pub async fn running(&self, pid: i32, query: &str) -> bool {
        let row = self
            .client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND state = 'active' AND query = $2",
                &[&pid, &query],
            )
            .await
            .expect("look at pg_stat_activity");
        row.get::<_, i64>(0) > 0
    }

    /// Backends logged in as `user`.
    pub async fn backends_of(&self, user: &str) -> i64 {
        let row = self
            .client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = $1",
                &[&user],
            )
            .await
            .expect("look at pg_stat_activity");
        row.get(0)
    }

    /// `SELECT count(*) FROM <table>`.
    pub async fn count(&self, table: &str) -> i64 {
        let row = self
            .client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .expect("count rows");
        row.get(0)
    }

    /// Polls (every 2 ms) until the backend has left `pg_stat_activity`; returns when it
    /// was first seen gone. Panics after `limit`.
    pub async fn wait_gone(&self, pid: i32, limit: Duration) -> jiff::Timestamp {
        let start = Instant::now();
        loop {
            if !self.backend_alive(pid).await {
                return jiff::Timestamp::now();
            }
            assert!(
                start.elapsed() < limit,
                "backend {pid} still running {limit:?} later"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Polls until some backend of the env's database (another than this view's) runs
    /// `query`, for a test that does not know the backend's pid. Panics after `limit`.
    pub async fn wait_statement(&self, query: &str, limit: Duration) {
        let start = Instant::now();
        loop {
            let row = self
                .client
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                     AND pid <> pg_backend_pid() AND state = 'active' AND query = $1",
                    &[&query],
                )
                .await
                .expect("look at pg_stat_activity");
            if row.get::<_, i64>(0) > 0 {
                return;
            }
            assert!(
                start.elapsed() < limit,
                "no backend running {query:?} after {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Polls until `pid` runs `query`. Panics after `limit`.
    pub async fn wait_running(&self, pid: i32, query: &str, limit: Duration) {
        let start = Instant::now();
        while !self.running(pid, query).await {
            assert!(
                start.elapsed() < limit,
                "backend {pid} not running {query:?} after {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
