//! Flow control keys of a `[tasks."NAME"]`, a `[recipes.NAME]` or `[provision]`: `rate_limit`
//! ("10/m": at most that many starts per second, minute or hour, across every worker sharing
//! the store) and `concurrency_key` ("{host}", a template over the job's values, as a command's
//! elements are) with `key_limit` (how many jobs with the same key may run at once, 1 unless
//! given). Checked here, with the line they were written on.

use std::ops::Range;
use std::sync::Arc;

use indexmap::IndexMap;
use toml::Spanned;

use super::raw::RawCommand;
use super::tasks::{CommandSpec, PROVISION_VALUES, RECIPE_VALUES};
use super::{limits, ConfigError};
use crate::jobs::argv::Element;

/// The most starts a rate may allow in its period.
const MOST_PER_PERIOD: u32 = 1_000_000;

/// A rate limit: `count` starts per `period_ms`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rate {
    /// As written, for the reason a held job shows ("10/m").
    pub text: String,
    pub count: u32,
    pub period_ms: f64,
}

impl Rate {
    /// The time between two starts.
    pub fn interval_ms(&self) -> f64 {
        self.period_ms / f64::from(self.count)
    }

    /// Reads "N/s", "N/m" or "N/h" (N from 1 to a million).
    pub fn parse(text: &str) -> Result<Self, String> {
        let fix = "write it as N/s, N/m or N/h, e.g. \"10/m\"";
        let (n, unit) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?} has no period; {fix}"))?;
        let count: u32 = n
            .trim()
            .parse()
            .ok()
            .filter(|c| (1..=MOST_PER_PERIOD).contains(c))
            .ok_or_else(|| {
                format!(
                    "{text:?}: the count must be a whole number from 1 to {MOST_PER_PERIOD}; {fix}"
                )
            })?;
        let period_ms = match unit.trim() {
            "s" => 1_000.0,
            "m" => 60_000.0,
            "h" => 3_600_000.0,
            other => return Err(format!("{text:?}: unknown period {other:?}; {fix}")),
        };
        Ok(Self {
            text: text.trim().to_string(),
            count,
            period_ms,
        })
    }
}

/// An operator's rate as `celery control rate_limit` takes it (Celery's `rate()`): "N/s",
/// "N/m", "N/h", or a bare N per second; `None` for no limit ("0", "0/m", "None", "").
pub fn parse_celery_rate(text: &str) -> Result<Option<Rate>, String> {
    let t = text.trim();
    let count = t.split_once('/').map_or(t, |(n, _)| n).trim();
    if t.is_empty() || t == "None" || count == "0" {
        return Ok(None);
    }
    if !t.contains('/') {
        return Rate::parse(&format!("{t}/s")).map(Some);
    }
    Rate::parse(t).map(Some)
}

/// A concurrency key: jobs whose `template` renders alike share `limit` slots.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRule {
    pub template: Element,
    pub limit: u32,
}

/// The flow control of one task, recipe or provisioning.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Flow {
    pub rate: Option<Rate>,
    pub key: Option<KeyRule>,
}

/// Every flow control the file sets, by what it applies to.
#[derive(Debug, Clone, Default)]
pub struct FlowRules {
    pub tasks: IndexMap<String, Flow>,
    pub recipes: IndexMap<String, Flow>,
    pub provision: Option<Flow>,
}

impl FlowRules {
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty() && self.recipes.is_empty() && self.provision.is_none()
    }
}

type At<'a> = &'a dyn Fn(Option<Range<usize>>, String) -> ConfigError;

