//! Against the PostgreSQL server the integration tests use (127.0.0.1:5432, trust), in a
//! database of each test's own.

use std::sync::atomic::{AtomicUsize, Ordering};

use sqlx::Connection;

use crate::store::{tests, Backend, JobFilter, NewJob, Store, StoreLocation};

const ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A new, empty database, dropped when `f` (given its URL) is done.
async fn with_url<F, Fut>(f: F) -> TestResult
where
    F: FnOnce(String) -> Fut,
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
    let outcome = f(format!("postgres://postgres@127.0.0.1:5432/{name}")).await;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await?;
    outcome
}

/// A new database with the store in it, dropped when `f` is done.
async fn with_database<F, Fut>(f: F) -> TestResult
where
    F: FnOnce(Store) -> Fut,
    Fut: std::future::Future<Output = TestResult>,
{
    with_url(|url| async move {
        let store = Store::open(&StoreLocation::Postgres(url)).await?;
        let outcome = f(store.clone()).await;
        store.close().await;
        outcome
    })
    .await
}

#[tokio::test]
async fn on_postgres_commits_leave_what_events_one_by_one_do_and_reads_answer() -> TestResult {
    with_database(|store| async move {
        tests::commit::commits_leave_what_events_one_by_one_do(&store, 8).await?;
        tests::jobs::reads_answer_what_was_written(&store).await
    })
    .await
}

#[tokio::test]
async fn on_postgres_a_final_state_is_never_overwritten() -> TestResult {
    with_database(
        |store| async move { tests::commit::a_final_state_is_never_overwritten(&store).await },
    )
    .await
}

#[tokio::test]
async fn on_postgres_a_job_given_back_is_pending_and_says_why() -> TestResult {
    with_database(|store| async move {
        tests::commit::a_job_given_back_is_pending_and_says_why(&store).await
    })
    .await
}

#[tokio::test]
async fn on_postgres_controls_resolve_narrowest_first_and_wide_orders_clear_narrow_ones(
) -> TestResult {
    with_database(|store| async move {
        tests::controls::controls_resolve_narrowest_first_and_wide_orders_clear_narrow_ones(&store)
            .await
    })
    .await
}

#[tokio::test]
async fn on_postgres_revokes_are_kept_and_end_the_jobs_no_worker_holds() -> TestResult {
    with_database(|store| async move {
        tests::revokes::revokes_are_kept_and_end_the_jobs_no_worker_holds(&store).await
    })
    .await
}

#[tokio::test]
async fn on_postgres_parents_ending_side_by_side_release_each_child_once() -> TestResult {
    with_database(|store| async move {
        tests::workflow::parents_ending_side_by_side_release_each_child_once(&store).await
    })
    .await
}

#[tokio::test]
async fn on_postgres_leases_are_renewed_lapse_and_are_claimed_once() -> TestResult {
    with_database(|store| async move {
        tests::leases::leases_are_renewed_lapse_and_are_claimed_once(&store).await
    })
    .await
}

#[tokio::test]
async fn on_postgres_scheduled_jobs_are_held_then_claimed_once_when_due() -> TestResult {
    with_database(|store| async move {
        tests::schedule::scheduled_jobs_are_held_then_claimed_once_when_due(&store).await
    })
    .await
}

#[tokio::test]
async fn on_postgres_slots_fire_once_whoever_ticks() -> TestResult {
    with_database(
        |store| async move { tests::firings::slots_fire_once_whoever_ticks(&store).await },
    )
    .await
}

