//! Reads the config file and turns every error into `file:line:column: message (field path)`.
//! Syntax and schema errors come from toml/serde; semantic ones from `validate`, located the same way.

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde_path_to_error::Segment;
use toml_edit::{ImDocument, Item};

use super::interpolate;
use super::validate::{self, Resolved};
use super::Config;

/// A config error with its location. `Display` gives `file:line:col: message (at field)`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}:{column}: {message}{}", field_suffix(.field))]
    Invalid {
        file: String,
        line: usize,
        column: usize,
        /// Dotted path of the offending field, e.g. `device[2].metrics.temp.detectors[0].window`.
        field: String,
        message: String,
    },
}

fn field_suffix(field: &str) -> String {
    if field.is_empty() {
        String::new()
    } else {
        format!(" (field `{field}`)")
    }
}

/// One step of a path into the document.
#[derive(Debug, Clone, PartialEq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

pub(crate) fn path_string(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// `node_id` when the file sets none: the host name (so every Pi of a fleet differs), else
/// "edgewatch" when it cannot be read.
pub(crate) fn default_node_id() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "edgewatch".to_string())
}

/// Loads, parses and validates a config file.
pub fn load_file(path: &Path) -> Result<Resolved, ConfigError> {
    load_file_all(path).map_err(first)
}

/// Like `load_file`, with every error found in one pass (`edgewatch check`): at most
/// `MAX_ERRORS`, in the order they were found.
pub fn load_file_all(path: &Path) -> Result<Resolved, Vec<ConfigError>> {
    let text = std::fs::read_to_string(path).map_err(|source| {
        vec![ConfigError::Read {
            file: path.display().to_string(),
            source,
        }]
    })?;
    parse_all_with_env(&text, path, &interpolate::process_env)
}

/// Parses and validates config text; `path` is used in error messages only. `${VAR}` and
/// `${VAR:-default}` in string values are expanded from the process environment first.
pub fn parse_str(text: &str, path: &Path) -> Result<Resolved, ConfigError> {
    parse_str_with_env(text, path, &interpolate::process_env)
}

