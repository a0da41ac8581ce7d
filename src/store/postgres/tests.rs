//! Against the PostgreSQL server the integration tests use (127.0.0.1:5432, trust), in a
//! database of each test's own.

use std::sync::atomic::{AtomicUsize, Ordering};

use sqlx::Connection;

use crate::store::{tests, Store, StoreLocation};

const ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A new database, dropped when `f` is done.
async fn with_database<F, Fut>(f: F) -> TestResult
where
    F: FnOnce(Store) -> Fut,
    Fut: std::future::Future<Output = TestResult>,
{
    // Tests run at once in one process: the counter keeps their names apart.
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let name = format!(
        "cm_unit_{}_{}_{}",
        std::process::id(),
        crate::store::now_ms() % 1_000_000_000,
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let mut admin = sqlx::PgConnection::connect(ADMIN).await?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await?;
    let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
    let outcome = match Store::open(&StoreLocation::Postgres(url)).await {
        Ok(store) => {
            let outcome = f(store.clone()).await;
            store.close().await;
            outcome
        }
        Err(e) => Err(e.into()),
    };
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await?;
    outcome
}

#[tokio::test]
async fn on_postgres_commits_leave_what_events_one_by_one_do_and_reads_answer() -> TestResult {
    with_database(|store| async move {
        tests::commits_leave_what_events_one_by_one_do(&store, 8).await?;
        tests::reads_answer_what_was_written(&store).await
    })
    .await
}

#[tokio::test]
async fn on_postgres_a_final_state_is_never_overwritten() -> TestResult {
    with_database(|store| async move { tests::a_final_state_is_never_overwritten(&store).await })
        .await
}

#[tokio::test]
async fn on_postgres_revokes_are_kept_and_end_the_jobs_no_worker_holds() -> TestResult {
    with_database(|store| async move {
        tests::revokes_are_kept_and_end_the_jobs_no_worker_holds(&store).await
    })
    .await
}

#[tokio::test]
async fn on_postgres_leases_are_renewed_lapse_and_are_claimed_once() -> TestResult {
    with_database(|store| async move {
        tests::leases_are_renewed_lapse_and_are_claimed_once(&store).await
    })
    .await
}

#[tokio::test]
async fn on_postgres_scheduled_jobs_are_held_then_claimed_once_when_due() -> TestResult {
    with_database(|store| async move {
        tests::scheduled_jobs_are_held_then_claimed_once_when_due(&store).await
    })
    .await
}

#[tokio::test]
async fn an_unreachable_postgres_is_named_without_its_password() {
    let url = "postgres://cm:secret@127.0.0.1:1/cm".to_string();
    let err = Store::open(&StoreLocation::Postgres(url))
        .await
        .err()
        .map(|e| e.to_string());
    assert!(
        err.as_deref().is_some_and(|e| e
            .starts_with("status store postgres://cm:***@127.0.0.1:1/cm is unreachable")
            && !e.contains("secret")),
        "{err:?}"
    );
}

/// A half-done transaction of a client that is gone (a host cut off) is ended by the server,
/// not left holding its locks: every pooled connection sets the timeout (PostgreSQL enforces it).
#[tokio::test]
async fn on_postgres_every_connection_limits_an_idle_transaction() -> TestResult {
    with_database(|store| async move {
        let crate::store::Backend::Postgres(pg) = &store.backend else {
            return Err("not a PostgreSQL store".into());
        };
        let timeout: String = sqlx::query_scalar("SHOW idle_in_transaction_session_timeout")
            .fetch_one(&pg.pool)
            .await?;
        assert_eq!(timeout, "30s");
        Ok(())
    })
    .await
}
