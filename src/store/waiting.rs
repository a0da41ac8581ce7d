//! Why a job that has not started waits, in words, for every reader (`cm jobs show`, the job
//! page, `/api/jobs`): a rate limit or a key held by another job (THROTTLED, as its gate said
//! when it held it), the jobs it runs after (WAITING), the worker that holds it unstarted
//! (RECEIVED: prefetched while every job slot of that worker is busy), or its queue paused
//! (PENDING). Worked out when read, from what the store holds: nothing more is written on a
//! job's way for it.

use std::collections::{BTreeMap, BTreeSet};

use super::controls::ControlRow;
use super::{is_final, Backend, JobRow, Store, StoreError, PENDING, RECEIVED, SUCCESS, WAITING};

/// Parents named in a WAITING job's reason; the rest are counted.
const PARENTS_NAMED: usize = 3;

impl Store {
    /// Sets each row's `waits_for` to why it waits, or to `None` when it waits for nothing
    /// (it runs, or it ended). Two reads at most for the whole slice: the queues' orders, and
    /// the WAITING rows' parents.
    pub async fn explain_waits(&self, rows: &mut [JobRow]) -> Result<(), StoreError> {
        let controls = if rows.iter().any(|r| r.state == PENDING) {
            self.controls(None).await?
        } else {
            Vec::new()
        };
        let waiting: Vec<String> = (rows.iter())
            .filter(|r| r.state == WAITING)
            .map(|r| r.job.id.clone())
            .collect();
        let parents = self.unmet_parents(&waiting).await?;
        for row in rows.iter_mut() {
            let stored = row.waits_for.take();
            row.waits_for = match row.state.as_str() {
                super::THROTTLED => stored,
                RECEIVED => row
                    .worker
                    .as_ref()
                    .map(|w| format!("held by worker {w}: received, every job slot of it busy")),
                WAITING => parents.get(&row.job.id).map(|p| after(p)),
                PENDING => paused(&controls, &row.job.queue),
                _ => None,
            };
        }
        Ok(())
    }

    /// For each of `children`, the parents it still waits for: those not ended as their edge
    /// asks (`after`: SUCCESS; `after_any`: any final state), with their states.
    async fn unmet_parents(
        &self,
        children: &[String],
    ) -> Result<BTreeMap<String, Vec<(String, String)>>, StoreError> {
        let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
        if children.is_empty() {
            return Ok(out);
        }
        let asked: BTreeSet<&str> = children.iter().map(String::as_str).collect();
        let edges: Vec<_> = (on_backend!(self, b => b.edges_touching(children).await)?)
            .into_iter()
            .filter(|e| asked.contains(e.child.as_str()) && e.mode != "canvas")
            .collect();
        let ids: Vec<String> = edges.iter().map(|e| e.parent.clone()).collect();
        let states = self.briefs(&ids).await?;
        for e in edges {
            let state = states
                .get(&e.parent)
                .map_or("unknown", |b| b.state.as_str());
            let met = match e.mode.as_str() {
                "after_any" => is_final(state),
                _ => state == SUCCESS,
            };
            if !met {
                out.entry(e.child)
                    .or_default()
                    .push((e.parent, state.to_string()));
            }
        }
        Ok(out)
    }
}

/// "after job A (STARTED), job B (PENDING) and 4 more".
fn after(parents: &[(String, String)]) -> String {
    let named: Vec<String> = (parents.iter().take(PARENTS_NAMED))
        .map(|(id, state)| format!("job {id} ({state})"))
        .collect();
    let mut text = format!("after {}", named.join(", "));
    if parents.len() > PARENTS_NAMED {
        text.push_str(&format!(" and {} more", parents.len() - PARENTS_NAMED));
    }
    text
}

/// Why a PENDING job of `queue` waits because of a pause, if it does: the queue paused
/// everywhere (but where a narrower order resumed it), or on some hosts or workers only.
fn paused(controls: &[ControlRow], queue: &str) -> Option<String> {
    let rows: Vec<&ControlRow> = controls.iter().filter(|r| r.queue == queue).collect();
    let everywhere = rows.iter().find(|r| r.scope.is_empty());
    let narrower = |paused: bool| -> Vec<&str> {
        (rows.iter())
            .filter(|r| !r.scope.is_empty() && r.paused == Some(paused))
            .map(|r| r.scope.as_str())
            .collect()
    };
    if let Some(all) = everywhere.filter(|r| r.paused == Some(true)) {
        let since = crate::output::utc_seconds(all.changed_ms).unwrap_or_default();
        let resumed = narrower(false);
        let but = if resumed.is_empty() {
            String::new()
        } else {
            format!(" (but on {})", resumed.join(", "))
        };
        return Some(format!(
            "queue {queue} paused by {} since {since}{but}",
            all.changed_by
        ));
    }
    let on = narrower(true);
    (!on.is_empty()).then(|| format!("queue {queue} paused on {}", on.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn control(scope: &str, paused: Option<bool>) -> ControlRow {
        ControlRow {
            queue: "q".into(),
            scope: scope.into(),
            paused,
            concurrency: None,
            terminate_ms: None,
            changed_ms: 0,
            changed_by: "ops@h".into(),
        }
    }

    #[test]
    fn a_pause_everywhere_names_who_and_where_it_was_lifted() {
        let rows = [control("", Some(true)), control("h2", Some(false))];
        let why = paused(&rows, "q").expect("paused");
        assert!(why.starts_with("queue q paused by ops@h since "), "{why}");
        assert!(why.ends_with("(but on h2)"), "{why}");
        assert_eq!(paused(&rows, "other"), None);
    }

    #[test]
    fn a_pause_on_some_hosts_says_which_and_a_resume_says_nothing() {
        let rows = [control("", Some(false)), control("w@h1", Some(true))];
        assert_eq!(
            paused(&rows, "q").as_deref(),
            Some("queue q paused on w@h1")
        );
        assert_eq!(paused(&[control("", Some(false))], "q"), None);
        assert_eq!(paused(&[control("", None)], "q"), None);
    }

    #[test]
    fn many_parents_are_named_up_to_three_then_counted() {
        let p = |i: usize| (format!("p{i}"), "STARTED".to_string());
        assert_eq!(after(&[p(1)]), "after job p1 (STARTED)");
        let five: Vec<_> = (1..=5).map(p).collect();
        assert_eq!(
            after(&five),
            "after job p1 (STARTED), job p2 (STARTED), job p3 (STARTED) and 2 more"
        );
    }
}
