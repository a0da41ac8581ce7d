//! Binding a message's `[args, kwargs]` to a task's named parameters, as Python binds a call:
//! positional values fill the parameters in order, keywords by name. What does not fit (too
//! many positional values, an unknown keyword, a name given twice, a required one missing, a
//! value of the wrong type) is an error in Python's words, and the job ends FAILURE with it.

use std::borrow::Cow;

use serde_json::{Map, Value};

/// One parameter of a task.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    /// Borrowed for cm's own tasks, whose parameters are constants: binding their jobs copies
    /// no names.
    pub name: Cow<'static, str>,
    pub required: bool,
}

impl Param {
    pub const fn required(name: &'static str) -> Self {
        Self {
            name: Cow::Borrowed(name),
            required: true,
        }
    }

    pub const fn optional(name: &'static str) -> Self {
        Self {
            name: Cow::Borrowed(name),
            required: false,
        }
    }

    /// A parameter named at run time (a configured task's).
    pub fn named(name: &str, required: bool) -> Self {
        Self {
            name: Cow::Owned(name.to_string()),
            required,
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ArgsError {
    #[error("{task}() takes {most} positional argument(s) but {given} were given")]
    TooMany {
        task: String,
        most: usize,
        given: usize,
    },
    #[error("{task}() got an unexpected keyword argument '{name}'")]
    UnknownKeyword { task: String, name: String },
    #[error("{task}() got multiple values for argument '{name}'")]
    Twice { task: String, name: String },
    #[error("{task}() missing required argument '{name}'")]
    Missing { task: String, name: String },
    #[error("{task}() argument '{name}' must be a string, a number or a boolean, not {got}")]
    WrongType {
        task: String,
        name: String,
        got: &'static str,
    },
}

/// The values of a call, by parameter, in the parameters' order; `None` where none was given.
#[derive(Debug, Clone, PartialEq)]
pub struct Bound {
    values: Vec<(Cow<'static, str>, Option<String>)>,
}

impl Bound {
    /// The text of parameter `name`, if it was given (and is not null).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
    }

    /// Like [`Bound::get`], owned.
    pub fn text(&self, name: &str) -> Option<String> {
        self.get(name).map(str::to_string)
    }

    /// Values given by name, every one present (what a recipe's or provisioning's command has).
    pub fn of(pairs: impl IntoIterator<Item = (&'static str, String)>) -> Self {
        Self {
            values: pairs
                .into_iter()
                .map(|(name, value)| (Cow::Borrowed(name), Some(value)))
                .collect(),
        }
    }

    /// `name=value` words, for the worker's log line.
    pub fn describe(&self) -> String {
        let words: Vec<String> = self
            .values
            .iter()
            .filter_map(|(n, v)| Some(format!("{n}={}", v.as_deref()?)))
            .collect();
        words.join(" ")
    }
}

/// Binds `args` and `kwargs` to `params` for `task`. Values are text: a string as it is, a
/// number or a boolean as JSON writes it; null counts as not given.
pub fn bind(
    task: &str,
    params: &[Param],
    args: &[Value],
    kwargs: &Map<String, Value>,
) -> Result<Bound, ArgsError> {
    if args.len() > params.len() {
        return Err(ArgsError::TooMany {
            task: task.to_string(),
            most: params.len(),
            given: args.len(),
        });
    }
    if let Some(name) = kwargs
        .keys()
        .find(|k| !params.iter().any(|p| p.name == k.as_str()))
    {
        return Err(ArgsError::UnknownKeyword {
            task: task.to_string(),
            name: name.clone(),
        });
    }
    let mut values = Vec::with_capacity(params.len());
    for (i, p) in params.iter().enumerate() {
        let positional = args.get(i);
        let keyword = kwargs.get(&*p.name);
        if positional.is_some() && keyword.is_some() {
            return Err(ArgsError::Twice {
                task: task.to_string(),
                name: p.name.to_string(),
            });
        }
        let text = match positional.or(keyword) {
            None | Some(Value::Null) => None,
            Some(v) => Some(as_text(v).ok_or_else(|| ArgsError::WrongType {
                task: task.to_string(),
                name: p.name.to_string(),
                got: kind_of(v),
            })?),
        };
        if p.required && text.is_none() {
            return Err(ArgsError::Missing {
                task: task.to_string(),
                name: p.name.to_string(),
            });
        }
        values.push((p.name.clone(), text));
    }
    Ok(Bound { values })
}

fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn provision() -> Vec<Param> {
        vec![Param::required("host"), Param::required("image")]
    }

    fn kwargs(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn positional_and_keyword_values_bind_by_order_and_name() -> Result<(), ArgsError> {
        let b = bind(
            "cm.provision",
            &provision(),
            &[json!("h1")],
            &kwargs(json!({"image": 7})),
        )?;
        assert_eq!((b.get("host"), b.get("image")), (Some("h1"), Some("7")));
        let opt = [Param::required("a"), Param::optional("b")];
        let b = bind("t", &opt, &[json!(true)], &Map::new())?;
        assert_eq!((b.get("a"), b.get("b")), (Some("true"), None));
        Ok(())
    }

    #[test]
    fn what_does_not_fit_is_named_in_pythons_words() {
        let err = |args: &[Value], kw: Value| {
            bind("cm.provision", &provision(), args, &kwargs(kw)).map_err(|e| e.to_string())
        };
        assert_eq!(
            err(&[json!("h"), json!("i"), json!("x"), json!("y")], json!({})),
            Err("cm.provision() takes 2 positional argument(s) but 4 were given".into())
        );
        assert_eq!(
            err(&[], json!({"host": "h", "image": "i", "flavor": "x"})),
            Err("cm.provision() got an unexpected keyword argument 'flavor'".into())
        );
        assert_eq!(
            err(&[json!("h")], json!({"host": "h2", "image": "i"})),
            Err("cm.provision() got multiple values for argument 'host'".into())
        );
        assert_eq!(
            err(&[json!("h")], json!({})),
            Err("cm.provision() missing required argument 'image'".into())
        );
        assert_eq!(
            err(&[json!(["h"]), json!("i")], json!({})),
            Err(
                "cm.provision() argument 'host' must be a string, a number or a boolean, not a list"
                    .into()
            )
        );
        assert_eq!(
            err(&[json!(null), json!("i")], json!({})),
            Err("cm.provision() missing required argument 'host'".into())
        );
    }
}
