//! Queue controls: orders kept per scope, a wide one clearing the narrower ones' same column.

use super::*;
use crate::store::controls::{desired, Control, ControlRow, Scope};

/// Orders at every scope resolve narrowest first; an order at a wider scope clears what the
/// narrower rows said of the same thing (and only that), so the last order wins where it
/// reaches; a `pause --terminate` leaves its time.
pub(in crate::store) async fn controls_resolve_narrowest_first_and_wide_orders_clear_narrow_ones(
    store: &Store,
) -> TestResult {
    let (host, w1, w2) = ("h", "w1@h", "w2@h");
    let resolved = |rows: &[ControlRow], node: &str| desired(rows, host, node);
    assert!(store.controls(Some("q")).await?.is_empty());

    store
        .set_control("q", &Scope::Worker(w1.into()), Control::Scale(3), "t")
        .await?;
    store
        .set_control(
            "q",
            &Scope::Worker(w1.into()),
            Control::Pause { terminate: false },
            "t",
        )
        .await?;
    store
        .set_control(
            "other",
            &Scope::Everywhere,
            Control::Pause { terminate: false },
            "t",
        )
        .await?;
    let rows = store.controls(Some("q")).await?;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!((rows[0].paused, rows[0].concurrency), (Some(true), Some(3)));
    assert!(resolved(&rows, w1).paused && !resolved(&rows, w2).paused);

    // The host's resume beats w1's own pause; its scale leaves w1's size alone.
    store
        .set_control("q", &Scope::Host(host.into()), Control::Resume, "t")
        .await?;
    store
        .set_control(
            "q",
            &Scope::Host("elsewhere".into()),
            Control::Scale(9),
            "t",
        )
        .await?;
    let rows = store.controls(Some("q")).await?;
    let d = resolved(&rows, w1);
    assert_eq!((d.paused, d.concurrency), (false, Some(3)), "{rows:?}");

    // Every host's pause with terminate: everyone paused, w1's size kept, a terminate time.
    let before = now_ms();
    store
        .set_control(
            "q",
            &Scope::Everywhere,
            Control::Pause { terminate: true },
            "ops",
        )
        .await?;
    let rows = store.controls(Some("q")).await?;
    for node in [w1, w2] {
        let d = resolved(&rows, node);
        assert!(d.paused, "{node}: {rows:?}");
        assert!(d.terminate_ms.is_some_and(|t| t >= before), "{rows:?}");
    }
    assert_eq!(resolved(&rows, w1).concurrency, Some(3));
    let elsewhere = desired(&rows, "elsewhere", "w1@elsewhere");
    assert_eq!(elsewhere.concurrency, Some(9));

    // Every host's scale clears every narrower size; a resume everywhere every pause.
    store
        .set_control("q", &Scope::Everywhere, Control::Scale(2), "ops")
        .await?;
    store
        .set_control("q", &Scope::Everywhere, Control::Resume, "ops")
        .await?;
    let rows = store.controls(Some("q")).await?;
    for (h, node) in [(host, w1), ("elsewhere", "w1@elsewhere")] {
        let d = desired(&rows, h, node);
        assert_eq!((d.paused, d.concurrency), (false, Some(2)), "{rows:?}");
    }
    let all = store.controls(None).await?;
    assert!(all
        .iter()
        .any(|r| r.queue == "other" && r.paused == Some(true)));
    assert_eq!(
        all.iter()
            .find(|r| r.queue == "q" && r.scope.is_empty())
            .map(|r| r.changed_by.as_str()),
        Some("ops")
    );
    Ok(())
}

#[tokio::test]
async fn on_an_sqlite_file_controls_resolve_narrowest_first_and_wide_orders_clear_narrow_ones(
) -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Store::open(&StoreLocation::SqliteFile(dir.path().join("s.db"))).await?;
    controls_resolve_narrowest_first_and_wide_orders_clear_narrow_ones(&store).await
}
