//! Operators' rate limits: see `crate::store::rates`.

use sqlx::{Postgres, Row, Transaction};

use super::Store;
use crate::store::rates::{gate_of, task_of, RateOverride};
use crate::store::StoreError;

impl Store {
    pub(crate) async fn set_rate_override(&self, row: &RateOverride) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO rate_overrides (gate, interval_ms, rate, set_by, set_ms) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (gate) DO UPDATE SET \
             interval_ms = excluded.interval_ms, rate = excluded.rate, \
             set_by = excluded.set_by, set_ms = excluded.set_ms",
        )
        .bind(gate_of(&row.task))
        .bind(row.interval_ms)
        .bind(&row.rate)
        .bind(&row.set_by)
        .bind(row.set_ms)
        .execute(&self.pool)
        .await
        .map_err(self.fail())?;
        Ok(())
    }

    pub(crate) async fn clear_rate_override(
        &self,
        gate: &str,
        configured_ms: f64,
    ) -> Result<bool, StoreError> {
        let run = async {
            let mut tx = self.pool.begin().await?;
            // The gate's row first: an admission holding it finishes before the row goes.
            sqlx::query("UPDATE flow_gates SET interval_ms = $2 WHERE name = $1 AND kind = 'rate'")
                .bind(gate)
                .bind(configured_ms)
                .execute(&mut *tx)
                .await?;
            let n = sqlx::query("DELETE FROM rate_overrides WHERE gate = $1")
                .bind(gate)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            tx.commit().await?;
            Ok(n > 0)
        };
        run.await.map_err(self.fail())
    }

    pub(crate) async fn rate_overrides(&self) -> Result<Vec<RateOverride>, StoreError> {
        let rows = sqlx::query(
            "SELECT gate, interval_ms, rate, set_by, set_ms FROM rate_overrides ORDER BY gate",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(self.fail())?;
        rows.iter()
            .map(|r| {
                let gate: String = r.try_get(0)?;
                Ok(RateOverride {
                    task: task_of(&gate).to_string(),
                    interval_ms: r.try_get(1)?,
                    rate: r.try_get(2)?,
                    set_by: r.try_get(3)?,
                    set_ms: r.try_get(4)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(self.fail())
    }
}

/// The operator's rate at `gate`, read inside a transaction that holds the gate's row lock
/// (READ COMMITTED: this statement sees every override committed before it).
pub(super) async fn override_at(
    tx: &mut Transaction<'_, Postgres>,
    gate: &str,
) -> Result<Option<(f64, String)>, sqlx::Error> {
    let row = sqlx::query("SELECT interval_ms, rate FROM rate_overrides WHERE gate = $1")
        .bind(gate)
        .fetch_optional(&mut **tx)
        .await?;
    row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).transpose()
}
