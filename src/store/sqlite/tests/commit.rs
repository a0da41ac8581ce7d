//! A worker's group commits on SQLite: waiting out a lock, the in-memory database, the rows a
//! commit leaves, the pages it writes, a full disk, and the checkpoints off its thread.

use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::store::sqlite::columns::job_row;
use crate::store::sqlite::commit::{self, insert_history, insert_pending, CommitWriter};
use crate::store::testing::{traffic, Model, Traffic};

/// A writer waits for another connection's write lock (async), then commits; when the lock
/// outlasts its busy timeout it fails as busy, not as a stopped writer.
#[tokio::test]
async fn a_locked_store_is_waited_for_then_written_or_reported_busy(
) -> Result<(), Box<dyn std::error::Error>> {
    let (_dir, path) = temp_store()?;
    let store = crate::store::Store::open(&StoreLocation::SqliteFile(path.clone())).await?;
    let ev = Event::Received {
        job: NewJob {
            id: "a".into(),
            ..NewJob::default()
        },
        worker: "w".into(),
        at: 1,
    };
    let commit = batch::plan(&[&ev]);
    let name: Arc<str> = "s".into();

    let holder = Connection::open(&path)?;
    holder.execute_batch("BEGIN IMMEDIATE")?;
    let mut impatient = CommitWriter::own(&path, Duration::from_millis(30), name.clone())?;
    let err = impatient.write(&commit).await.err();
    assert!(
        matches!(&err, Some(StoreError::Busy { cause, .. }) if cause.contains("over 30 ms")),
        "{err:?}"
    );

    let mut patient = CommitWriter::own(&path, Duration::from_secs(10), name)?;
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        holder.execute_batch("COMMIT")
    });
    patient.write(&commit).await?;
    release.await??;
    let row = store.get("a").await?;
    assert_eq!(row.map(|r| r.state), Some(RECEIVED.to_string()));
    Ok(())
}

/// An in-memory store keeps its one database across calls, the writer's included.
#[tokio::test]
async fn an_in_memory_store_is_one_database_for_readers_and_the_writer() -> Result<(), StoreError> {
    let store = crate::store::Store::open(&StoreLocation::SqliteMemory).await?;
    let job = NewJob {
        id: "m".into(),
        batch: Some("b".into()),
        ..NewJob::default()
    };
    store.insert_pending(std::slice::from_ref(&job)).await?;
    let writer = store.writer(1)?;
    writer
        .commit(Event::Received {
            job,
            worker: "w".into(),
            at: 2,
        })
        .await?;
    assert_eq!(store.state_of("m").await?.as_deref(), Some(RECEIVED));
    assert_eq!(store.history("m").await?.len(), 2);
    Ok(())
}

/// Every `jobs` row and every job's unfolded history, for comparing two databases.
type Rows = (Vec<JobRow>, Vec<(String, EventRow)>);

fn rows(conn: &Connection) -> rusqlite::Result<Rows> {
    let jobs = conn
        .prepare(concat!("SELECT ", job_columns!(), " FROM jobs ORDER BY id"))?
        .query_map([], job_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut history = Vec::new();
    let mut st = conn.prepare(
        "SELECT job_id, state, worker, at_ms, detail, later FROM job_events ORDER BY job_id, seq",
    )?;
    let stored = st.query_map([], |r| {
        let first = EventRow {
            state: r.get(1)?,
            worker: r.get(2)?,
            at_ms: r.get(3)?,
            detail: r.get(4)?,
        };
        Ok((
            r.get::<_, String>(0)?,
            first,
            r.get::<_, Option<String>>(5)?,
        ))
    })?;
    for row in stored {
        let (id, first, later) = row?;
        let mut events = Vec::new();
        let unfolded = batch::unfold(&id, first, later.as_deref(), &mut events);
        assert!(unfolded.is_ok(), "{unfolded:?}");
        history.extend(events.into_iter().map(|e| (id.clone(), e)));
    }
    Ok((jobs, history))
}

/// `t` written into a new in-memory database, each commit as the writer plans it, or each
/// event in a commit of its own.
fn written(t: &Traffic, event_by_event: bool) -> rusqlite::Result<Rows> {
    let mut conn = Connection::open_in_memory()?;
    let migrated = migrate::run(&mut conn);
    assert!(migrated.is_ok(), "{migrated:?}");
    {
        let tx = conn.transaction()?;
        insert_pending(&tx, &t.published)?;
        insert_history(&tx, &batch::published(&t.published))?;
        tx.commit()?;
    }
    for events in &t.commits {
        let events: Vec<&Event> = events.iter().collect();
        if event_by_event {
            for ev in events {
                commit::write(&mut conn, &batch::plan(&[ev]))?;
            }
        } else {
            commit::write(&mut conn, &batch::plan(&events))?;
        }
    }
    rows(&conn)
}

proptest! {
    // Enough cases that several have a whole run over another run's final row.
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// On the real database: a commit's statements leave the rows its events, one commit each,
    /// leave (the model in `batch`'s tests checks the same on many more cases), and those are
    /// the model's rows: the SQL follows its rules (a final row kept, leases, output).
    #[test]
    fn a_commit_leaves_the_rows_its_events_one_by_one_do(t in traffic()) {
        let batched = written(&t, false).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let alone = written(&t, true).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&batched, &alone);
        let model = Model::of(&t);
        let history: Vec<(String, EventRow)> = model
            .history
            .iter()
            .flat_map(|(id, (events, _))| events.iter().map(|e| (id.clone(), e.clone())))
            .collect();
        prop_assert_eq!(batched, (model.jobs.into_values().collect(), history));
    }
}

