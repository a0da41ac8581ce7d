//! What one tick fires: the slots after the schedule's cursor (the newest slot already dealt
//! with, kept in the store) up to now, by its `catch_up`.
//!
//! A slot is on time when a tick sees it within [`GRACE_MS`]; one older than that passed while
//! no worker ticked (all down, or the store unreachable): it was missed, and `catch_up` says
//! what fires for it. The store applies a plan only if the cursor is still the one it was made
//! from, so of hosts ticking at once one applies it.

use super::{CatchUp, How, Schedule};

/// A slot seen this late is still on time. Ticks come every few hundred ms and at each slot,
/// so only downtime (or a stalled store) makes a slot older than this.
pub const GRACE_MS: i64 = 1000;

/// What a tick does for one schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The slots that fire, oldest first, and why.
    pub fire: Vec<(i64, How)>,
    /// Slots dealt with that fire nothing (counted on /metrics).
    pub missed: u64,
    /// The new cursor: the newest slot due.
    pub cursor: i64,
}

/// The plan for `schedule` whose slots up to `cursor` were dealt with, at `now`; `None` when
/// no slot is due.
pub fn plan(schedule: &Schedule, cursor: i64, now: i64) -> Option<Plan> {
    let newest = match schedule.catch_up {
        CatchUp::All => usize::try_from(schedule.max_catch_up)
            .unwrap_or(usize::MAX)
            .max(1),
        // The newest on time and the newest missed one: GRACE_MS holds at most a few slots.
        CatchUp::Skip | CatchUp::Once => 8,
    };
    let (due, total) = schedule.between(cursor, now, newest);
    let newest_due = *due.last()?;
    let on_time = |slot: &i64| now - *slot <= GRACE_MS;
    let mut fire: Vec<(i64, How)> = Vec::new();
    match schedule.catch_up {
        CatchUp::All => {
            for slot in &due {
                let how = if on_time(slot) {
                    How::OnTime
                } else {
                    How::CatchUp
                };
                fire.push((*slot, how));
            }
        }
        CatchUp::Skip | CatchUp::Once => {
            let late = due.iter().rev().find(|s| !on_time(s));
            if let (CatchUp::Once, Some(slot)) = (schedule.catch_up, late) {
                fire.push((*slot, How::CatchUp));
            }
            fire.extend(due.iter().filter(|s| on_time(s)).map(|s| (*s, How::OnTime)));
        }
    }
    Some(Plan {
        missed: total.saturating_sub(fire.len() as u64),
        fire,
        cursor: newest_due,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::schedules::{Overlap, When};

    fn every(secs: u64, catch_up: CatchUp) -> Schedule {
        Schedule {
            name: "s".into(),
            task: "t".into(),
            queue: "q".into(),
            args: "[[], {}]".into(),
            when: When::Every(Duration::from_secs(secs)),
            timezone: chrono_tz::UTC,
            catch_up,
            max_catch_up: 3,
            overlap: Overlap::Allow,
        }
    }

    #[test]
    fn nothing_due_is_no_plan() {
        let s = every(10, CatchUp::Once);
        assert_eq!(plan(&s, 10_000, 19_999), None);
    }

    #[test]
    fn a_slot_on_time_fires_alone() {
        for catch_up in [CatchUp::Skip, CatchUp::Once, CatchUp::All] {
            let p = plan(&every(10, catch_up), 10_000, 20_050).expect("due");
            assert_eq!(p.fire, vec![(20_000, How::OnTime)], "{catch_up:?}");
            assert_eq!((p.missed, p.cursor), (0, 20_000));
        }
    }

    #[test]
    fn after_downtime_each_catch_up_fires_its_share() {
        // Slots 20..=100 s due at 100.2 s: 100 on time, 20..=90 missed (8 of them).
        let at = |c| plan(&every(10, c), 10_000, 100_200).expect("due");
        let skip = at(CatchUp::Skip);
        assert_eq!(skip.fire, vec![(100_000, How::OnTime)]);
        assert_eq!(skip.missed, 8);
        let once = at(CatchUp::Once);
        assert_eq!(
            once.fire,
            vec![(90_000, How::CatchUp), (100_000, How::OnTime)]
        );
        assert_eq!(once.missed, 7);
        let all = at(CatchUp::All);
        assert_eq!(
            all.fire,
            vec![
                (80_000, How::CatchUp),
                (90_000, How::CatchUp),
                (100_000, How::OnTime)
            ]
        );
        assert_eq!((all.missed, all.cursor), (6, 100_000));
    }

    #[test]
    fn a_late_newest_slot_is_caught_up_not_on_time() {
        let p = plan(&every(10, CatchUp::Skip), 10_000, 25_000).expect("due");
        assert_eq!((p.fire.len(), p.missed, p.cursor), (0, 1, 20_000));
        let p = plan(&every(10, CatchUp::Once), 10_000, 25_000).expect("due");
        assert_eq!(p.fire, vec![(20_000, How::CatchUp)]);
    }
}
