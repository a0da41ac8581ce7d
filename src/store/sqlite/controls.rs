//! Queue controls (pause, resume, scale): see `crate::store::controls`.

use rusqlite::{params, TransactionBehavior};

use super::Store;
use crate::store::controls::{columns, Control, ControlRow, Scope};
use crate::store::StoreError;

impl Store {
    pub(crate) async fn set_control(
        &self,
        queue: &str,
        scope: &Scope,
        control: Control,
        by: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let (queue, scope, by) = (queue.to_string(), scope.clone(), by.to_string());
        let (paused, concurrency, terminate_ms) = columns(control, now);
        self.pool
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                tx.prepare_cached(
                    "INSERT INTO queue_controls \
                     (queue, scope, paused, concurrency, terminate_ms, changed_ms, changed_by) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (queue, scope) DO UPDATE SET \
                     paused = COALESCE(excluded.paused, paused), \
                     concurrency = COALESCE(excluded.concurrency, concurrency), \
                     terminate_ms = COALESCE(excluded.terminate_ms, terminate_ms), \
                     changed_ms = excluded.changed_ms, changed_by = excluded.changed_by",
                )?
                .execute(params![
                    queue,
                    scope.key(),
                    paused,
                    concurrency,
                    terminate_ms,
                    now,
                    by
                ])?;
                // The narrower rows' say on the same thing ends here.
                let narrower = match &scope {
                    Scope::Everywhere => Some("scope <> '' AND ?2 = ''"),
                    Scope::Host(_) => Some("substr(scope, -(length(?2) + 1)) = '@' || ?2"),
                    Scope::Worker(_) => None,
                };
                if let Some(narrower) = narrower {
                    let sql = format!(
                        "UPDATE queue_controls SET \
                         paused = CASE WHEN ?3 THEN NULL ELSE paused END, \
                         concurrency = CASE WHEN ?4 THEN NULL ELSE concurrency END \
                         WHERE queue = ?1 AND ({narrower})"
                    );
                    tx.prepare_cached(&sql)?.execute(params![
                        queue,
                        scope.key(),
                        paused.is_some(),
                        concurrency.is_some()
                    ])?;
                }
                tx.commit()
            })
            .await
    }

    pub(crate) async fn controls(
        &self,
        queue: Option<&str>,
    ) -> Result<Vec<ControlRow>, StoreError> {
        let queue = queue.map(str::to_string);
        self.pool
            .run(move |conn| {
                let mut st = conn.prepare_cached(
                    "SELECT queue, scope, paused, concurrency, terminate_ms, changed_ms, \
                     changed_by FROM queue_controls WHERE ?1 IS NULL OR queue = ?1 \
                     ORDER BY queue, scope",
                )?;
                let rows = st.query_map([queue], |r| {
                    Ok(ControlRow {
                        queue: r.get(0)?,
                        scope: r.get(1)?,
                        paused: r.get(2)?,
                        concurrency: r.get(3)?,
                        terminate_ms: r.get(4)?,
                        changed_ms: r.get(5)?,
                        changed_by: r.get(6)?,
                    })
                })?;
                rows.collect()
            })
            .await
    }
}
