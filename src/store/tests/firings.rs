//! Schedules' firings: once per slot whoever ticks, overlap, pause, the sweep of firings not
//! published; and retention's pruning with exact counts.

use super::*;

fn job(id: &str, task: &str, submitted_ms: i64) -> NewJob {
    NewJob {
        id: id.into(),
        task: task.into(),
        queue: "q".into(),
        args: "[[], {}]".into(),
        submitted_ms,
        ..NewJob::default()
    }
}

fn firing(from: Option<i64>, slots: &[(i64, &'static str, &str)]) -> Firing {
    Firing {
        schedule: "nightly".into(),
        from_cursor: from,
        to_cursor: slots.iter().map(|s| s.0).max().unwrap_or(0),
        missed: 0,
        overlap_skip: false,
        slots: slots
            .iter()
            .map(|(slot, how, id)| (*slot, *how, job(id, "ops.backup", 1)))
            .collect(),
        send_until: 50_000,
    }
}

fn ids(fired: &Fired) -> Vec<String> {
    match fired {
        Fired::Jobs(jobs) => jobs.iter().map(|j| j.id.clone()).collect(),
        Fired::Raced => vec!["raced".into()],
    }
}

/// Of ticks racing from one cursor exactly one fires; a slot fired once makes no second job
/// even from a fresh cursor; `overlap = "skip"` records a slot without a job while the last
/// job runs; a paused schedule fires nothing and resumes from now; a manual run is no slot's;
/// firings not published are swept once each.
pub(in crate::store) async fn slots_fire_once_whoever_ticks(store: &Store) -> TestResult {
    let names = vec!["nightly".to_string()];
    let states = store.schedule_states(&names).await?;
    let cursor = states.first().ok_or("no state made")?.cursor_ms;
    assert!(cursor > 0 && states[0].last.is_none() && !states[0].paused);
    let slot = cursor + 1000;
    let racing = |id: &'static str| {
        let f = firing(Some(cursor), &[(slot, "on_time", id)]);
        async move { store.fire(&f).await }
    };
    let (a, b, c, d) = tokio::join!(racing("a"), racing("b"), racing("c"), racing("d"));
    let outcomes = [a?, b?, c?, d?];
    let fired: Vec<_> = outcomes.iter().filter(|f| **f != Fired::Raced).collect();
    assert_eq!(fired.len(), 1, "{outcomes:?}");
    let winner = ids(fired[0]);
    assert_eq!(winner.len(), 1);
    let row = store.get(&winner[0]).await?.ok_or("no job")?;
    assert_eq!(
        (row.state.as_str(), row.job.task.as_str()),
        (PENDING, "ops.backup")
    );
    let noted = store.history(&winner[0]).await?;
    assert!(
        noted[0]
            .detail
            .as_deref()
            .is_some_and(|d| d.starts_with("schedule nightly, slot")),
        "{noted:?}"
    );
    // A stale cursor is a race lost; a fresh one cannot fire the same slot twice.
    assert_eq!(
        store
            .fire(&firing(Some(cursor), &[(slot, "on_time", "e")]))
            .await?,
        Fired::Raced
    );
    let again = store
        .fire(&firing(Some(slot), &[(slot, "catch_up", "f")]))
        .await?;
    assert_eq!(again, Fired::Jobs(vec![]));
    assert_eq!(store.state_of("f").await?, None);

    // Overlap: the last job still PENDING, so the next slot makes none.
    let mut next = firing(Some(slot), &[(slot + 1000, "on_time", "g")]);
    next.overlap_skip = true;
    next.missed = 2;
    assert_eq!(store.fire(&next).await?, Fired::Jobs(vec![]));
    let last = store.schedule_states(&names).await?[0].clone();
    let newest = last.last.clone().ok_or("no firing")?;
    assert_eq!((newest.how.as_str(), newest.job_id), ("overlapped", None));
    assert_eq!((last.cursor_ms, last.missed), (slot + 1000, 2));
    store.revoke(&winner, false, None, "cm@ops").await?;
    let mut after = firing(Some(slot + 1000), &[(slot + 2000, "on_time", "h")]);
    after.overlap_skip = true;
    assert_eq!(ids(&store.fire(&after).await?), ["h"]);

    // Paused: no tick fires; resumed, the cursor is now, past the slots it slept through.
    store.set_paused("nightly", true).await?;
    let paused = firing(Some(slot + 2000), &[(slot + 3000, "on_time", "i")]);
    assert_eq!(store.fire(&paused).await?, Fired::Raced);
    assert!(store.schedule_states(&names).await?[0].paused);
    let before = now_ms();
    store.set_paused("nightly", false).await?;
    let resumed = &store.schedule_states(&names).await?[0];
    assert!(!resumed.paused && resumed.cursor_ms >= before);

    // A manual run at a slot's very time is no slot's: it fires beside it.
    let manual = firing(None, &[(slot + 2000, "manual", "m")]);
    assert_eq!(ids(&store.fire(&manual).await?), ["m"]);
    let history = store.firings("nightly", 0).await?;
    assert_eq!(
        history.iter().map(|f| f.how.as_str()).collect::<Vec<_>>(),
        ["manual", "on_time", "overlapped", "on_time"]
    );
    assert_eq!(store.firings("nightly", 2).await?.len(), 2);

    // None was published: sweepers racing after the firers' claims take each job once.
    assert!(store.claim_unsent(40_000, 60_000, 10).await?.is_empty());
    let sweep = || store.claim_unsent(now_ms(), now_ms() + 60_000, 10);
    let (s1, s2) = tokio::join!(sweep(), sweep());
    let mut swept: Vec<String> = s1?.into_iter().chain(s2?).map(|r| r.job.id).collect();
    swept.sort();
    // The first job was revoked (no longer PENDING): not published.
    assert_eq!(swept, ["h", "m"]);
    store.firings_sent(&swept).await?;
    assert!(store
        .claim_unsent(i64::MAX - 1, i64::MAX, 10)
        .await?
        .is_empty());
    Ok(())
}

/// Job `id` of `task`, submitted at `at` and ended as `end` at `at + 10`.
async fn finished(store: &Store, id: &str, task: &str, at: i64, end: &'static str) -> TestResult {
    store.insert_pending(&[job(id, task, at)]).await?;
    let writer = store.writer_with(1, Duration::ZERO)?;
    writer
        .commit(Event::Finished {
            spawned: Vec::new(),
            id: id.into(),
            state: end,
            worker: "p1@h".into(),
            at: at + 10,
            result: None,
            error: None,
            output: None,
        })
        .await?;
    Ok(())
}

/// The kept counts and the rows counted agree.
async fn counts_exact(store: &Store) -> Result<i64, Box<dyn std::error::Error>> {
    let rows = store
        .list(&JobFilter {
            limit: 0,
            ..JobFilter::default()
        })
        .await?;
    let kept = store.count(&JobFilter::default()).await?;
    assert_eq!(kept, rows.len() as i64);
    for (state, n) in store.counts_by_state(&JobFilter::default()).await? {
        let counted = rows.iter().filter(|r| r.state == state).count() as i64;
        assert_eq!(n, counted, "{state}");
    }
    Ok(kept)
}

/// Retention deletes the finished jobs past their age, in batches, and keeps the newest
/// `keep_last` of each task, every job not final, and a schedule's newest firing's job; a dry
/// run counts what a prune then deletes; the kept counts stay the rows counted.
pub(in crate::store) async fn retention_prunes_what_it_should(store: &Store) -> TestResult {
    store.reset().await?;
    for i in 0..6 {
        finished(store, &format!("ok{i}"), "a", 1_000 * i, SUCCESS).await?;
        finished(store, &format!("bad{i}"), "a", 1_000 * i + 1, FAILURE).await?;
    }
    for i in 0..6 {
        finished(store, &format!("b{i}"), "b", 1_000 * i, SUCCESS).await?;
    }
    store.insert_pending(&[job("waiting", "a", 0)]).await?;
    // A schedule's newest firing: its job stays, whatever its age. (One that never fired
    // keeps nothing.)
    store
        .schedule_states(&["s".to_string(), "never".to_string()])
        .await?;
    let mut f = firing(None, &[(1, "manual", "fired")]);
    f.schedule = "s".into();
    f.slots[0].2 = job("fired", "b", 0);
    store.fire(&f).await?;
    let writer = store.writer_with(1, Duration::ZERO)?;
    writer
        .commit(Event::Finished {
            spawned: Vec::new(),
            id: "fired".into(),
            state: FAILURE,
            worker: "p1@h".into(),
            at: 10,
            result: None,
            error: None,
            output: None,
        })
        .await?;
    assert_eq!(counts_exact(store).await?, 20);
    // A waiting child's parents stay, whatever their age: its release reads their rows.
    store.insert_pending(&[job("pend", "a", 0)]).await?;
    let parents = Parents {
        after: vec![],
        after_any: vec!["ok0".into(), "pend".into()],
    };
    store
        .insert_waiting(&[job("w", "c", 0)], &parents, 10)
        .await?;
    assert_eq!(store.state_of("w").await?.as_deref(), Some(WAITING));

    // SUCCESS before 4 s, FAILURE before 2 s, but each task keeps its newest 4: of a, ok0..ok3
    // and bad0, bad1 go (ok4, bad4, ok5, bad5 are its newest; the PENDING one is live); of b,
    // b0 and b1 go (b2..b5 are its newest; `fired`, failed at 10 ms, is a schedule's newest).
    let rules = Prune {
        succeeded_before: Some(4_000),
        failed_before: Some(2_000),
        keep_last: 4,
        batch: 2,
        dry_run: true,
    };
    let counted = store.prune(&rules).await?;
    assert_eq!(counts_exact(store).await?, 22, "a dry run deletes nothing");
    let pruned = store
        .prune(&Prune {
            dry_run: false,
            ..rules
        })
        .await?;
    assert_eq!(pruned, counted);
    let mut left: Vec<String> = store
        .list(&JobFilter {
            limit: 0,
            ..JobFilter::default()
        })
        .await?
        .into_iter()
        .map(|r| r.job.id)
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            "b2", "b3", "b4", "b5", "bad2", "bad3", "bad4", "bad5", "fired", "ok0", "ok4", "ok5",
            "pend", "w", "waiting"
        ],
        "pruned {pruned}"
    );
    assert_eq!(pruned, 7);
    assert!(store.history("ok1").await?.is_empty());
    assert_eq!(counts_exact(store).await?, 15);
    // No rule, nothing goes.
    let none = Prune {
        succeeded_before: None,
        failed_before: None,
        ..rules
    };
    assert_eq!(store.prune(&none).await?, 0);
    Ok(())
}

#[tokio::test]
async fn on_an_sqlite_file_slots_fire_once_whoever_ticks() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Store::open(&StoreLocation::SqliteFile(dir.path().join("s.db"))).await?;
    slots_fire_once_whoever_ticks(&store).await
}

#[tokio::test]
async fn on_an_sqlite_file_retention_prunes_what_it_should() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Store::open(&StoreLocation::SqliteFile(dir.path().join("s.db"))).await?;
    retention_prunes_what_it_should(&store).await
}