#[tokio::test]
async fn on_postgres_retention_prunes_what_it_should() -> TestResult {
    with_database(
        |store| async move { tests::firings::retention_prunes_what_it_should(&store).await },
    )
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

#[tokio::test]
async fn on_postgres_kept_counts_are_the_rows_counted() -> TestResult {
    with_database(
        |store| async move { tests::counts::kept_counts_are_the_rows_counted(&store).await },
    )
    .await
}

fn pool(store: &Store) -> Result<&sqlx::PgPool, Box<dyn std::error::Error>> {
    match &store.backend {
        Backend::Postgres(pg) => Ok(&pg.pool),
        Backend::Sqlite(_) => Err("not a PostgreSQL store".into()),
    }
}

fn pending(id: &str) -> NewJob {
    NewJob {
        id: id.into(),
        task: "cm.launch".into(),
        queue: "q".into(),
        args: "[]".into(),
        ..NewJob::default()
    }
}

/// A job's usual update, its whole run in one commit, can be HOT (no new index entries): no
/// index of `jobs` reads a column that update writes, in its keys or its predicate, and the
/// table leaves room on its pages for the new versions.
#[tokio::test]
async fn on_postgres_a_jobs_usual_update_changes_no_indexed_column() -> TestResult {
    with_database(|store| async move {
        let pool = pool(&store)?;
        let defs: Vec<(String, String)> =
            sqlx::query_as("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'jobs'")
                .fetch_all(pool)
                .await?;
        assert!(defs.len() >= 5, "{defs:?}");
        // The columns the upsert of a whole run sets (commit.rs), but the lease's, which it
        // sets to the NULL they already are.
        let written = [
            "state",
            "worker",
            "started_ms",
            "finished_ms",
            "result",
            "error",
            "output",
            "deliveries",
        ];
        for (name, def) in &defs {
            let words: Vec<&str> = def
                .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .collect();
            for column in written {
                assert!(!words.contains(&column), "{name} reads {column}: {def}");
            }
        }
        let options: Option<Vec<String>> =
            sqlx::query_scalar("SELECT reloptions FROM pg_class WHERE relname = 'jobs'")
                .fetch_one(pool)
                .await?;
        assert_eq!(options, Some(vec!["fillfactor=50".to_string()]));
        Ok(())
    })
    .await
}

/// A fold replaces the logs of the kept counts by their sums, one row per state and worker,
/// and the counts read the same; a transaction that inserts jobs while another folds keeps its
/// rows apart from the fold, and once it commits they count.
#[tokio::test]
async fn on_postgres_a_fold_keeps_the_counts_and_shortens_the_logs() -> TestResult {
    with_database(|store| async move {
        let pool = pool(&store)?;
        for i in 0..20 {
            store.insert_pending(&[pending(&format!("j{i}"))]).await?;
        }
        store.revoke(&["j0".into()], false, None, "cm@ops").await?;
        let all = JobFilter::default();
        let before = store.counts_by_state(&all).await?;
        assert_eq!(before, [("PENDING".into(), 19), ("REVOKED".into(), 1)]);

        let mut open = pool.begin().await?;
        sqlx::query(
            "INSERT INTO jobs (id, task, queue, state) VALUES ('late', 't', 'q', 'PENDING')",
        )
        .execute(&mut *open)
        .await?;
        sqlx::query("SELECT job_counts_fold()")
            .execute(pool)
            .await?;
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM job_state_counts")
            .fetch_one(pool)
            .await?;
        assert_eq!(rows, 2, "one row per state after the fold");
        assert_eq!(store.counts_by_state(&all).await?, before);
        open.commit().await?;
        assert_eq!(
            store.counts_by_state(&all).await?,
            [("PENDING".into(), 20), ("REVOKED".into(), 1)]
        );
        assert_eq!(store.count(&all).await?, 21);
        Ok(())
    })
    .await
}

/// A store from before the kept counts (migrations 1 to 5) gets them from its rows when it is
/// migrated, its rows' `unusual_state` (migration 0009) and its history's new key (0010).
#[tokio::test]
async fn on_postgres_a_store_with_jobs_gets_its_counts_and_state_lookups_when_migrated(
) -> TestResult {
    with_url(|url| async move {
        let all =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/store/postgres/migrations");
        let old = tempfile::tempdir()?;
        for entry in std::fs::read_dir(&all)? {
            let path = entry?.path();
            if path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().as_ref() < "0006")
            {
                std::fs::copy(&path, old.path().join(path.file_name().unwrap_or_default()))?;
            }
        }
        let mut conn = sqlx::PgConnection::connect(&url).await?;
        sqlx::migrate::Migrator::new(old.path())
            .await?
            .run(&mut conn)
            .await?;
        sqlx::query(
            "INSERT INTO jobs (id, task, queue, state, worker) VALUES ('a', 't', 'q', 'SUCCESS', \
             'w1'), ('b', 't', 'q', 'SUCCESS', 'w2'), ('c', 't', 'q', 'PENDING', NULL), \
             ('d', 't', 'q', 'FAILURE', 'w2')",
        )
        .execute(&mut conn)
        .await?;
        sqlx::query(
            "INSERT INTO job_events (job_id, state, worker, at_ms) VALUES ('a', 'STARTED', \
             'w1', 1), ('b', 'SUCCESS', 'w2', 2), ('a', 'SUCCESS', 'w1', 3)",
        )
        .execute(&mut conn)
        .await?;
        conn.close().await?;
        let store = Store::open(&StoreLocation::Postgres(url)).await?;
        assert_eq!(
            store.counts_by_state(&JobFilter::default()).await?,
            [
                ("FAILURE".into(), 1),
                ("PENDING".into(), 1),
                ("SUCCESS".into(), 2)
            ]
        );
        assert_eq!(
            store.counts_by_worker().await?,
            [("w1".into(), 1), ("w2".into(), 2)]
        );
        // A state that migration 0009 looks up by `unusual_state`, which it computed for the
        // rows there.
        let failed = store
            .list(&JobFilter {
                state: Some("FAILURE".into()),
                ..JobFilter::default()
            })
            .await?;
        assert_eq!(
            failed.iter().map(|j| j.job.id.as_str()).collect::<Vec<_>>(),
            ["d"]
        );
        // Its history, keyed by (job_id, seq) since migration 0010, in its order.
        let history: Vec<_> = store
            .history("a")
            .await?
            .into_iter()
            .map(|e| (e.state, e.at_ms))
            .collect();
        assert_eq!(history, [("STARTED".into(), 1), ("SUCCESS".into(), 3)]);
        store.close().await;
        Ok(())
    })
    .await
}

