//! Revokes: kept in `revokes` for every worker and across restarts, ending at once the jobs no
//! worker holds; read back by the workers' pollers.

use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::{commit, counts, Store};
use crate::store::requests::Revoking;
use crate::store::{Revoke, Revoked, StoreError};

impl Store {
    pub(crate) async fn revoke(&self, r: &Revoking) -> Result<Vec<Revoked>, StoreError> {
        let r = r.clone();
        self.pool
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let mut answers = Vec::with_capacity(r.ids.len());
                let mut ended = Vec::new();
                {
                    // A repeat without terminate changes nothing; one with it upgrades the
                    // revoke and moves it past its old time, so that pollers see it again.
                    let mut keep = tx.prepare_cached(
                        "INSERT INTO revokes (id, at_ms, terminate, signal, by) \
                         VALUES (?1, ?2, ?3, ?4, ?5) \
                         ON CONFLICT (id) DO UPDATE SET \
                         at_ms = MAX(excluded.at_ms, revokes.at_ms + 1), terminate = 1, \
                         signal = excluded.signal, by = excluded.by WHERE excluded.terminate",
                    )?;
                    // Not yet (or no longer) any worker's: it ends here.
                    let mut end = tx.prepare_cached(
                        "UPDATE jobs SET state = 'REVOKED', finished_ms = ?1, error = ?2, \
                         lease_owner = NULL, lease_until = NULL \
                         WHERE id = ?3 AND (state = 'PENDING' OR state = 'RETRY' OR state = 'SCHEDULED' \
                         OR state = 'WAITING' OR state = 'THROTTLED')",
                    )?;
                    let mut state_of = tx.prepare_cached("SELECT state FROM jobs WHERE id = ?1")?;
                    for id in &r.ids {
                        keep.execute(params![id, r.at_ms, r.terminate, r.signal, r.by])?;
                        if end.execute(params![r.at_ms, r.why, id])? > 0 {
                            ended.push(id);
                        }
                        let state = state_of.query_row([id], |r| r.get(0)).optional()?;
                        answers.push(Revoked {
                            id: id.clone(),
                            state,
                        });
                    }
                }
                commit::insert_history(&tx, &r.history(&ended))?;
                counts::fold_counts_if_long(&tx)?;
                tx.commit()?;
                Ok(answers)
            })
            .await
    }

    pub(crate) async fn revokes_since(
        &self,
        after_ms: i64,
        limit: i64,
    ) -> Result<Vec<Revoke>, StoreError> {
        self.pool
            .run(move |conn| {
                let mut st = conn.prepare_cached(
                    "SELECT * FROM (SELECT id, at_ms, terminate, signal, by FROM revokes \
                     WHERE at_ms > ?1 ORDER BY at_ms DESC, id DESC LIMIT ?2) ORDER BY at_ms, id",
                )?;
                let rows = st.query_map(params![after_ms, limit], |r| {
                    Ok(Revoke {
                        id: r.get(0)?,
                        at_ms: r.get(1)?,
                        terminate: r.get(2)?,
                        signal: r.get(3)?,
                        by: r.get(4)?,
                    })
                })?;
                rows.collect()
            })
            .await
    }
}