/// `parse_str` with variables looked up by `env`.
pub(crate) fn parse_str_with_env(
    original: &str,
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Resolved, ConfigError> {
    parse_all_with_env(original, path, env).map_err(first)
}

fn first(mut errors: Vec<ConfigError>) -> ConfigError {
    // Never empty: every Err carries at least the error that stopped the first pass.
    errors.swap_remove(0)
}

/// Most errors one `check` lists.
pub const MAX_ERRORS: usize = 50;

/// An error found in one pass, in expanded-text coordinates.
struct Found {
    path: Vec<Seg>,
    span: Option<Range<usize>>,
    message: String,
    /// A syntax error: nothing after it can be trusted.
    fatal: bool,
    /// Found by `validate` (relations between settings), not by the schema.
    semantic: bool,
}

/// Every error of the file, found by repeated passes: after each error, the setting it is about
/// is blanked out (spaces, so every offset stays put) and the file is read again. An error that
/// only follows from a blanked setting (a now missing field, a reference to a blanked source or
/// template) is not reported; its own setting is blanked in turn.
pub(crate) fn parse_all_with_env(
    original: &str,
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Resolved, Vec<ConfigError>> {
    let file = path.display().to_string();
    let expanded = match interpolate::expand(original, env) {
        Ok(x) => x,
        Err(e) => {
            let (line, column) = line_col(original, e.span.start);
            return Err(vec![ConfigError::Invalid {
                file,
                line,
                column,
                field: path_string(&e.path),
                message: e.message,
            }]);
        }
    };
    let mut text = expanded.text.clone();
    let mut errors = Vec::new();
    let mut blanked: Vec<Vec<Seg>> = Vec::new();
    let mut removed_names: Vec<String> = Vec::new();
    // Tables one of whose lines was blanked: a semantic error about a sibling may only follow
    // from the blanked line (format "columns" once `columns` is gone), so it is not listed.
    let mut touched_tables: Vec<Vec<Seg>> = Vec::new();
    loop {
        let doc = ImDocument::parse(text.clone()).ok();
        let found = match parse_once(&text, doc.as_ref(), path) {
            Ok(r) if errors.is_empty() => return Ok(r),
            Ok(_) => return Err(in_file_order(errors)),
            Err(f) => f,
        };
        let follows = blanked
            .iter()
            .any(|b| b.starts_with(&found.path) || found.path.starts_with(b))
            || removed_names
                .iter()
                .any(|n| found.message.contains(&format!("{n:?}")))
            || (found.semantic && touched_tables.iter().any(|t| found.path.starts_with(t)));
        if !follows {
            let span = found
                .span
                .clone()
                .or_else(|| doc.as_ref().and_then(|d| span_of(d, &found.path)))
                .unwrap_or(0..0);
            let (line, column) = line_col(original, expanded.original_offset(span.start));
            errors.push(ConfigError::Invalid {
                file: file.clone(),
                line,
                column,
                field: path_string(&found.path),
                message: found.message.clone(),
            });
        }
        if found.fatal || errors.len() >= MAX_ERRORS || blanked.contains(&found.path) {
            return Err(in_file_order(errors));
        }
        let Some(doc) = doc else {
            return Err(in_file_order(errors));
        };
        let (unit, line, spans) = blank_unit(&doc, &found.path);
        if spans.is_empty() || blanked.contains(&unit) {
            return Err(in_file_order(errors));
        }
        if line && unit.len() > 1 {
            touched_tables.push(unit[..unit.len() - 1].to_vec());
        }
        if let Some(name) = name_of(&doc, &unit) {
            removed_names.push(name);
        }
        for r in spans {
            blank(&mut text, r);
        }
        blanked.push(found.path);
        blanked.push(unit);
    }
}

fn in_file_order(mut errors: Vec<ConfigError>) -> Vec<ConfigError> {
    errors.sort_by_key(|e| match e {
        ConfigError::Invalid { line, column, .. } => (*line, *column),
        ConfigError::Read { .. } => (0, 0),
    });
    errors
}

/// One read of the (expanded) text: schema, then semantics; the first error found.
fn parse_once(
    text: &str,
    doc: Option<&ImDocument<String>>,
    file: &Path,
) -> Result<Resolved, Found> {
    let de = toml::Deserializer::new(text);
    let config: Config = match serde_path_to_error::deserialize(de) {
        Ok(c) => c,
        Err(e) => {
            let mut path = convert_path(e.path());
            let inner = e.into_inner();
            let mut message = inner.message().trim().to_string();
            let mut span = inner.span();
            // Inside tagged enums (sources) toml only knows the table's span: find the key itself.
            if let Some(name) = unknown_field_name(&message).map(str::to_string) {
                // In a detector: say which kind rejected the field and what it takes.
                let in_detector = matches!(
                    path.as_slice(),
                    [.., Seg::Key(k), Seg::Index(_)] if k == "detectors"
                );
                let kind = doc
                    .filter(|_| in_detector)
                    .and_then(|d| item_at(d, &path))
                    .and_then(|i| i.get("type"))
                    .and_then(|t| t.as_str());
                if let Some(m) =
                    kind.and_then(|k| crate::analysis::detector::explain_unknown_field(k, &name))
                {
                    message = m;
                }
                let mut deeper = path.clone();
                deeper.push(Seg::Key(name.to_string()));
                if let Some(s) = doc.and_then(|d| key_span_of(d, &deeper)) {
                    span = Some(s);
                    path = deeper;
                } else if let Some((p, s)) = doc.and_then(|d| find_below(d, &path, &name, true)) {
                    // Deeper still, e.g. in a source's [[source.device]] tables.
                    span = Some(s);
                    path = p;
                }
            } else if let Some(value) = quoted_value(&message) {
                // A bad value (unknown variant, invalid duration) below a source's table.
                if let Some((p, s)) = doc.and_then(|d| find_below(d, &path, value, false)) {
                    span = Some(s);
                    path = p;
                }
            }
            return Err(Found {
                path,
                span,
                message,
                fatal: doc.is_none(),
                semantic: false,
            });
        }
    };
    validate::validate(config, PathBuf::from(file)).map_err(|(path, message)| Found {
        path,
        span: None,
        message,
        fatal: false,
        semantic: true,
    })
}

/// What to blank for an error at `path`: the whole `key = value` line that holds it (a value
/// inside an inline table or array takes its line along, since a half inline table is a syntax
/// error), or the whole table the path ends at. Returns the blanked unit's path, whether it is
/// one `key = value` line, and its spans.
fn blank_unit(doc: &ImDocument<String>, path: &[Seg]) -> (Vec<Seg>, bool, Vec<Range<usize>>) {
    let mut item = doc.as_item();
    let mut at = Vec::new();
    for seg in path {
        let Some(next) = child(item, seg) else { break };
        at.push(seg.clone());
        if let (Item::Table(t), Seg::Key(k), Item::Value(v)) = (item, seg, next) {
            let start = t
                .get_key_value(k)
                .and_then(|(key, _)| key.span())
                .map(|s| s.start);
            let spans = match (start, v.span()) {
                (Some(a), Some(b)) => std::iter::once(a..b.end).collect(),
                (None, Some(b)) => vec![b],
                _ => Vec::new(),
            };
            return (at, true, spans);
        }
        item = next;
    }
    let mut spans = Vec::new();
    collect_spans(item, &mut spans);
    (at, false, spans)
}

/// Every span inside a table: its header, each `key = value`, sub-tables.
fn collect_spans(item: &Item, out: &mut Vec<Range<usize>>) {
    match item {
        Item::Table(t) => {
            out.extend(t.span());
            for (k, v) in t.iter() {
                match v {
                    Item::Value(val) => {
                        let key = t.get_key_value(k).and_then(|(key, _)| key.span());
                        match (key, val.span()) {
                            (Some(a), Some(b)) => out.push(a.start..b.end),
                            (None, Some(b)) => out.push(b),
                            _ => {}
                        }
                    }
                    other => collect_spans(other, out),
                }
            }
        }
        Item::ArrayOfTables(a) => {
            for t in a.iter() {
                collect_spans(&Item::Table(t.clone()), out);
            }
        }
        Item::Value(v) => out.extend(v.span()),
        Item::None => {}
    }
}

/// The name other settings use for the item at `path`: its `id`, or a template's key.
fn name_of(doc: &ImDocument<String>, path: &[Seg]) -> Option<String> {
    if let [Seg::Key(t), Seg::Key(name)] = path {
        if t == "template" {
            return Some(name.clone());
        }
    }
    item_at(doc, path)?
        .get("id")
        .and_then(|v| v.as_str())
        .map(str::to_string)
}

/// Replaces `range` of `text` with spaces, keeping line breaks (and so every offset and line).
fn blank(text: &mut String, range: Range<usize>) {
    let end = range.end.min(text.len());
    let start = range.start.min(end);
    if !text.is_char_boundary(start) || !text.is_char_boundary(end) {
        return;
    }
    let blanked: String = text[start..end]
        .bytes()
        .map(|b| if b == b'\n' { '\n' } else { ' ' })
        .collect();
    text.replace_range(start..end, &blanked);
}

fn unknown_field_name(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

/// The value a serde message quotes: "unknown variant `x`" or "invalid duration \"x\"".
fn quoted_value(message: &str) -> Option<&str> {
    let (open, close) = match (message.find('`'), message.find('"')) {
        (Some(b), Some(q)) if q < b => (q, '"'),
        (Some(b), _) => (b, '`'),
        (None, Some(q)) => (q, '"'),
        (None, None) => return None,
    };
    let rest = &message[open + 1..];
    rest.find(close).map(|end| &rest[..end])
}

/// Below the table at `path` (errors inside tagged enums stop there), the first key named
/// `needle` (`key == true`) or the first string value equal to it: its path and span.
fn find_below(
    doc: &ImDocument<String>,
    path: &[Seg],
    needle: &str,
    key: bool,
) -> Option<(Vec<Seg>, Range<usize>)> {
    let mut item = doc.as_item();
    for seg in path {
        item = child(item, seg)?;
    }
    if item.is_value() && !item.is_inline_table() && !item.is_array() {
        return None; // already precise
    }
    let mut found = path.to_vec();
    search(item, needle, key, &mut found)?;
    let span = key_span_of(doc, &found).or_else(|| span_of(doc, &found))?;
    Some((found, span))
}

fn search(item: &Item, needle: &str, key: bool, at: &mut Vec<Seg>) -> Option<()> {
    if let Some(t) = item.as_table_like() {
        for (k, v) in t.iter() {
            at.push(Seg::Key(k.to_string()));
            let hit = if key {
                k == needle
            } else {
                v.as_str() == Some(needle)
            };
            if hit || search(v, needle, key, at).is_some() {
                return Some(());
            }
            at.pop();
        }
    } else if let Some(a) = item.as_array() {
        for (i, v) in a.iter().enumerate() {
            at.push(Seg::Index(i));
            if search(&Item::Value(v.clone()), needle, key, at).is_some() {
                return Some(());
            }
            at.pop();
        }
    } else if let Some(a) = item.as_array_of_tables() {
        for (i, t) in a.iter().enumerate() {
            at.push(Seg::Index(i));
            if search(&Item::Table(t.clone()), needle, key, at).is_some() {
                return Some(());
            }
            at.pop();
        }
    }
    None
}

/// The item at `path`, when the whole path exists.
fn item_at<'a>(doc: &'a ImDocument<String>, path: &[Seg]) -> Option<&'a Item> {
    let mut item = doc.as_item();
    for seg in path {
        item = child(item, seg)?;
    }
    Some(item)
}

fn convert_path(p: &serde_path_to_error::Path) -> Vec<Seg> {
    p.iter()
        .filter_map(|s| match s {
            Segment::Seq { index } => Some(Seg::Index(*index)),
            Segment::Map { key } => Some(Seg::Key(key.clone())),
            Segment::Enum { .. } | Segment::Unknown => None,
        })
        .collect()
}

fn child<'a>(item: &'a Item, seg: &Seg) -> Option<&'a Item> {
    match seg {
        Seg::Key(k) => item.get(k.as_str()),
        Seg::Index(i) => item.get(*i),
    }
}

