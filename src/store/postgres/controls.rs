//! Queue controls (pause, resume, scale): see `crate::store::controls`.

use super::Store;
use crate::store::controls::{columns, Control, ControlRow, Scope};
use crate::store::StoreError;

type Row = (
    String,
    String,
    Option<bool>,
    Option<i32>,
    Option<i64>,
    i64,
    String,
);

impl Store {
    pub(crate) async fn set_control(
        &self,
        queue: &str,
        scope: &Scope,
        control: Control,
        by: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let (paused, concurrency, terminate_ms) = columns(control, now);
        let run = async {
            let mut tx = self.pool.begin().await?;
            sqlx::query(
                "INSERT INTO queue_controls \
                 (queue, scope, paused, concurrency, terminate_ms, changed_ms, changed_by) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (queue, scope) DO UPDATE SET \
                 paused = COALESCE(excluded.paused, queue_controls.paused), \
                 concurrency = COALESCE(excluded.concurrency, queue_controls.concurrency), \
                 terminate_ms = COALESCE(excluded.terminate_ms, queue_controls.terminate_ms), \
                 changed_ms = excluded.changed_ms, changed_by = excluded.changed_by",
            )
            .bind(queue)
            .bind(scope.key())
            .bind(paused)
            .bind(concurrency.map(i32::from))
            .bind(terminate_ms)
            .bind(now)
            .bind(by)
            .execute(&mut *tx)
            .await?;
            // The narrower rows' say on the same thing ends here.
            let narrower = match scope {
                Scope::Everywhere => Some("scope <> '' AND $2 = ''"),
                Scope::Host(_) => Some("right(scope, length($2) + 1) = '@' || $2"),
                Scope::Worker(_) => None,
            };
            if let Some(narrower) = narrower {
                sqlx::query(&format!(
                    "UPDATE queue_controls SET \
                     paused = CASE WHEN $3 THEN NULL ELSE paused END, \
                     concurrency = CASE WHEN $4 THEN NULL ELSE concurrency END \
                     WHERE queue = $1 AND ({narrower})"
                ))
                .bind(queue)
                .bind(scope.key())
                .bind(paused.is_some())
                .bind(concurrency.is_some())
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await
        };
        run.await.map_err(self.fail())
    }

    pub(crate) async fn controls(
        &self,
        queue: Option<&str>,
    ) -> Result<Vec<ControlRow>, StoreError> {
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT queue, scope, paused, concurrency, terminate_ms, changed_ms, changed_by \
             FROM queue_controls WHERE $1::text IS NULL OR queue = $1 ORDER BY queue, scope",
        )
        .bind(queue)
        .fetch_all(&self.pool)
        .await
        .map_err(self.fail())?;
        Ok(rows
            .into_iter()
            .map(
                |(queue, scope, paused, concurrency, terminate_ms, changed_ms, changed_by)| {
                    ControlRow {
                        queue,
                        scope,
                        paused,
                        concurrency: concurrency.and_then(|n| u16::try_from(n).ok()),
                        terminate_ms,
                        changed_ms,
                        changed_by,
                    }
                },
            )
            .collect())
    }
}
