//! A Lamport clock, as kombu keeps one (`kombu.clocks.LamportClock`): every message sent carries
//! the clock moved one tick on, every message received moves it past the sender's. Celery's
//! events and remote-control replies carry it so a monitor can order what several nodes said.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct LamportClock {
    value: AtomicU64,
}

impl LamportClock {
    /// The time now, without moving it.
    pub fn value(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }

    /// One tick on, for a message about to be sent: returns the new time.
    pub fn forward(&self) -> u64 {
        self.value.fetch_add(1, Ordering::Relaxed).wrapping_add(1)
    }

    /// A message stamped `other` arrived: the clock moves to `max(own, other) + 1`.
    pub fn adjust(&self, other: u64) -> u64 {
        let mut seen = self.value();
        loop {
            let next = seen.max(other).saturating_add(1);
            match self
                .value
                .compare_exchange_weak(seen, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(now) => seen = now,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_ticks_once_per_message() {
        let c = LamportClock::default();
        assert_eq!(c.forward(), 1);
        assert_eq!(c.forward(), 2);
        assert_eq!(c.value(), 2);
    }

    #[test]
    fn adjust_moves_past_the_later_of_both_clocks() {
        let c = LamportClock::default();
        assert_eq!(c.adjust(10), 11, "behind the sender: past its time");
        assert_eq!(c.adjust(3), 12, "ahead of the sender: one tick on");
        assert_eq!(c.adjust(0), 13, "a client without a clock sends 0");
        assert_eq!(c.adjust(u64::MAX), u64::MAX, "saturates, never wraps to 0");
    }

    #[test]
    fn adjust_is_safe_from_several_threads() {
        let c = std::sync::Arc::new(LamportClock::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        c.adjust(i);
                    }
                })
            })
            .collect();
        for t in threads {
            let _ = t.join();
        }
        assert_eq!(
            c.value(),
            4000,
            "each adjust moved the clock exactly one past the max"
        );
    }
}
