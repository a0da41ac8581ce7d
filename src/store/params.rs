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

/// Splits `rows` into statements of sizes that recur: `max` rows while that many are left, then
/// the largest power of two that fits. `max` is a power of two, so a batch of any size takes at
/// most log2(`max`) + 1 statement texts, and sqlx's statement cache keeps them all prepared.
/// One statement for exactly the rows at hand had a new text for nearly every batch size: a
/// worker spent 7% of its instructions parsing multi-row statements again (callgrind).
pub(super) fn chunks<T>(rows: &[T], max: usize) -> impl Iterator<Item = &[T]> {
    debug_assert!(max.is_power_of_two());
    let mut rest = rows;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let take = if rest.len() >= max {
            max
        } else {
            1 << rest.len().ilog2()
        };
        let (chunk, tail) = rest.split_at(take);
        rest = tail;
        Some(chunk)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_split_into_a_few_recurring_sizes_in_order() {
        let rows: Vec<u32> = (0..75).collect();
        let sizes: Vec<usize> = chunks(&rows, 32).map(<[u32]>::len).collect();
        assert_eq!(sizes, [32, 32, 8, 2, 1]);
        let back: Vec<u32> = chunks(&rows, 32).flatten().copied().collect();
        assert_eq!(back, rows);
        assert_eq!(chunks::<u32>(&[], 32).count(), 0);
    }

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
