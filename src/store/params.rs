//! Bind placeholders for the multi-row statements, in each backend's cheapest form.
//!
//! PostgreSQL numbers its parameters (`$1`). SQLite reads `$1` as a *named* parameter, and
//! binding by name walks a list of all names per parameter: quadratic in the row count. With
//! hundreds of rows per INSERT that was a fifth of a worker's CPU (perf), so SQLite gets
//! anonymous `?`, bound by position.

/// Hands out the next placeholders of one statement.
pub(super) struct Params {
    sqlite: bool,
    next: usize,
}

impl Params {
    /// For a statement on `conn`'s backend.
    pub(super) fn for_conn(conn: &sqlx::AnyConnection) -> Self {
        Self::new(conn.backend_name() == "SQLite")
    }

    pub(super) fn new(sqlite: bool) -> Self {
        Self { sqlite, next: 1 }
    }

    /// `n` placeholders separated by commas: `?, ?` or `$3, $4`.
    pub(super) fn list(&mut self, n: usize) -> String {
        let mut out = String::with_capacity(n * 4);
        for i in 0..n {
            if i > 0 {
                out.push_str(", ");
            }
            if self.sqlite {
                out.push('?');
            } else {
                out.push('$');
                out.push_str(&self.next.to_string());
            }
            self.next += 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_numbers_on_across_calls_and_sqlite_stays_positional() {
        let mut pg = Params::new(false);
        assert_eq!(pg.list(2), "$1, $2");
        assert_eq!(pg.list(3), "$3, $4, $5");
        let mut lite = Params::new(true);
        assert_eq!(lite.list(3), "?, ?, ?");
        assert_eq!(lite.list(1), "?");
    }
}
