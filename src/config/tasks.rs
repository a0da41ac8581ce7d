//! Commands jobs run: `[tasks."NAME"]` tables, a recipe's `command`, and `[provision]`.
//!
//! Each is an argv template (never a shell) with its limits. What can be checked before any
//! job arrives is checked here, with the line it was written on: a placeholder the task's
//! `params` do not list, a placeholder a recipe or provisioning has no value for, a task no
//! queue lists, a queue listing a task cm does not know.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexMap;
use toml::Spanned;

use super::limits::{self, in_range};
use super::raw::RawCommand;
use super::{ConfigError, QueueConfig};
use crate::jobs::argv::Template;

/// The tasks cm itself runs (its two simulations, or their commands when configured).
pub const BUILT_IN: [&str; 2] = ["cm.launch", "cm.provision"];
/// The values a recipe's command can use.
pub const RECIPE_VALUES: [&str; 5] = ["server", "recipe", "kind", "host", "user"];
/// The values `[provision] command` can use.
pub const PROVISION_VALUES: [&str; 2] = ["host", "image"];
/// Between TERM and KILL, unless a command says otherwise.
const KILL_GRACE_SECONDS: f64 = 10.0;

/// How a job's command runs.
#[derive(Debug, Clone)]
pub struct CommandSpec {
    pub template: Template,
    /// The task's parameters, positional order; for a recipe or provisioning, the values it has.
    pub params: Vec<String>,
    /// Whether the task named its `params` (else keyword arguments only, named as placeholders).
    pub positional: bool,
    pub time_limit: Option<Duration>,
    pub kill_grace: Duration,
    pub cwd: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    /// A value starting with `-` is refused unless this is true.
    pub allow_options: bool,
    /// What the command leaves running when it exits outlives the job (until its worker next
    /// starts); by default it is stopped when the job ends.
    pub keep_children: bool,
    /// Unique jobs and the retry policy.
    pub policy: super::policy::TaskPolicy,
}

type At<'a> = &'a dyn Fn(Option<Range<usize>>, String) -> ConfigError;

