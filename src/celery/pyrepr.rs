//! Python's `repr()` of JSON values: what Celery's clients put in a message's `argsrepr` and
//! `kwargsrepr` (`saferepr`) and what its events and Flower show. Quotes inside these texts
//! are single, so a JSON string holding one needs no escaping.

use serde_json::{Map, Value};

/// Python's `repr()` of a string: single quotes unless the text holds one and no double quote.
pub fn py_repr(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    push_str(&mut out, text);
    out
}

/// Python's `repr()` of a task's positional arguments, as a list.
pub fn py_repr_list(items: &[Value]) -> String {
    let mut out = String::new();
    push_list(&mut out, items);
    out
}

/// Python's `repr()` of a task's keyword arguments.
pub fn py_repr_map(map: &Map<String, Value>) -> String {
    let mut out = String::new();
    push_map(&mut out, map);
    out
}

fn push_list(out: &mut String, items: &[Value]) {
    out.push('[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        push_value(out, item);
    }
    out.push(']');
}

fn push_map(out: &mut String, map: &Map<String, Value>) {
    out.push('{');
    for (i, (key, item)) in map.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        push_str(out, key);
        out.push_str(": ");
        push_value(out, item);
    }
    out.push('}');
}

fn push_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("None"),
        Value::Bool(true) => out.push_str("True"),
        Value::Bool(false) => out.push_str("False"),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => push_str(out, s),
        Value::Array(items) => push_list(out, items),
        Value::Object(map) => push_map(out, map),
    }
}

fn push_str(out: &mut String, text: &str) {
    let quote = if text.contains('\'') && !text.contains('"') {
        '"'
    } else {
        '\''
    };
    out.reserve(text.len() + 2);
    out.push(quote);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn py_repr_quotes_as_python_does() {
        assert_eq!(py_repr("unknown server 'x'"), "\"unknown server 'x'\"");
        assert_eq!(py_repr("plain"), "'plain'");
        assert_eq!(py_repr("both ' and \""), "'both \\' and \"'");
        assert_eq!(py_repr("a\nb\\"), "'a\\nb\\\\'");
    }

    #[test]
    fn values_read_as_python_prints_what_json_loads_gives() {
        assert_eq!(
            py_repr_list(&[json!("i1"), json!(2), json!(1.5), json!(null)]),
            "['i1', 2, 1.5, None]"
        );
        assert_eq!(
            py_repr_map(&map(json!({"server": "x", "dry": true, "n": [], "o": {}}))),
            "{'dry': True, 'n': [], 'o': {}, 'server': 'x'}"
        );
        assert_eq!(py_repr_list(&[json!(false)]), "[False]");
    }
}
