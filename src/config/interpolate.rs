//! `${VAR}` and `${VAR:-default}` in the config's string values, expanded before the schema is read;
//! `$${` is a literal `${`. The edits are kept so offsets in the expanded text map back to the file.

use std::ops::Range;

use toml_edit::{ImDocument, Item, Value};

use super::load::Seg;

/// The config text with every string value expanded, and how to map its offsets back.
#[derive(Debug)]
pub(crate) struct Expanded {
    pub text: String,
    /// Replaced value spans, in order: (span in the expanded text, span in the original).
    edits: Vec<(Range<usize>, Range<usize>)>,
}

impl Expanded {
    /// The offset in the original file of `offset` in the expanded text: inside a replaced value,
    /// the start of that value in the file.
    pub fn original_offset(&self, offset: usize) -> usize {
        let mut shift: isize = 0;
        for (new, old) in &self.edits {
            if offset < new.start {
                break;
            }
            if offset < new.end {
                return old.start;
            }
            shift = old.end as isize - new.end as isize;
        }
        (offset as isize + shift).max(0) as usize
    }
}

/// A value that cannot be expanded: where it is and why.
#[derive(Debug)]
pub(crate) struct ExpandError {
    pub path: Vec<Seg>,
    pub span: Range<usize>,
    pub message: String,
}