impl CommandSpec {
    /// Builds the spec at `key` (e.g. `tasks."ops.backup"`); `values`: the only names a
    /// placeholder may use (a recipe's, provisioning's), `None` for a task (its `params`).
    pub(super) fn resolve(
        raw: &RawCommand,
        key: &str,
        table: Range<usize>,
        values: Option<&[&str]>,
        base: &Path,
        at: At<'_>,
    ) -> Result<Option<Self>, ConfigError> {
        let Some(command) = &raw.command else {
            if raw.has_policy() {
                return Err(at(
                    Some(table),
                    format!("{key}: unique and retry keys apply to a command; a simulated job has the queue's retries and no unique key"),
                ));
            }
            return Ok(None);
        };
        let template = Template::parse(command.get_ref())
            .map_err(|e| at(Some(command.span()), format!("{key}.command: {e}")))?;
        let placeholders = template.placeholders();
        let (params, positional) = match (&raw.params, values) {
            (Some(p), None) => {
                let names = p.get_ref();
                if let Some(bad) = names.iter().find(|n| !is_identifier(n)) {
                    return Err(at(
                        Some(p.span()),
                        format!(
                            "{key}.params: {bad:?} is not a parameter name (letters, digits, '_')"
                        ),
                    ));
                }
                if let Some(twice) = names
                    .iter()
                    .enumerate()
                    .find_map(|(i, n)| names[..i].contains(n).then_some(n))
                {
                    return Err(at(
                        Some(p.span()),
                        format!("{key}.params: {twice:?} is listed twice"),
                    ));
                }
                if let Some(missing) = placeholders.iter().find(|n| !names.iter().any(|p| p == *n))
                {
                    return Err(at(
                        Some(command.span()),
                        format!(
                            "{key}.command: {{{missing}}} is not in its params [{}]; add it there or change the placeholder",
                            names.join(", ")
                        ),
                    ));
                }
                (names.clone(), true)
            }
            (Some(p), Some(_)) => {
                return Err(at(
                    Some(p.span()),
                    format!(
                        "{key}.params: the values a {key} command has are fixed; remove params"
                    ),
                ))
            }
            (None, Some(allowed)) => {
                if let Some(unknown) = placeholders.iter().find(|n| !allowed.contains(n)) {
                    return Err(at(
                        Some(command.span()),
                        format!(
                            "{key}.command: {{{unknown}}} has no value here; it can use {}",
                            allowed
                                .iter()
                                .map(|a| format!("{{{a}}}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                }
                (allowed.iter().map(|s| s.to_string()).collect(), false)
            }
            (None, None) => (placeholders.iter().map(|s| s.to_string()).collect(), false),
        };
        let time_limit = in_range(
            &at,
            &format!("{key}.time_limit"),
            raw.time_limit.as_ref(),
            limits::TIME_LIMIT,
        )?
        .map(Duration::from_secs_f64);
        let kill_grace = in_range(
            &at,
            &format!("{key}.kill_grace"),
            raw.kill_grace.as_ref(),
            limits::KILL_GRACE,
        )?
        .unwrap_or(KILL_GRACE_SECONDS);
        let env = raw
            .env
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<Vec<_>>();
        if let Some((bad, _)) = env.iter().find(|(k, _)| {
            k.is_empty() || k.contains('=') || k.contains('\0') || k.starts_with("CM_")
        }) {
            return Err(at(
                Some(table),
                format!(
                    "{key}.env: {bad:?} cannot be set (no '=', no NUL; CM_ variables are cm's own)"
                ),
            ));
        }
        let policy = super::policy::resolve(raw, key, &params, at)?;
        Ok(Some(Self {
            policy,
            template,
            params,
            positional,
            time_limit,
            kill_grace: Duration::from_secs_f64(kill_grace),
            cwd: raw.cwd.as_ref().map(|p| {
                if p.is_absolute() {
                    p.clone()
                } else {
                    base.join(p)
                }
            }),
            env,
            allow_options: raw.allow_options.unwrap_or(false),
            keep_children: raw.keep_children.unwrap_or(false),
        }))
    }
}

/// The `[tasks."NAME"]` tables, checked against the queues that list them.
pub(super) fn resolve(
    raw: &IndexMap<String, Spanned<RawCommand>>,
    queues: &[QueueConfig],
    base: &Path,
    at: At<'_>,
) -> Result<IndexMap<String, Arc<CommandSpec>>, ConfigError> {
    let mut tasks = IndexMap::new();
    for (name, table) in raw {
        let key = format!("tasks.{name:?}");
        let t = table.get_ref();
        if BUILT_IN.contains(&name.as_str()) {
            return Err(at(
                Some(table.span()),
                format!("{key}: {name} is cm's own; give it a command with [recipes.NAME] command or [provision] command"),
            ));
        }
        if !valid_task_name(name) {
            return Err(at(
                Some(table.span()),
                format!("{key}: not a task name (letters, digits, '.', '_', '-', ':')"),
            ));
        }
        if t.description.is_some() || t.fail.is_some() {
            return Err(at(
                Some(table.span()),
                format!("{key}: description and fail belong to [recipes.NAME], not to a task"),
            ));
        }
        let Some(spec) = CommandSpec::resolve(t, &key, table.span(), None, base, at)? else {
            return Err(at(
                Some(table.span()),
                format!(
                    "{key}: no command (e.g. command = [\"/usr/local/bin/backup\", \"{{host}}\"])"
                ),
            ));
        };
        if !queues.iter().any(|q| q.tasks.iter().any(|t| t == name)) {
            return Err(at(
                Some(table.span()),
                format!("{key}: no queue lists it; add {name:?} to the tasks of a [queues.NAME]"),
            ));
        }
        tasks.insert(name.clone(), Arc::new(spec));
    }
    Ok(tasks)
}

/// `[recipes.NAME]`: what the launch page offers, each run for real when it has a command.
pub(super) fn recipes(
    raw: &IndexMap<String, Spanned<RawCommand>>,
    base: &Path,
    at: At<'_>,
) -> Result<IndexMap<String, super::Described>, ConfigError> {
    let mut recipes = IndexMap::new();
    for (name, table) in raw {
        let key = format!("recipes.{name:?}");
        let t = table.get_ref();
        let command = CommandSpec::resolve(t, &key, table.span(), Some(&RECIPE_VALUES), base, at)?;
        recipes.insert(
            name.clone(),
            super::Described {
                description: t.description.clone().unwrap_or_default(),
                fail: t.fail.unwrap_or(false),
                command: command.map(Arc::new),
            },
        );
    }
    Ok(recipes)
}

/// `[provision]`: the command provisioning runs, if any.
pub(super) fn provision(
    table: &Spanned<RawCommand>,
    base: &Path,
    at: At<'_>,
) -> Result<Option<Arc<CommandSpec>>, ConfigError> {
    let t = table.get_ref();
    if t.description.is_some() || t.fail.is_some() {
        return Err(at(
            Some(table.span()),
            "provision: description and fail belong to [recipes.NAME]".into(),
        ));
    }
    let spec = CommandSpec::resolve(
        t,
        "provision",
        table.span(),
        Some(&PROVISION_VALUES),
        base,
        at,
    )?;
    if spec.is_none() && t.rate_limit.is_none() && t.concurrency_key.is_none() {
        return Err(at(
            Some(table.span()),
            "provision: no command (e.g. command = [\"/usr/local/bin/provision\", \"{host}\", \"{image}\"])".into(),
        ));
    }
    Ok(spec.map(Arc::new))
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn valid_task_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 200
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':'))
}
