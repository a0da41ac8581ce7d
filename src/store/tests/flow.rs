//! Flow control: a job's gates taken in the store, or the job held THROTTLED; held jobs
//! granted their places as gates free, highest priority first, then submit order.

use super::*;
use crate::store::flow::{Admission, Gate, Rule};

fn key_h1(slots: i64) -> Gate {
    Gate {
        name: "key:h1".into(),
        rule: Rule::Key { slots },
        reason: "key host=h1".into(),
    }
}

fn submitted(id: &str, at: i64) -> NewJob {
    NewJob {
        submitted_ms: at,
        ..published(id)
    }
}

fn priority(p: i64) -> MessageOptions {
    MessageOptions {
        priority: p,
        ..MessageOptions::default()
    }
}

fn ids(rows: &[JobRow]) -> Vec<&str> {
    rows.iter().map(|r| r.job.id.as_str()).collect()
}

fn held(reason: &str) -> Admission {
    Admission::Held {
        reason: reason.into(),
    }
}

/// A key with one slot: its holder passes again (a redelivery), the others wait THROTTLED with
/// why; the slot is freed by the holder's end (a run written final at once, a revoke) and
/// granted to the waiting job of the highest priority, then the earliest.
pub(in crate::store) async fn a_key_slot_goes_to_one_job_at_a_time_in_priority_order(
    store: &Store,
) -> TestResult {
    let k = [key_h1(1)];
    let until = now_ms() + 60_000;
    let admit = |id: &'static str, at: i64, p: i64| {
        let k = k.clone();
        async move {
            store
                .admit_flow(&submitted(id, at), &priority(p), &k, "w1@h")
                .await
        }
    };
    assert_eq!(admit("a", 1, 0).await?, Admission::Go);
    assert_eq!(admit("a", 1, 0).await?, Admission::Go, "its own slot");
    assert_eq!(admit("b", 2, 0).await?, held("key host=h1 held by job a"));
    let behind = held("key host=h1 (behind jobs already waiting)");
    assert_eq!(admit("c", 3, 5).await?, behind);
    assert_eq!(admit("d", 4, 0).await?, behind);
    let b = store.get("b").await?.ok_or("b is gone")?;
    assert_eq!(b.state, THROTTLED);
    assert_eq!(b.waiting_for(), Some("key host=h1 held by job a"));
    let last = store.history("b").await?.pop().ok_or("no history")?;
    assert_eq!(
        (last.state.as_str(), last.detail.as_deref()),
        (THROTTLED, Some("key host=h1 held by job a"))
    );
    assert_eq!(store.held_gates("q").await?, vec!["key:h1".to_string()]);
    assert!(store.held_gates("other").await?.is_empty());
    let release = || store.release_held("key:h1", "q", "w2@h", until, 10);
    assert!(release().await?.is_empty(), "a holds the slot");

    // a's whole run in one commit: its row is inserted final, which frees the slot too.
    let writer = store.writer_with(1, Duration::ZERO)?;
    let events = run_on("a", "w1@h", 10, &[], SUCCESS);
    if let Some((last, before)) = events.split_last() {
        for ev in before {
            writer.send(ev.clone());
        }
        writer.commit(last.clone()).await?;
    }
    let granted = release().await?;
    assert_eq!(ids(&granted), ["c"], "the highest priority first");
    assert_eq!(granted[0].lease_owner.as_deref(), Some("w2@h"));
    assert_eq!(granted[0].job.options.priority, 5);
    assert!(release().await?.is_empty(), "c holds the slot now");
    assert_eq!(admit("c", 3, 5).await?, Admission::Go, "granted: it passes");

    // A revoke ends c at once (THROTTLED, granted, not yet running) and frees its slot.
    store.revoke(&["c".into()], false, None, "cm@ops").await?;
    assert_eq!(store.state_of("c").await?.as_deref(), Some(REVOKED));
    assert_eq!(ids(&release().await?), ["b"], "then submit order");
    // d's message comes again (its worker died before the ack) once b has ended: it starts,
    // and no releaser can grant it a second run.
    store.revoke(&["b".into()], false, None, "cm@ops").await?;
    assert_eq!(admit("d", 4, 0).await?, Admission::Go);
    assert_eq!(store.state_of("d").await?.as_deref(), Some(PENDING));
    assert!(store.held_gates("q").await?.is_empty());
    assert!(release().await?.is_empty());
    Ok(())
}

/// A rate of one a second: an idle rate lets its catch-up through, then holds; a look after
/// the interval grants one waiting job, not every one.
pub(in crate::store) async fn a_rate_grants_one_start_per_interval(store: &Store) -> TestResult {
    let r = [Gate {
        name: "rate:t".into(),
        rule: Rule::Rate {
            interval_ms: 1_000.0,
        },
        reason: "rate limit 1/s of t".into(),
    }];
    let admit = |id: &'static str, at: i64| {
        let r = r.clone();
        async move {
            store
                .admit_flow(&submitted(id, at), &priority(0), &r, "w1@h")
                .await
        }
    };
    assert_eq!(admit("x1", 1).await?, Admission::Go);
    assert_eq!(
        admit("x2", 2).await?,
        Admission::Go,
        "the catch-up of an idle rate"
    );
    assert_eq!(admit("x3", 3).await?, held("rate limit 1/s of t"));
    assert_eq!(
        admit("x4", 4).await?,
        held("rate limit 1/s of t (behind jobs already waiting)")
    );
    let until = now_ms() + 60_000;
    let release = || store.release_held("rate:t", "q", "w2@h", until, 10);
    assert!(
        release().await?.is_empty(),
        "the next start is a second off"
    );
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(ids(&release().await?), ["x3"], "one start, not two");
    assert!(release().await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn on_an_sqlite_file_a_key_slot_goes_to_one_job_at_a_time_in_priority_order() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Store::open(&StoreLocation::SqliteFile(dir.path().join("s.db"))).await?;
    a_key_slot_goes_to_one_job_at_a_time_in_priority_order(&store).await
}

#[tokio::test]
async fn on_an_sqlite_file_a_rate_grants_one_start_per_interval() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Store::open(&StoreLocation::SqliteFile(dir.path().join("s.db"))).await?;
    a_rate_grants_one_start_per_interval(&store).await
}
