//! A command task's argv template: `["/usr/local/bin/backup", "--host", "{host}"]`.
//!
//! No shell, ever: each element of the template becomes exactly one argv element, and a
//! `{name}` in it is replaced by that parameter's text, whatever characters it holds (spaces,
//! quotes, `$(...)`, `;` stay literal). `{{` and `}}` are a literal brace.

use super::args::Bound;

/// One element of a template: literal text and placeholders.
#[derive(Debug, Clone, PartialEq)]
pub struct Element(Vec<Piece>);

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    Param(String),
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TemplateError {
    #[error("{element:?}: an unclosed '{{' (write {{{{ for a literal brace)")]
    Unclosed { element: String },
    #[error("{element:?}: a lone '}}' (write }}}} for a literal brace)")]
    LoneClose { element: String },
    #[error("{element:?}: {{{name}}} is not a parameter name (letters, digits, '_')")]
    BadName { element: String, name: String },
    #[error("the command is empty: give at least the program, e.g. [\"/usr/bin/env\", \"true\"]")]
    Empty,
}

/// Why a job's values cannot make its argv; the job ends FAILURE with this and nothing runs.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RenderError {
    #[error("placeholder {{{0}}} has no value: pass it as an argument or keyword")]
    Unfilled(String),
    #[error("value of {name} starts with '-' ({value:?}); refused, as it could be read as an option (set allow_options = true on the task to accept it)")]
    LooksLikeOption { name: String, value: String },
    #[error("value of {0} holds a NUL byte, which no argv element can")]
    Nul(String),
}

impl Element {
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '}' => {
                    return Err(TemplateError::LoneClose {
                        element: text.to_string(),
                    })
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => name.push(c),
                            None => {
                                return Err(TemplateError::Unclosed {
                                    element: text.to_string(),
                                })
                            }
                        }
                    }
                    if name.is_empty()
                        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    {
                        return Err(TemplateError::BadName {
                            element: text.to_string(),
                            name,
                        });
                    }
                    if !literal.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut literal)));
                    }
                    pieces.push(Piece::Param(name));
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() || pieces.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        Ok(Self(pieces))
    }

    /// The parameter names this element uses, in order.
    pub fn placeholders(&self) -> impl Iterator<Item = &str> {
        self.0.iter().filter_map(|p| match p {
            Piece::Param(name) => Some(name.as_str()),
            Piece::Text(_) => None,
        })
    }

    /// The text with every placeholder filled with its value as it is, a value not given
    /// with nothing (a unique job's key: no value is refused there).
    pub fn fill(&self, values: &Bound) -> String {
        self.0
            .iter()
            .map(|piece| match piece {
                Piece::Text(t) => t.as_str(),
                Piece::Param(name) => values.get(name).unwrap_or(""),
            })
            .collect()
    }

    pub fn render(&self, values: &Bound, allow_options: bool) -> Result<String, RenderError> {
        let mut out = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Param(name) => {
                    let value = values
                        .get(name)
                        .ok_or_else(|| RenderError::Unfilled(name.clone()))?;
                    if value.starts_with('-') && !allow_options {
                        return Err(RenderError::LooksLikeOption {
                            name: name.clone(),
                            value: value.to_string(),
                        });
                    }
                    if value.contains('\0') {
                        return Err(RenderError::Nul(name.clone()));
                    }
                    out.push_str(value);
                }
            }
        }
        Ok(out)
    }
}

/// A whole command: program and arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct Template(Vec<Element>);

impl Template {
    pub fn parse<S: AsRef<str>>(argv: &[S]) -> Result<Self, TemplateError> {
        if argv.is_empty() || argv[0].as_ref().is_empty() {
            return Err(TemplateError::Empty);
        }
        argv.iter()
            .map(|e| Element::parse(e.as_ref()))
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    /// Every placeholder's name, first use first, each once.
    pub fn placeholders(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for name in self.0.iter().flat_map(Element::placeholders) {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        names
    }

    /// The argv for one job's values.
    pub fn render(&self, values: &Bound, allow_options: bool) -> Result<Vec<String>, RenderError> {
        self.0
            .iter()
            .map(|e| e.render(values, allow_options))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::args::{bind, Param};
    use serde_json::{json, Value};

    fn values(pairs: Value) -> Bound {
        let kwargs = pairs.as_object().cloned().unwrap_or_default();
        let params: Vec<Param> = kwargs.keys().map(|k| Param::named(k, false)).collect();
        bind("t", &params, &[], &kwargs).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn each_element_is_one_argv_element_whatever_its_value_holds() -> Result<(), TemplateError> {
        let t = Template::parse(&["/bin/echo", "--host", "{host}", "level={level}!", "{{x}}"])?;
        assert_eq!(t.placeholders(), ["host", "level"]);
        let argv = t.render(
            &values(json!({"host": "a b; rm -rf / $(id) `id` 'q\"", "level": 3})),
            false,
        );
        assert_eq!(
            argv,
            Ok(vec![
                "/bin/echo".to_string(),
                "--host".into(),
                "a b; rm -rf / $(id) `id` 'q\"".into(),
                "level=3!".into(),
                "{x}".into()
            ])
        );
        Ok(())
    }

    #[test]
    fn unfilled_option_like_and_nul_values_are_refused() -> Result<(), TemplateError> {
        let t = Template::parse(&["/bin/echo", "{host}", "{level}"])?;
        assert_eq!(
            t.render(&values(json!({"host": "h"})), false),
            Err(RenderError::Unfilled("level".into()))
        );
        let dash = values(json!({"host": "--delete", "level": 1}));
        assert!(matches!(
            t.render(&dash, false),
            Err(RenderError::LooksLikeOption { .. })
        ));
        assert_eq!(
            t.render(&dash, true),
            Ok(vec!["/bin/echo".into(), "--delete".into(), "1".into()])
        );
        assert_eq!(
            t.render(&values(json!({"host": "a\u{0}b", "level": 1})), false),
            Err(RenderError::Nul("host".into()))
        );
        Ok(())
    }

    #[test]
    fn malformed_templates_are_named() {
        let bad = |e: &str| Template::parse(&["/bin/x", e]).map(|_| ());
        assert!(matches!(bad("{host"), Err(TemplateError::Unclosed { .. })));
        assert!(matches!(bad("host}"), Err(TemplateError::LoneClose { .. })));
        assert!(matches!(bad("{ho st}"), Err(TemplateError::BadName { .. })));
        assert!(matches!(bad("{}"), Err(TemplateError::BadName { .. })));
        assert_eq!(
            Template::parse::<&str>(&[]).map(|_| ()),
            Err(TemplateError::Empty)
        );
    }
}
