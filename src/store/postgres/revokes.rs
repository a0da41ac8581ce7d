//! Revokes: kept in `revokes` for every worker and across restarts, ending at once the jobs no
//! worker holds; read back by the workers' pollers.

use super::{commit, Store};
use crate::store::batch::FoldedHistory;
use crate::store::{Revoke, Revoked, StoreError, REVOKED};

impl Store {
    pub(crate) async fn revoke(
        &self,
        ids: &[String],
        terminate: bool,
        signal: Option<&str>,
        by: &str,
        now: i64,
    ) -> Result<Vec<Revoked>, StoreError> {
        let why = format!("revoked by {by}");
        let run = async {
            let mut tx = self.pool.begin().await?;
            // A repeat without terminate changes nothing; one with it upgrades the revoke and
            // moves it past its old time, so that pollers see it again.
            sqlx::query(
                "INSERT INTO revokes (id, at_ms, terminate, signal, by) \
                 SELECT id, $2, $3, $4, $5 FROM UNNEST($1::text[]) AS r(id) \
                 ON CONFLICT (id) DO UPDATE SET \
                 at_ms = GREATEST(excluded.at_ms, revokes.at_ms + 1), terminate = TRUE, \
                 signal = excluded.signal, by = excluded.by WHERE excluded.terminate",
            )
            .bind(ids)
            .bind(now)
            .bind(terminate)
            .bind(signal)
            .bind(by)
            .execute(&mut *tx)
            .await?;
            // Not yet (or no longer) any worker's: those end here.
            let ended: Vec<String> = sqlx::query_scalar(
                "UPDATE jobs SET state = 'REVOKED', finished_ms = $2, error = $3, \
                 lease_owner = NULL, lease_until = NULL \
                 WHERE id = ANY($1) AND state IN ('PENDING', 'RETRY', 'SCHEDULED') RETURNING id",
            )
            .bind(ids)
            .bind(now)
            .bind(&why)
            .fetch_all(&mut *tx)
            .await?;
            let history: Vec<FoldedHistory<'_>> = ended
                .iter()
                .map(|id| FoldedHistory {
                    job_id: id,
                    state: REVOKED,
                    worker: by,
                    at_ms: now,
                    detail: Some(why.as_str().into()),
                    later: None,
                })
                .collect();
            commit::insert_history(&mut tx, &history).await?;
            let states: Vec<(String, String)> =
                sqlx::query_as("SELECT id, state FROM jobs WHERE id = ANY($1)")
                    .bind(ids)
                    .fetch_all(&mut *tx)
                    .await?;
            tx.commit().await?;
            let mut states: std::collections::HashMap<String, String> =
                states.into_iter().collect();
            Ok(ids
                .iter()
                .map(|id| Revoked {
                    id: id.clone(),
                    state: states.remove(id),
                })
                .collect())
        };
        run.await.map_err(self.fail())
    }

    pub(crate) async fn revokes_since(
        &self,
        after_ms: i64,
        limit: i64,
    ) -> Result<Vec<Revoke>, StoreError> {
        // id, at_ms, terminate, signal, by
        type Row = (String, i64, bool, Option<String>, Option<String>);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT * FROM (SELECT id, at_ms, terminate, signal, by FROM revokes \
             WHERE at_ms > $1 ORDER BY at_ms DESC, id DESC LIMIT $2) AS newest \
             ORDER BY at_ms, id",
        )
        .bind(after_ms)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(self.fail())?;
        Ok(rows
            .into_iter()
            .map(|(id, at_ms, terminate, signal, by)| Revoke {
                id,
                at_ms,
                terminate,
                signal,
                by,
            })
            .collect())
    }
}
