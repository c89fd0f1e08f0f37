//! A fresh, migrated database per test: a SQLite file in a temporary directory, or a uniquely named database
//! on the shared PostgreSQL (`CONFAB_TEST_PG_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`),
//! dropped afterwards.

use std::time::Duration;

use confab_store::{Db, DbOptions, Uuid};
use sqlx::{AssertSqlSafe, Connection, PgConnection};

const SETUP_TIMEOUT: Duration = Duration::from_secs(20);

/// Which backend a test database is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub const BOTH: [Backend; 2] = [Backend::Sqlite, Backend::Postgres];

fn pg_base_url() -> String {
    std::env::var("CONFAB_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

async fn admin(sql: String) {
    let fut = async {
        let mut conn = PgConnection::connect(&pg_base_url())
            .await
            .expect("connect to the shared PostgreSQL");
        sqlx::query(AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .expect("admin statement");
        conn.close().await.ok();
    };
    tokio::time::timeout(SETUP_TIMEOUT, fut)
        .await
        .expect("PostgreSQL admin statement timed out");
}

/// A test database; `teardown` removes it.
pub struct TestDb {
    pub db: Db,
    cleanup: Result<std::path::PathBuf, String>,
}

impl TestDb {
    pub async fn create(backend: Backend) -> Self {
        let opts = DbOptions {
            max_connections: 5,
            acquire_timeout_ms: 5_000,
            ..DbOptions::default()
        };
        let (url, cleanup) = match backend {
            Backend::Sqlite => {
                let dir =
                    std::env::temp_dir().join(format!("confab-settlement-{}", Uuid::new_v4()));
                (
                    format!("sqlite://{}", dir.join("test.db").display()),
                    Ok(dir),
                )
            }
            Backend::Postgres => {
                let name = format!("confab_settlement_test_{}", Uuid::new_v4().simple());
                admin(format!("CREATE DATABASE {name}")).await;
                let base = pg_base_url();
                let prefix = &base[..base.rfind('/').expect("a database in the URL")];
                (format!("{prefix}/{name}"), Err(name))
            }
        };
        let db = tokio::time::timeout(SETUP_TIMEOUT, Db::connect(&url, &opts))
            .await
            .expect("connect timed out")
            .expect("connect and migrate");
        Self { db, cleanup }
    }

    pub async fn teardown(self) {
        tokio::time::timeout(SETUP_TIMEOUT, self.db.close())
            .await
            .ok();
        match self.cleanup {
            Ok(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Err(name) => admin(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await,
        }
    }
}
