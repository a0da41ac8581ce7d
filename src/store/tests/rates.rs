//! Operators' rates: in force over the rate the admitting worker's config gives, read at the
//! gate in the transaction that holds it; "off" lets every job through and releases the held
//! ones at once; going back to the config gives the gate the config's rule.

use super::*;
use crate::store::flow::{Admission, Gate, Rule};

/// Task t's config says 1000 a second; an operator says one an hour, then off, then one an
/// hour again, then the config's again (which this time sets none).
pub(in crate::store) async fn an_operators_rate_overrides_the_configs_at_the_gate(
    store: &Store,
) -> TestResult {
    let config = [Gate {
        name: "rate:t".into(),
        rule: Rule::Rate { interval_ms: 1.0 },
        reason: "rate limit 1000/s of t".into(),
    }];
    let admit = |id: &'static str| {
        let g = config.clone();
        async move {
            let job = NewJob {
                submitted_ms: now_ms(),
                ..published(id)
            };
            store
                .admit_flow(&job, &MessageOptions::default(), &g, "w1@h")
                .await
        }
    };
    let until = now_ms() + 60_000;
    let release = || store.release_held("rate:t", "q", "w2@h", until, 10);
    let ids = |rows: Vec<JobRow>| rows.into_iter().map(|r| r.job.id).collect::<Vec<_>>();
    let hourly = "rate limit 1/h of t (set by an operator)";

    store
        .set_rate_override("t", 3_600_000.0, "1/h", "ops")
        .await?;
    let listed = store.rate_overrides().await?;
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].task.as_str(), listed[0].rate.as_str()),
        ("t", "1/h")
    );
    assert_eq!(admit("x1").await?, Admission::Go);
    assert_eq!(
        admit("x2").await?,
        Admission::Go,
        "the catch-up of an idle rate"
    );
    let held = Admission::Held {
        reason: hourly.into(),
    };
    assert_eq!(
        admit("x3").await?,
        held,
        "the operator's rate, not the config's"
    );
    let x3 = store.get("x3").await?.ok_or("x3 is gone")?;
    assert_eq!(x3.waiting_for(), Some(hourly));
    assert!(release().await?.is_empty(), "the next start is an hour off");

    store.set_rate_override("t", 0.0, "off", "ops").await?;
    assert_eq!(ids(release().await?), ["x3"], "off: the held go at once");
    assert_eq!(admit("x4").await?, Admission::Go);
    assert_eq!(admit("x5").await?, Admission::Go);

    store
        .set_rate_override("t", 3_600_000.0, "1/h", "ops")
        .await?;
    assert!(matches!(admit("x6").await?, Admission::Held { .. }));
    assert!(store.clear_rate_override("t", 0.0).await?);
    assert!(!store.clear_rate_override("t", 0.0).await?, "nothing left");
    assert!(store.rate_overrides().await?.is_empty());
    assert_eq!(
        ids(release().await?),
        ["x6"],
        "the config sets none: all go"
    );
    Ok(())
}

#[tokio::test]
async fn on_an_sqlite_file_an_operators_rate_overrides_the_configs_at_the_gate() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Store::open(&StoreLocation::SqliteFile(dir.path().join("s.db"))).await?;
    an_operators_rate_overrides_the_configs_at_the_gate(&store).await
}
