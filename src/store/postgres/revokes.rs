//! Revokes: kept in `revokes` for every worker and across restarts, ending at once the jobs no
//! worker holds; read back by the workers' pollers.

use super::{commit, Store};
use crate::store::requests::Revoking;
use crate::store::{Revoke, Revoked, StoreError};

impl Store {
    pub(crate) async fn revoke(&self, r: &Revoking) -> Result<Vec<Revoked>, StoreError> {
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
            .bind(&r.ids)
            .bind(r.at_ms)
            .bind(r.terminate)
            .bind(&r.signal)
            .bind(&r.by)
            .execute(&mut *tx)
            .await?;
            // Not yet (or no longer) any worker's: those end here.
            let ended: Vec<String> = sqlx::query_scalar(
                "UPDATE jobs SET state = 'REVOKED', finished_ms = $2, error = $3, \
                 lease_owner = NULL, lease_until = NULL \
                 WHERE id = ANY($1) AND state IN ('PENDING', 'RETRY', 'SCHEDULED', 'WAITING', 'THROTTLED') \
                 RETURNING id",
            )
            .bind(&r.ids)
            .bind(r.at_ms)
            .bind(&r.why)
            .fetch_all(&mut *tx)
            .await?;
            commit::insert_history(&mut tx, &r.history(&ended)).await?;
            let states: Vec<(String, String)> =
                sqlx::query_as("SELECT id, state FROM jobs WHERE id = ANY($1)")
                    .bind(&r.ids)
                    .fetch_all(&mut *tx)
                    .await?;
            tx.commit().await?;
            let mut states: std::collections::HashMap<String, String> =
                states.into_iter().collect();
            Ok(r.ids
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
