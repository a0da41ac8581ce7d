//! Fair dispatch: what a worker prefetches, and when it hands prefetched jobs back.
//!
//! A worker prefetches `prefetch` deliveries so that the next job is at hand while one is
//! acked; millisecond jobs need that (figure 4 of docs/BENCHMARKS.md: prefetch 1 cost 3×). But
//! a prefetched job waits behind whatever holds this worker's slots, while another worker of the
//! queue may sit idle. So when every slot stays busy for longer than `hand_back_after` (a job
//! that is not quick), the session cancels its consumer, hands the unstarted deliveries back to
//! the queue (idle workers take them at once), and once a slot frees consumes again with the
//! prefetch lowered to its concurrency: it then holds no job it cannot start. After
//! [`QUICK_STREAK`] jobs in a row that freed their slot within `hand_back_after`, it goes back to
//! the full prefetch. Jobs that swing between quick and slow would make it hand its whole
//! prefetch back at every swing (each a round trip of every prefetched message, and on a quorum
//! queue one more in its delivery count): a hand back soon after a raise doubles the streak the
//! next raise needs (up to [`MAX_STREAK`]); one long after it starts again from [`QUICK_STREAK`]. RabbitMQ fixes a consumer's prefetch when it starts consuming (a later
//! `basic.qos` applies to new consumers only), so each change is a cancel and a new consume.
//!
//! This module decides; the session (`session.rs`) does the cancelling and consuming.

use std::time::Duration;

/// Jobs in a row that freed their slot quickly, after which the full prefetch comes back.
const QUICK_STREAK: u32 = 8;
/// The longest streak a swinging worker waits for.
const MAX_STREAK: u32 = 4096;

/// One session's prefetch and what it has seen of its jobs' lengths.
#[derive(Debug)]
pub(super) struct Pace {
    full: u16,
    low: u16,
    /// `None`: never hand back (`hand_back_after_ms = 0`).
    hand_back_after: Option<Duration>,
    lowered: bool,
    quick: u32,
    /// The streak the next raise needs.
    needed: u32,
    /// Slots taken since the last raise (`u32::MAX`: none yet).
    since_raise: u32,
}

/// What the session should do after a slot was waited for.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Change {
    Keep,
    /// Consume again with the full prefetch.
    Raise,
}

impl Pace {
    /// `prefetch` and `concurrency` as configured; `hand_back_after` of zero turns handing back
    /// off.
    pub(super) fn new(prefetch: u16, concurrency: u16, hand_back_after: Duration) -> Self {
        Self {
            full: prefetch,
            low: concurrency.min(prefetch),
            hand_back_after: (!hand_back_after.is_zero()).then_some(hand_back_after),
            lowered: false,
            quick: 0,
            needed: QUICK_STREAK,
            since_raise: u32::MAX,
        }
    }

    /// The prefetch to consume with now.
    pub(super) fn prefetch(&self) -> u16 {
        if self.lowered {
            self.low
        } else {
            self.full
        }
    }

    /// How long every slot may stay busy before the prefetched jobs go back; `None`: they never
    /// do, because there is none to hand back (the prefetch is its concurrency) or it is off.
    pub(super) fn patience(&self) -> Option<Duration> {
        self.hand_back_after.filter(|_| self.prefetch() > self.low)
    }

    /// The session handed its unstarted deliveries back: it consumes again holding no more
    /// than it can start.
    pub(super) fn handed_back(&mut self) {
        self.needed = if self.since_raise < self.needed.saturating_mul(4) {
            self.needed.saturating_mul(2).min(MAX_STREAK)
        } else {
            QUICK_STREAK
        };
        self.lowered = true;
        self.quick = 0;
    }

    /// A slot was free after `waited`. While lowered, a streak of quick ones brings the full
    /// prefetch back.
    pub(super) fn slot_taken(&mut self, waited: Duration) -> Change {
        let Some(after) = self.hand_back_after else {
            return Change::Keep;
        };
        if !self.lowered {
            self.since_raise = self.since_raise.saturating_add(1);
            return Change::Keep;
        }
        if waited >= after {
            self.quick = 0;
            return Change::Keep;
        }
        self.quick += 1;
        if self.quick < self.needed {
            return Change::Keep;
        }
        self.lowered = false;
        self.quick = 0;
        self.since_raise = 0;
        Change::Raise
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOMENT: Duration = Duration::from_millis(50);

    #[test]
    fn a_handed_back_session_holds_only_what_it_can_start_until_jobs_are_quick_again() {
        let mut pace = Pace::new(4, 1, MOMENT);
        assert_eq!(pace.prefetch(), 4);
        assert_eq!(pace.patience(), Some(MOMENT));
        pace.handed_back();
        assert_eq!(pace.prefetch(), 1);
        assert_eq!(pace.patience(), None, "nothing unstarted to hand back");
        for _ in 1..QUICK_STREAK {
            assert_eq!(pace.slot_taken(Duration::from_millis(2)), Change::Keep);
        }
        // A slow one in the streak starts it again.
        assert_eq!(pace.slot_taken(MOMENT), Change::Keep);
        for _ in 1..QUICK_STREAK {
            assert_eq!(pace.slot_taken(Duration::ZERO), Change::Keep);
        }
        assert_eq!(pace.slot_taken(Duration::ZERO), Change::Raise);
        assert_eq!(pace.prefetch(), 4);
    }

    #[test]
    fn a_worker_whose_jobs_swing_waits_longer_each_time_before_raising_again() {
        let mut pace = Pace::new(256, 1, MOMENT);
        let raise_after = |pace: &mut Pace| {
            let mut n = 0;
            while pace.slot_taken(Duration::ZERO) == Change::Keep {
                n += 1;
            }
            n + 1
        };
        pace.handed_back();
        assert_eq!(raise_after(&mut pace), QUICK_STREAK);
        // A slow job right after the raise: a swing.
        assert_eq!(pace.slot_taken(MOMENT), Change::Keep);
        pace.handed_back();
        assert_eq!(raise_after(&mut pace), 2 * QUICK_STREAK);
        pace.handed_back();
        assert_eq!(raise_after(&mut pace), 4 * QUICK_STREAK);
        // A long quiet run at the full prefetch: the next hand back starts over.
        for _ in 0..10_000 {
            assert_eq!(pace.slot_taken(Duration::ZERO), Change::Keep);
        }
        pace.handed_back();
        assert_eq!(raise_after(&mut pace), QUICK_STREAK);
    }

    #[test]
    fn zero_turns_it_off_and_a_prefetch_of_its_concurrency_has_nothing_to_hand_back() {
        let mut off = Pace::new(4, 1, Duration::ZERO);
        assert_eq!(off.patience(), None);
        assert_eq!(off.slot_taken(Duration::ZERO), Change::Keep);
        let tight = Pace::new(2, 2, MOMENT);
        assert_eq!(tight.patience(), None);
    }
}
