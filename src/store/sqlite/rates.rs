//! Operators' rate limits: see `crate::store::rates`.

use rusqlite::{params, OptionalExtension, Transaction, TransactionBehavior};

use super::Store;
use crate::store::rates::{gate_of, task_of, RateOverride};
use crate::store::StoreError;

impl Store {
    pub(crate) async fn set_rate_override(&self, row: &RateOverride) -> Result<(), StoreError> {
        let row = row.clone();
        self.pool
            .run(move |conn| {
                conn.prepare_cached(
                    "INSERT INTO rate_overrides (gate, interval_ms, rate, set_by, set_ms) \
                     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (gate) DO UPDATE SET \
                     interval_ms = excluded.interval_ms, rate = excluded.rate, \
                     set_by = excluded.set_by, set_ms = excluded.set_ms",
                )?
                .execute(params![
                    gate_of(&row.task),
                    row.interval_ms,
                    row.rate,
                    row.set_by,
                    row.set_ms
                ])?;
                Ok(())
            })
            .await
    }

    pub(crate) async fn clear_rate_override(
        &self,
        gate: &str,
        configured_ms: f64,
    ) -> Result<bool, StoreError> {
        let gate = gate.to_string();
        self.pool
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let n = tx
                    .prepare_cached("DELETE FROM rate_overrides WHERE gate = ?1")?
                    .execute([&gate])?;
                tx.prepare_cached(
                    "UPDATE flow_gates SET interval_ms = ?2 WHERE name = ?1 AND kind = 'rate'",
                )?
                .execute(params![gate, configured_ms])?;
                tx.commit()?;
                Ok(n > 0)
            })
            .await
    }

    pub(crate) async fn rate_overrides(&self) -> Result<Vec<RateOverride>, StoreError> {
        self.pool
            .run(move |conn| {
                let mut st = conn.prepare_cached(
                    "SELECT gate, interval_ms, rate, set_by, set_ms FROM rate_overrides \
                     ORDER BY gate",
                )?;
                let rows = st.query_map([], |r| {
                    let gate: String = r.get(0)?;
                    Ok(RateOverride {
                        task: task_of(&gate).to_string(),
                        interval_ms: r.get(1)?,
                        rate: r.get(2)?,
                        set_by: r.get(3)?,
                        set_ms: r.get(4)?,
                    })
                })?;
                rows.collect()
            })
            .await
    }
}

/// The operator's rate at `gate`, read inside a transaction that holds the gate: its interval
/// and how it reads.
pub(super) fn override_at(
    tx: &Transaction<'_>,
    gate: &str,
) -> rusqlite::Result<Option<(f64, String)>> {
    tx.prepare_cached("SELECT interval_ms, rate FROM rate_overrides WHERE gate = ?1")?
        .query_row([gate], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
}