/// Expands every string value of `text`, looking variables up with `env`. Text that does not parse
/// is returned as it is (the parser reports the syntax error right after).
pub(crate) fn expand(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Expanded, ExpandError> {
    let unchanged = || Expanded {
        text: text.to_owned(),
        edits: Vec::new(),
    };
    if !text.contains('$') {
        return Ok(unchanged());
    }
    let Ok(doc) = ImDocument::parse(text.to_owned()) else {
        return Ok(unchanged());
    };
    let mut found = Vec::new();
    collect(doc.as_item(), &mut Vec::new(), &mut found);
    found.sort_by_key(|(_, span, _)| span.start);

    let mut out = String::with_capacity(text.len());
    let mut edits = Vec::new();
    let mut at = 0;
    for (path, span, value) in found {
        let expanded = expand_str(&value, env).map_err(|message| ExpandError {
            path: path.clone(),
            span: span.clone(),
            message,
        })?;
        if expanded == value || span.start < at {
            continue;
        }
        out.push_str(&text[at..span.start]);
        let start = out.len();
        out.push_str(&Value::from(expanded).to_string());
        edits.push((start..out.len(), span.clone()));
        at = span.end;
    }
    out.push_str(&text[at..]);
    Ok(Expanded { text: out, edits })
}

/// Every string value holding a `$`, with its path and span.
fn collect(item: &Item, at: &mut Vec<Seg>, out: &mut Vec<(Vec<Seg>, Range<usize>, String)>) {
    match item {
        Item::Value(v) => collect_value(v, at, out),
        Item::Table(t) => {
            for (k, v) in t.iter() {
                at.push(Seg::Key(k.to_string()));
                collect(v, at, out);
                at.pop();
            }
        }
        Item::ArrayOfTables(a) => {
            for (i, t) in a.iter().enumerate() {
                at.push(Seg::Index(i));
                for (k, v) in t.iter() {
                    at.push(Seg::Key(k.to_string()));
                    collect(v, at, out);
                    at.pop();
                }
                at.pop();
            }
        }
        Item::None => {}
    }
}

fn collect_value(v: &Value, at: &mut Vec<Seg>, out: &mut Vec<(Vec<Seg>, Range<usize>, String)>) {
    match v {
        Value::String(s) if s.value().contains('$') => {
            if let Some(span) = s.span() {
                out.push((at.clone(), span, s.value().clone()));
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                at.push(Seg::Index(i));
                collect_value(x, at, out);
                at.pop();
            }
        }
        Value::InlineTable(t) => {
            for (k, x) in t.iter() {
                at.push(Seg::Key(k.to_string()));
                collect_value(x, at, out);
                at.pop();
            }
        }
        _ => {}
    }
}

/// Expands one string: `${NAME}` (an error when NAME is unset), `${NAME:-default}` (the default
/// when NAME is unset or empty), `$${` for a literal `${`; any other `$` stays as it is.
pub(crate) fn expand_str(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(lit) = after.strip_prefix("${") {
            out.push_str("${");
            rest = lit;
            continue;
        }
        let Some(body) = after.strip_prefix('{') else {
            out.push('$');
            rest = after;
            continue;
        };
        let Some(end) = body.find('}') else {
            return Err(format!(
                "unterminated `${{` in {s:?} (write `$${{` for a literal `${{`)"
            ));
        };
        let inner = &body[..end];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!(
                "`${{{inner}}}`: expected `${{NAME}}` or `${{NAME:-default}}` (NAME: letters, digits, _)"
            ));
        }
        match (env(name).filter(|v| default.is_none() || !v.is_empty()), default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => {
                return Err(format!(
                    "environment variable `{name}` is not set (write `${{{name}:-default}}` for a fallback)"
                ))
            }
        }
        rest = &body[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The process environment, for `expand`. A variable that is not valid UTF-8 counts as unset.
pub(crate) fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("pi-7".into()),
            "EMPTY" => Some(String::new()),
            "QUOTE" => Some("a\"b\\c".into()),
            _ => None,
        }
    }

    #[test]
    fn variables_defaults_and_literals() {
        assert_eq!(expand_str("${HOST}-x", &env).as_deref(), Ok("pi-7-x"));
        assert_eq!(expand_str("${NOPE:-d1}", &env).as_deref(), Ok("d1"));
        assert_eq!(expand_str("${EMPTY:-d}", &env).as_deref(), Ok("d"));
        assert_eq!(expand_str("${EMPTY}", &env).as_deref(), Ok(""));
        assert_eq!(expand_str("${HOST:-d}", &env).as_deref(), Ok("pi-7"));
        assert_eq!(
            expand_str("$${HOST} $5 $", &env).as_deref(),
            Ok("${HOST} $5 $")
        );
        assert_eq!(expand_str("${NOPE:-}", &env).as_deref(), Ok(""));
    }

    #[test]
    fn unset_and_malformed_are_errors() {
        let e = expand_str("x ${NOPE} y", &env).unwrap_err();
        assert!(e.contains("`NOPE` is not set"), "{e}");
        let e = expand_str("${HOST", &env).unwrap_err();
        assert!(e.contains("unterminated"), "{e}");
        let e = expand_str("${1X}", &env).unwrap_err();
        assert!(e.contains("expected `${NAME}`"), "{e}");
    }

    #[test]
    fn expanded_text_parses_and_offsets_map_back() {
        let text = "a = \"${QUOTE}\"\n# ${NOPE} in a comment\nb = [\"${HOST}\", { c = '${NOPE:-z}' }]\nd = 5\n";
        let x = expand(text, &env).expect("expands");
        let doc: toml::Value = toml::from_str(&x.text).expect("valid toml");
        assert_eq!(doc["a"].as_str(), Some("a\"b\\c"));
        assert_eq!(doc["b"][0].as_str(), Some("pi-7"));
        assert_eq!(doc["b"][1]["c"].as_str(), Some("z"));
        // `d` after the edits maps to its place in the file; inside a value, to the value's start.
        let d_new = x.text.find("d = 5").expect("d");
        assert_eq!(x.original_offset(d_new), text.find("d = 5").expect("d"));
        assert_eq!(x.original_offset(5), 4);
        assert_eq!(x.original_offset(0), 0);
    }

    #[test]
    fn an_unset_variable_is_located() {
        let text = "a = 1\n[api]\ntoken_file = \"${NOPE}/t\"\n";
        let e = expand(text, &env).unwrap_err();
        assert_eq!(
            e.path,
            vec![Seg::Key("api".into()), Seg::Key("token_file".into())]
        );
        assert_eq!(e.span.start, text.find("\"${NOPE}").expect("value"));
    }
}