/// A whole run in one commit takes one history row; event by event it takes six.
#[test]
fn a_whole_run_in_one_commit_is_one_history_row() -> rusqlite::Result<()> {
    let w = crate::store::SharedText::from("w");
    let job = NewJob {
        id: "a".into(),
        ..NewJob::default()
    };
    let state = |state: &'static str, at| Event::State {
        id: "a".into(),
        state: state.into(),
        worker: w.clone(),
        at,
    };
    let run = [
        Event::Received {
            job,
            worker: w.clone(),
            at: 1,
        },
        state(crate::store::STARTED, 2),
        state("running", 3),
        state("deploy", 4),
        state("active", 5),
        Event::Finished {
            spawned: Vec::new(),
            id: "a".into(),
            state: crate::store::SUCCESS,
            worker: w.clone(),
            at: 6,
            result: None,
            error: None,
            output: None,
        },
    ];
    let stored = |commits: Vec<Vec<&Event>>| -> rusqlite::Result<i64> {
        let mut conn = Connection::open_in_memory()?;
        let migrated = migrate::run(&mut conn);
        assert!(migrated.is_ok(), "{migrated:?}");
        for events in commits {
            commit::write(&mut conn, &batch::plan(&events))?;
        }
        conn.query_row("SELECT COUNT(*) FROM job_events", [], |r| r.get(0))
    };
    let whole = stored(vec![run.iter().collect()])?;
    let one_by_one = stored(run.iter().map(|ev| vec![ev]).collect())?;
    assert_eq!((whole, one_by_one), (1, 6));
    Ok(())
}

