//! Rate limits and concurrency keys on the worker's side (issue 31): which gates a job passes (its task's, recipe's
//! or provisioning's `rate_limit` and `concurrency_key`), and the releaser: every
//! [`RELEASE_POLL`], each session grants the jobs of its queue held THROTTLED at a gate the
//! places the gate has free, and publishes them again. The store decides (`store::flow`); of
//! workers racing at one gate, each grant is one transaction on its row.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use tracing::warn;

use super::context::SessionContext;
use super::flow::rates::KnownRates;
use super::lease::millis;
use crate::config::flow::{Flow, KeyRule};
use crate::config::Config;
use crate::jobs::args::Bound;
use crate::jobs::{self, Job};
use crate::store;
use crate::store::flow::{Gate, Rule};
use crate::store::rates::{self, RateOverride};

/// How often a releaser looks at its queue's held jobs: a held job starts at most about this
/// late after its place frees (the store's rate allows for it, `store::flow::CATCH_UP_MS`).
const RELEASE_POLL: Duration = Duration::from_millis(100);
/// Jobs granted per gate per look; more wait for the next.
const RELEASE_BATCH: i64 = 100;

/// The gates `job` passes before it may start: none for a job whose task sets no flow control
/// and has no operator's rate (the usual case, which costs no store round trip).
pub(super) fn gates(cfg: &Config, rates: &KnownRates, job: &Job) -> Vec<Gate> {
    if cfg.flow.is_empty() && !rates.any() {
        return Vec::new();
    }
    let (flow, rate_name, values) = match job {
        Job::Task(t) => {
            let over = rates.of(&t.name);
            match (cfg.flow.tasks.get(&t.name), over) {
                (None, None) => return Vec::new(),
                (Some(flow), None) => (Cow::Borrowed(flow), t.name.clone(), t.values.clone()),
                (flow, Some(over)) => {
                    let flow = flow.cloned().unwrap_or_default();
                    return overridden(of_flow(&flow, &t.name, &t.values), &over);
                }
            }
        }
        Job::Launch(l) => match cfg.flow.recipes.get(&l.recipe) {
            Some(f) => (
                Cow::Borrowed(f),
                format!("{} recipe {}", jobs::LAUNCH, l.recipe),
                Bound::of(l.values()),
            ),
            None => return Vec::new(),
        },
        Job::Provision(p) => match &cfg.flow.provision {
            Some(f) => (
                Cow::Borrowed(f),
                jobs::PROVISION.to_string(),
                Bound::of(p.values()),
            ),
            None => return Vec::new(),
        },
        Job::Unfit { .. } => return Vec::new(),
    };
    of_flow(&flow, &rate_name, &values)
}

/// A task's gates with an operator's rate in place of its configured one: none for "off".
/// (The store reads the operator's row again at the gate: this only decides whether to ask.)
fn overridden(mut gates: Vec<Gate>, over: &RateOverride) -> Vec<Gate> {
    let name = rates::gate_of(&over.task);
    gates.retain(|g| g.name != name);
    if !over.is_off() {
        gates.push(Gate {
            name,
            rule: Rule::Rate {
                interval_ms: over.interval_ms,
            },
            reason: rates::reason(&over.task, &over.rate),
        });
    }
    gates
}

fn of_flow(flow: &Flow, rate_name: &str, values: &Bound) -> Vec<Gate> {
    let mut gates = Vec::with_capacity(2);
    if let Some(rate) = &flow.rate {
        gates.push(Gate {
            name: format!("rate:{rate_name}"),
            rule: Rule::Rate {
                interval_ms: rate.interval_ms(),
            },
            reason: format!("rate limit {} of {rate_name}", rate.text),
        });
    }
    if let Some(key) = flow.key.as_ref().and_then(|k| key_gate(k, values)) {
        gates.push(key);
    }
    gates
}

/// The gate of `key` for these values. A value its template needs that the job lacks (an
/// optional parameter left out) leaves the job unkeyed: there is no key to share.
fn key_gate(key: &KeyRule, values: &Bound) -> Option<Gate> {
    let value = key.template.render(values, true).ok()?;
    let mut names = key.template.placeholders();
    // "{host}" alone reads as "key host=h1"; a longer template as what it renders.
    let shown = match (names.next(), names.next()) {
        (Some(name), None) if value == values.get(name).unwrap_or_default() => {
            format!("{name}={value}")
        }
        _ => value.clone(),
    };
    Some(Gate {
        name: format!("key:{value}"),
        rule: Rule::Key {
            slots: i64::from(key.limit),
        },
        reason: format!("key {shown}"),
    })
}