/// Span of the deepest item on `path` that exists in the document.
fn span_of(doc: &ImDocument<String>, path: &[Seg]) -> Option<Range<usize>> {
    if path.is_empty() {
        return Some(0..0);
    }
    if let Some(s) = key_span_of(doc, path) {
        return Some(s);
    }
    let mut item = doc.as_item();
    let mut best = None;
    for seg in path {
        match child(item, seg) {
            Some(next) => {
                item = next;
                if let Some(s) = item_span(item) {
                    best = Some(s);
                }
            }
            None => break,
        }
    }
    best
}

/// Span of the last key on `path` (or the item, for an array index).
fn key_span_of(doc: &ImDocument<String>, path: &[Seg]) -> Option<Range<usize>> {
    let (last, parent) = path.split_last()?;
    let mut item = doc.as_item();
    for seg in parent {
        item = child(item, seg)?;
    }
    match last {
        Seg::Key(k) => {
            let table = item.as_table_like()?;
            let (key, value) = table.get_key_value(k)?;
            key.span().or_else(|| item_span(value))
        }
        Seg::Index(i) => item_span(item.get(*i)?),
    }
}

fn item_span(item: &Item) -> Option<Range<usize>> {
    match item {
        Item::None => None,
        Item::Value(v) => v.span(),
        Item::Table(t) => t.span(),
        Item::ArrayOfTables(a) => a.span(),
    }
}