/// A disk with no room (here SQLite's page limit, which fails the same way: SQLITE_FULL) makes
/// the writer wait and try again, not fail the commit: it lands once there is room. Told to give
/// up (the worker stopping), a commit the disk cannot take fails as full.
#[tokio::test]
async fn a_full_disk_is_waited_out_and_given_up_on_when_told(
) -> Result<(), Box<dyn std::error::Error>> {
    use crate::store::writer::{Sink, Writer};
    let store = Store::open_memory().await?;
    let limit = |pages: i64| {
        store
            .pool
            .run(move |c| c.pragma_update(None, "max_page_count", pages))
    };
    let full = || async {
        let pages: i64 = store
            .pool
            .run(|c| c.query_row("PRAGMA page_count", [], |r| r.get(0)))
            .await?;
        limit(pages).await
    };
    // Each needs pages of its own: no free room in a page already there can take it.
    fn big(id: &str) -> NewJob {
        NewJob {
            id: id.into(),
            args: "x".repeat(20_000),
            ..NewJob::default()
        }
    }
    fn received(id: &str) -> Event {
        Event::Received {
            job: big(id),
            worker: "w".into(),
            at: 1,
        }
    }
    full().await?;
    let err = store.insert_pending(&[big("probe")]).await.err();
    assert!(
        matches!(&err, Some(StoreError::Full { cause, .. }) if cause.contains("full")),
        "the store is not full, the test proves nothing: {err:?}"
    );

    let writer = Writer::spawn(Sink::Sqlite(store.commit_writer()?), 1, Duration::ZERO);
    let w = writer.clone();
    let waiting = tokio::spawn(async move { w.commit(received("a")).await });
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !waiting.is_finished(),
        "a commit the disk has no room for must wait, not fail"
    );
    limit(1_000_000).await?;
    tokio::time::timeout(Duration::from_secs(10), waiting).await???;
    assert_eq!(store.state_of("a").await?.as_deref(), Some(RECEIVED));

    full().await?;
    let w = writer.clone();
    let waiting = tokio::spawn(async move { w.commit(received("b")).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the second commit did not wait");
    writer.give_up_waiting();
    let err = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await??
        .err();
    assert!(matches!(&err, Some(StoreError::Full { .. })), "{err:?}");
    assert_eq!(store.state_of("b").await?, None);
    Ok(())
}

/// A worker's commits leave the WAL to its checkpoint thread: right after a commit the jobs are
/// in the WAL only (the database file has not grown), and within a few pauses the thread has
/// copied them into the file.
#[tokio::test]
async fn the_writers_commits_are_checkpointed_by_a_thread_of_their_own(
) -> Result<(), Box<dyn std::error::Error>> {
    let (_dir, path) = temp_store()?;
    let store = Store::open_file(&path, Duration::from_secs(5), true).await?;
    let before = std::fs::metadata(&path)?.len();
    let events: Vec<Event> = (0..5000)
        .map(|i| Event::Received {
            job: NewJob {
                id: format!("job-{i:04}"),
                task: "t".into(),
                queue: "q".into(),
                args: "x".repeat(1000),
                ..NewJob::default()
            },
            worker: "w".into(),
            at: i,
        })
        .collect();
    let refs: Vec<&Event> = events.iter().collect();
    let mut writer = store.commit_writer()?;
    writer.write(&batch::plan(&refs)).await?;
    assert_eq!(
        std::fs::metadata(&path)?.len(),
        before,
        "the commit checkpointed inline"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::fs::metadata(&path)?.len() == before {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint within 10 s of the commit"
        );
        tokio::time::sleep(super::checkpoint::PAUSE).await;
    }
    assert_eq!(
        store.get("job-4999").await?.map(|r| r.state),
        Some(RECEIVED.to_string())
    );
    Ok(())
}

/// A store at migration 7 keeps its history through 8 (same seqs, same order), and a commit of
/// a job with no batch and no server (what a Celery client sends) then writes 7 pages to the
/// WAL, not 10: no entry in the batch and server indexes, no `sqlite_sequence` row.
#[tokio::test]
async fn a_celery_clients_job_commits_in_seven_pages() -> Result<(), Box<dyn std::error::Error>> {
    let (_dir, path) = temp_store()?;
    let conn = migrated_to(&path, 7)?;
    conn.execute_batch(
        "INSERT INTO jobs (id, task, queue, state) VALUES ('old', 't', 'q', 'SUCCESS'); \
         INSERT INTO job_events (job_id, state, at_ms) VALUES ('old', 'RECEIVED', 1), \
         ('old', 'STARTED', 2), ('old', 'SUCCESS', 3);",
    )?;
    drop(conn);
    let store = crate::store::Store::open(&StoreLocation::SqliteFile(path.clone())).await?;
    let states: Vec<String> = store
        .history("old")
        .await?
        .into_iter()
        .map(|e| e.state)
        .collect();
    assert_eq!(states, ["RECEIVED", "STARTED", "SUCCESS"]);
    let conn = Connection::open(&path)?;
    let table: String = conn.query_row(
        "SELECT sql FROM sqlite_master WHERE name = 'job_events'",
        [],
        |r| r.get(0),
    )?;
    assert!(!table.contains("AUTOINCREMENT"), "{table}");
    let plan = |sql: &str| -> rusqlite::Result<String> {
        let mut st = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
        let rows = st.query_map(["x"], |r| r.get::<_, String>(3))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?.join("; "))
    };
    // The partial indexes still serve the queries that filter on them.
    assert!(plan("SELECT id FROM jobs WHERE batch = ?1")?.contains("jobs_batch"));
    assert!(
        plan("SELECT id FROM jobs WHERE server = ?1 ORDER BY submitted_ms DESC, id LIMIT 50")?
            .contains("jobs_server_submitted")
    );

    // Counted as the WAL's frames after one commit into an emptied WAL.
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    let busy: i64 = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
    assert_eq!(busy, 0, "the WAL was not truncated");
    let mut writer = CommitWriter::own(&path, Duration::from_secs(5), "s".into())?;
    let job = NewJob {
        id: "celery".into(),
        task: "cm.provision".into(),
        queue: "q".into(),
        ..NewJob::default()
    };
    let run = [
        Event::Received {
            job,
            worker: "w".into(),
            at: 10,
        },
        Event::Finished {
            spawned: Vec::new(),
            id: "celery".into(),
            state: crate::store::SUCCESS,
            worker: "w".into(),
            at: 11,
            result: Some("{}".into()),
            error: None,
            output: None,
        },
    ];
    writer
        .write(&batch::plan(&run.iter().collect::<Vec<_>>()))
        .await?;
    let wal = std::fs::metadata(format!("{}-wal", path.display()))?.len();
    let page: u64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    let frame = 24 + page;
    assert_eq!((wal - 32) / frame, 7, "WAL of {wal} bytes");
    Ok(())
}