/// A writer's connection that the server dropped while the worker was idle (a restart, an idle
/// timeout) does not fail the next commit: a commit after a pause takes a connection the pool
/// checked first.
#[tokio::test]
async fn on_postgres_a_commit_after_a_pause_survives_the_server_dropping_the_writers_connection(
) -> TestResult {
    with_database(|store| async move {
        let Backend::Postgres(pg) = &store.backend else {
            return Err("not a PostgreSQL store".into());
        };
        let received = |id: &str| crate::store::Event::Received {
            job: pending(id),
            worker: "w".into(),
            at: 1,
        };
        let mut writer = pg.commit_writer();
        let first = received("before");
        writer.write(&crate::store::batch::plan(&[&first])).await?;
        // Every other connection to this database, the writer's among them.
        let dropped: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .fetch_all(pool(&store)?)
        .await?;
        assert!(dropped.iter().any(|&d| d), "no connection was dropped");
        tokio::time::sleep(super::commit::KEEP_FOR).await;
        let second = received("after");
        writer.write(&crate::store::batch::plan(&[&second])).await?;
        let state = store.get("after").await?.map(|r| r.state);
        assert_eq!(state.as_deref(), Some(crate::store::RECEIVED));
        Ok(())
    })
    .await
}

/// Publishing after a parent whose row a worker's commit holds locked (ending it) neither
/// waits holding locks nor misses that end: it tries again once the commit is done, reads the
/// parent final, and releases the child in its own transaction.
#[tokio::test]
async fn on_postgres_publishing_after_a_parent_being_ended_waits_for_that_end() -> TestResult {
    with_url(|url| async move {
        let store = Store::open(&StoreLocation::Postgres(url.clone())).await?;
        let job = |id: &str| NewJob {
            id: id.into(),
            task: "cm.launch".into(),
            queue: "q".into(),
            args: "[]".into(),
            submitted_ms: 1,
            ..NewJob::default()
        };
        store.insert_pending(&[job("p")]).await?;
        let mut worker = sqlx::PgConnection::connect(&url).await?;
        sqlx::query("BEGIN").execute(&mut worker).await?;
        sqlx::query("UPDATE jobs SET state = 'SUCCESS' WHERE id = 'p'")
            .execute(&mut worker)
            .await?;
        let after = crate::store::Parents {
            after: vec!["p".into()],
            after_any: vec![],
        };
        let publishing = {
            let store = store.clone();
            tokio::spawn(async move { store.insert_waiting(&[job("c")], &after, 10).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(
            !publishing.is_finished(),
            "waits while the parent's row is locked"
        );
        sqlx::query("COMMIT").execute(&mut worker).await?;
        publishing.await??;
        assert_eq!(store.state_of("c").await?.as_deref(), Some("PENDING"));
        let now = crate::store::now_ms();
        let claimed = store.claim_outbox("t", now, now + 1000, 10, None).await?;
        assert_eq!(claimed.len(), 1);
        store.close().await;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn on_postgres_unique_keys_are_held_for_their_window() -> TestResult {
    with_database(
        |store| async move { tests::unique::keys_are_held_for_their_window(&store).await },
    )
    .await
}

/// Two stores on one database: two hosts' publishers racing for one key.
#[tokio::test]
async fn on_postgres_racing_publishers_of_two_hosts_make_one_job() -> TestResult {
    with_url(|url| async move {
        let location = StoreLocation::Postgres(url);
        let (one, two) = (Store::open(&location).await?, Store::open(&location).await?);
        let outcome = tests::unique::racing_publishers_make_one_job(&one, &two, 20).await;
        one.close().await;
        two.close().await;
        outcome
    })
    .await
}

#[tokio::test]
async fn on_postgres_a_key_slot_goes_to_one_job_at_a_time_in_priority_order() -> TestResult {
    with_database(|store| async move {
        tests::flow::a_key_slot_goes_to_one_job_at_a_time_in_priority_order(&store).await
    })
    .await
}

#[tokio::test]
async fn on_postgres_a_rate_grants_one_start_per_interval() -> TestResult {
    with_database(
        |store| async move { tests::flow::a_rate_grants_one_start_per_interval(&store).await },
    )
    .await
}

#[tokio::test]
async fn on_postgres_an_operators_rate_overrides_the_configs_at_the_gate() -> TestResult {
    with_database(|store| async move {
        tests::rates::an_operators_rate_overrides_the_configs_at_the_gate(&store).await
    })
    .await
}