/// Grants and publishes again the held jobs of this session's queue, every [`RELEASE_POLL`],
/// until the session ends. Asks the store only while the config sets flow control, an
/// operator's rate is known, or jobs were held at the last look.
pub(super) async fn release(ctx: Arc<SessionContext>) {
    let w = &*ctx.worker;
    let mut failing = false;
    // Jobs held before this session (by an operator's rate since lifted, say) are looked for
    // once; then only while a rule or held jobs are known.
    let mut held_seen = true;
    loop {
        tokio::time::sleep(RELEASE_POLL).await;
        if w.cfg.flow.is_empty() && !w.remote.flow.rates.any() && !held_seen {
            continue;
        }
        let gates = match w.store.held_gates(&w.queue.name).await {
            Ok(g) => {
                held_seen = !g.is_empty();
                g
            }
            Err(e) => {
                if !failing {
                    warn!("looking for throttled jobs on queue {}: {e}", w.queue.name);
                }
                failing = true;
                continue;
            }
        };
        failing = false;
        for gate in gates {
            let until = store::now_ms().saturating_add(millis(w.cfg.lease));
            let granted = w
                .store
                .release_held(&gate, &w.queue.name, &w.node, until, RELEASE_BATCH)
                .await;
            match granted {
                Ok(rows) => {
                    for row in rows {
                        let why = format!("its turn at {}", shown(&gate));
                        super::republish::publish_again(&ctx, &row, &why).await;
                    }
                }
                Err(e) => warn!("releasing the jobs held at {gate}: {e}"),
            }
        }
    }
}

/// A gate's name as a log line reads it.
fn shown(gate: &str) -> String {
    match gate.split_once(':') {
        Some(("rate", what)) => format!("the rate limit of {what}"),
        Some(("key", key)) => format!("key {key}"),
        _ => gate.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::flow::Rate;
    use crate::jobs::argv::Element;

    #[test]
    fn a_flow_makes_a_rate_gate_and_a_key_gate_from_the_jobs_values() {
        let flow = Flow {
            rate: Rate::parse("6/s").ok(),
            key: Element::parse("{host}")
                .ok()
                .map(|template| KeyRule { template, limit: 2 }),
        };
        let values = Bound::of([("host", "h1".to_string())]);
        let gates = of_flow(&flow, "ops.deploy", &values);
        assert_eq!(gates.len(), 2);
        assert_eq!(gates[0].name, "rate:ops.deploy");
        assert_eq!(gates[0].reason, "rate limit 6/s of ops.deploy");
        assert_eq!(gates[1].name, "key:h1");
        assert_eq!(gates[1].reason, "key host=h1");
        assert_eq!(gates[1].rule, Rule::Key { slots: 2 });
        // A key over several values reads as it renders; one lacking a value makes no gate.
        let key = KeyRule {
            template: Element::parse("{host}/{disk}").unwrap_or_else(|e| panic!("{e}")),
            limit: 1,
        };
        assert_eq!(key_gate(&key, &values), None);
        let both = Bound::of([("host", "h1".to_string()), ("disk", "sda".to_string())]);
        assert_eq!(
            key_gate(&key, &both).map(|g| g.reason),
            Some("key h1/sda".into())
        );
    }

    #[test]
    fn an_operators_rate_replaces_the_configs_and_off_leaves_the_key_alone() {
        let flow = Flow {
            rate: Rate::parse("100/s").ok(),
            key: Element::parse("{host}")
                .ok()
                .map(|template| KeyRule { template, limit: 1 }),
        };
        let values = Bound::of([("host", "h1".to_string())]);
        let over = |interval_ms: f64, rate: &str| RateOverride {
            task: "ops.deploy".into(),
            interval_ms,
            rate: rate.into(),
            set_by: "ops".into(),
            set_ms: 0,
        };
        let gates = overridden(of_flow(&flow, "ops.deploy", &values), &over(500.0, "2/s"));
        let names: Vec<&str> = gates.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["key:h1", "rate:ops.deploy"]);
        assert_eq!(gates[1].rule, Rule::Rate { interval_ms: 500.0 });
        assert_eq!(
            gates[1].reason,
            "rate limit 2/s of ops.deploy (set by an operator)"
        );
        let off = overridden(of_flow(&flow, "ops.deploy", &values), &over(0.0, "off"));
        assert_eq!(off.len(), 1);
        assert_eq!(off[0].name, "key:h1");
        // A task the config leaves unlimited gets the operator's rate gate alone.
        let bare = overridden(
            of_flow(&Flow::default(), "ops.deploy", &values),
            &over(500.0, "2/s"),
        );
        assert_eq!(bare.len(), 1);
    }
}