/// 1-based line and column of a byte offset (column counted in characters).
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        match parse_str(text, Path::new("t.toml")) {
            Ok(_) => panic!("expected an error for:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    fn all_errors(text: &str) -> Vec<String> {
        match parse_all_with_env(text, Path::new("t.toml"), &|_| None) {
            Ok(_) => Vec::new(),
            Err(v) => v.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn every_independent_error_is_listed_in_file_order() {
        let text = r#"node_id = "n1"
summary_interval = "10ms"
[api]
ws_bufer = 4
[[source]]
kind = "tcp"
id = "in"
listen = "127.0.0.1:0"
format = "jsn"
[template.t]
detectors = [{ type = "zscore", window = 0 }]
[[device]]
id = "d1"
source = "in"
template = "t"
[[device]]
id = "d2"
source = "nope"
"#;
        let errors = all_errors(text);
        let places: Vec<&str> = errors
            .iter()
            .map(|e| e.split(": ").next().unwrap_or(""))
            .collect();
        assert_eq!(
            places,
            [
                "t.toml:2:1",
                "t.toml:4:1",
                "t.toml:9:1",
                "t.toml:11:33",
                "t.toml:18:1"
            ],
            "{errors:#?}"
        );
        assert!(
            errors[1].contains("unknown field `ws_bufer`"),
            "{errors:#?}"
        );
        assert!(errors[4].contains("\"nope\""), "{errors:#?}");
        // Start-up and reload report the first of them.
        assert_eq!(err(text), errors[0]);
    }

    #[test]
    fn errors_that_only_follow_from_an_earlier_one_are_not_listed() {
        // The source lacks `listen`: it is dropped whole, so the device naming it and the
        // missing table do not add errors of their own.
        let text = r#"node_id = "n1"
[[source]]
kind = "tcp"
id = "in"
format = "json"
[[device]]
id = "d1"
source = "in"
[[device]]
id = "d1"
"#;
        let errors = all_errors(text);
        assert_eq!(errors.len(), 2, "{errors:#?}");
        assert!(errors[0].starts_with("t.toml:2:1"), "{errors:#?}");
        assert!(errors[1].contains("duplicate device id"), "{errors:#?}");
    }

    #[test]
    fn a_syntax_error_ends_the_list() {
        let errors = all_errors("node_id = \"n1\"\nsummary_interval = \"10ms\"\n[api\n");
        assert_eq!(errors.len(), 1, "{errors:#?}");
    }

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
    }

    #[test]
    fn unknown_top_level_key_is_located() {
        let e = err("node_id = \"n\"\nnode_idd = 3\n");
        assert!(e.starts_with("t.toml:2:1: unknown field `node_idd`"), "{e}");
    }

    #[test]
    fn unknown_detector_field_names_line_column_and_field() {
        let text = "node_id = \"n\"\n\n[[device]]\nid = \"d\"\n[device.metrics.temp]\ndetectors = [\n  { type = \"zscore\", treshold = 3 },\n]\n";
        let e = err(text);
        assert!(
            e.starts_with("t.toml:7:22: unknown field `treshold`"),
            "{e}"
        );
        assert!(e.contains("device[0].metrics.temp.detectors[0]"), "{e}");
    }

    #[test]
    fn unknown_field_inside_tagged_source_is_located_at_the_key() {
        let text = "node_id = \"n\"\n[[source]]\nid = \"t\"\nkind = \"tcp\"\nlisten = \"127.0.0.1:1\"\nmax_fram = 10\n";
        let e = err(text);
        assert!(e.starts_with("t.toml:6:1: unknown field `max_fram`"), "{e}");
        assert!(e.contains("(field `source[0].max_fram`)"), "{e}");
    }

    #[test]
    fn bad_values_inside_sources_are_located_at_the_key() {
        let text = "node_id = \"n\"\n[[source]]\nid = \"t\"\nkind = \"tcp\"\nlisten = \"127.0.0.1:1\"\nformat = \"xml\"\n";
        let e = err(text);
        assert!(e.starts_with("t.toml:6:1: unknown variant `xml`"), "{e}");
        assert!(e.contains("(field `source[0].format`)"), "{e}");
        let text = "node_id = \"n\"\n[[source]]\nid = \"t\"\nkind = \"tcp\"\nlisten = \"127.0.0.1:1\"\nbackoff_min = \"5 parsecs\"\n";
        let e = err(text);
        assert!(e.starts_with("t.toml:6:1: invalid duration"), "{e}");
    }

    #[test]
    fn bad_duration_is_located_at_the_value() {
        let e = err("node_id = \"n\"\nsummary_interval = \"5 parsecs\"\n");
        assert!(e.starts_with("t.toml:2:20: invalid duration"), "{e}");
    }

    #[test]
    fn syntax_error_is_located() {
        let e = err("node_id = \"n\"\n[api\n");
        assert!(e.starts_with("t.toml:2:"), "{e}");
    }

    #[test]
    fn node_id_defaults_to_the_host_name() {
        let r = parse_str("data_dir = \"x\"\n", Path::new("t.toml")).expect("valid");
        let host = nix::unistd::gethostname().expect("hostname");
        assert_eq!(r.config.node_id, host.to_string_lossy().trim());
        assert!(!r.config.node_id.is_empty());
    }

    fn env(name: &str) -> Option<String> {
        match name {
            "EW_NODE" => Some("pi-7".into()),
            "EW_PORT" => Some("9100".into()),
            _ => None,
        }
    }

    #[test]
    fn variables_are_expanded_in_string_values() {
        let text = "node_id = \"${EW_NODE}\"\ndata_dir = \"${EW_DATA:-/var/lib/ew}\"\n\
                    [[source]]\nid = \"t\"\nkind = \"tcp\"\nlisten = \"127.0.0.1:${EW_PORT}\"\n";
        let r = parse_str_with_env(text, Path::new("t.toml"), &env).expect("valid");
        assert_eq!(r.config.node_id, "pi-7");
        assert_eq!(r.config.data_dir, PathBuf::from("/var/lib/ew"));
        match &r.config.sources[0] {
            crate::config::SourceConfig::Tcp(t) => {
                assert!(matches!(
                    t.mode,
                    crate::config::TcpMode::Server { listen, .. } if listen.port() == 9100
                ))
            }
            _ => panic!("not tcp"),
        }
    }

    #[test]
    fn an_unset_variable_is_a_located_error() {
        let text = "node_id = \"n\"\n\n[api]\nlisten = \"${EW_LISTEN}\"\n";
        let e = parse_str_with_env(text, Path::new("t.toml"), &env)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("t.toml:4:10: environment variable `EW_LISTEN` is not set"),
            "{e}"
        );
        assert!(e.contains("(field `api.listen`)"), "{e}");
    }

    #[test]
    fn errors_after_an_expanded_value_keep_their_place_in_the_file() {
        // The expanded value is longer than `${EW_NODE}`: the error below must still say 3:1 / 2:20.
        let text = "node_id = \"${EW_NODE}${EW_NODE}${EW_NODE}\"\nsummary_interval = \"5 parsecs\"\nnode_idd = 1\n";
        let e = parse_str_with_env(text, Path::new("t.toml"), &env)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("t.toml:2:20: invalid duration"), "{e}");
        let text = "node_id = \"${EW_NODE}\"\nnode_idd = 1\n";
        let e = parse_str_with_env(text, Path::new("t.toml"), &env)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("t.toml:2:1: unknown field `node_idd`"), "{e}");
        // A bad value that came from a variable is located at the value in the file.
        let text = "node_id = \"n\"\n[api]\nlisten = \"${EW_NODE:-x}\"\n";
        let e = parse_str_with_env(text, Path::new("t.toml"), &env)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("t.toml:3:10: "), "{e}");
    }
}