/// The flow rules of `[tasks]` (whose keys may use the task's `params`), `[recipes]` and
/// `[provision]`; tables that set none are left out.
pub(super) fn resolve(
    raw_tasks: &IndexMap<String, Spanned<RawCommand>>,
    tasks: &IndexMap<String, Arc<CommandSpec>>,
    recipes: &Option<IndexMap<String, Spanned<RawCommand>>>,
    provision: &Option<Spanned<RawCommand>>,
    at: At<'_>,
) -> Result<FlowRules, ConfigError> {
    let mut rules = FlowRules::default();
    for (name, t) in raw_tasks {
        let key = format!("tasks.{name:?}");
        let params: Vec<&str> = (tasks.get(name).iter())
            .flat_map(|t| t.params.iter().map(String::as_str))
            .collect();
        if let Some(flow) = one(t.get_ref(), &key, &params, at)? {
            rules.tasks.insert(name.clone(), flow);
        }
    }
    for (name, t) in recipes.iter().flatten() {
        let key = format!("recipes.{name:?}");
        if let Some(flow) = one(t.get_ref(), &key, &RECIPE_VALUES, at)? {
            rules.recipes.insert(name.clone(), flow);
        }
    }
    if let Some(t) = provision {
        rules.provision = one(t.get_ref(), "provision", &PROVISION_VALUES, at)?;
    }
    Ok(rules)
}

/// One table's rules; `values`: the names its key may use.
fn one(
    raw: &RawCommand,
    key: &str,
    values: &[&str],
    at: At<'_>,
) -> Result<Option<Flow>, ConfigError> {
    let rate = match &raw.rate_limit {
        None => None,
        Some(r) => Some(
            Rate::parse(r.get_ref())
                .map_err(|e| at(Some(r.span()), format!("{key}.rate_limit: {e}")))?,
        ),
    };
    let limit = limits::in_range(
        &at,
        &format!("{key}.key_limit"),
        raw.key_limit.as_ref(),
        limits::KEY_LIMIT,
    )?;
    let key_rule = match (&raw.concurrency_key, limit) {
        (None, None) => None,
        (None, Some(_)) => {
            let span = raw.key_limit.as_ref().map(Spanned::span);
            return Err(at(
                span,
                format!("{key}.key_limit: it limits jobs of the same concurrency_key; add concurrency_key = \"{{host}}\" (or remove key_limit)"),
            ));
        }
        (Some(k), limit) => {
            let template = Element::parse(k.get_ref())
                .map_err(|e| at(Some(k.span()), format!("{key}.concurrency_key: {e}")))?;
            if let Some(unknown) = template.placeholders().find(|p| !values.contains(p)) {
                return Err(at(
                    Some(k.span()),
                    format!(
                        "{key}.concurrency_key: {{{unknown}}} has no value here; it can use {}",
                        values
                            .iter()
                            .map(|v| format!("{{{v}}}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
            Some(KeyRule {
                template,
                limit: u32::try_from(limit.unwrap_or(1)).unwrap_or(1),
            })
        }
    };
    Ok((rate.is_some() || key_rule.is_some()).then_some(Flow {
        rate,
        key: key_rule,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_read_per_second_minute_and_hour_and_refuse_the_rest() {
        let r = Rate::parse("6/s").unwrap_or_else(|e| panic!("{e}"));
        assert!((r.interval_ms() - 1000.0 / 6.0).abs() < 1e-9);
        assert_eq!(Rate::parse("10/m").map(|r| r.interval_ms()), Ok(6_000.0));
        assert_eq!(Rate::parse("2/h").map(|r| r.interval_ms()), Ok(1_800_000.0));
        for bad in ["10", "0/s", "-1/s", "1.5/s", "10/d", "x/m", "2000000/s"] {
            assert!(Rate::parse(bad).is_err(), "{bad} was read");
        }
    }

    #[test]
    fn celery_rates_take_a_bare_count_per_second_and_zero_as_no_limit() {
        let per_s = |t: &str| parse_celery_rate(t).map(|r| r.map(|r| r.interval_ms()));
        assert_eq!(per_s("10"), Ok(Some(100.0)));
        assert_eq!(per_s("2/s"), Ok(Some(500.0)));
        assert_eq!(per_s("10/m"), Ok(Some(6_000.0)));
        for off in ["0", "0/m", "None", ""] {
            assert_eq!(per_s(off), Ok(None), "{off:?}");
        }
        for bad in ["x", "10/d", "-1"] {
            assert!(parse_celery_rate(bad).is_err(), "{bad} was read");
        }
    }
}
