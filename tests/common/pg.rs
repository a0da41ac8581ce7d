//! PostgreSQL for the tests: the server's URLs, and a database of a test's own.

use super::{env_or, parsed, runtime, unique};

pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The PostgreSQL database tests connect to first: `$CM_TEST_PG_URL`.
pub fn pg_url() -> String {
    env_or("CM_TEST_PG_URL", DEFAULT_PG_URL)
}

/// The URL of database `name` on the test PostgreSQL server.
pub fn pg_url_of(name: &str) -> String {
    let mut url = parsed("CM_TEST_PG_URL", &pg_url());
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// The test PostgreSQL server without a database (bench/ appends `/<database>`).
pub fn pg_server_url() -> String {
    let mut url = parsed("CM_TEST_PG_URL", &pg_url());
    url.set_path("");
    url.set_query(None);
    url.to_string()
}

/// A PostgreSQL database of its own on the test server, dropped when this goes.
pub struct PgDatabase {
    pub name: String,
    pub url: String,
}

impl PgDatabase {
    pub fn new() -> Self {
        let name = unique("cm_test").to_lowercase();
        runtime().block_on(async {
            let admin = pg_url();
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
                .await
                .unwrap_or_else(|e| {
                    panic!("PostgreSQL at {admin} (make test starts it; CM_TEST_PG_URL): {e}")
                });
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut conn)
                .await
                .expect("create database");
        });
        let url = pg_url_of(&name);
        Self { name, url }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        runtime().block_on(async move {
            if let Ok(mut conn) = <sqlx::PgConnection as sqlx::Connection>::connect(&pg_url()).await
            {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await;
            }
        });
    }
}
