//! YAML documents with positions, for the human-owned configuration files.
//!
//! Owns: turning YAML text into a [`Node`] tree whose every node knows its line and column,
//! and the typed accessors that report errors as `file:line:col: field must be ...`.
//! Must not: know anything about pipelines, actions or policies; those modules walk the tree.
//!
//! Scalars are resolved the way the old tool's parser (YAML 1.1) resolved them where it
//! matters to users: `yes`/`no`/`on`/`off` are booleans, `~`/`null`/empty are null.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Where a node starts in its file (both 1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl Pos {
    fn from_marker(m: &Marker) -> Self {
        Pos {
            line: m.line(),
            col: m.col() + 1,
        }
    }
}

/// One YAML node with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub pos: Pos,
    /// Where this node's key starts, when it is the value of a mapping entry.
    pub key_pos: Option<Pos>,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A scalar as written; `quoted` scalars are always strings.
    Scalar {
        text: String,
        quoted: bool,
    },
    Seq(Vec<Node>),
    /// Keys in file order; keys are scalar texts.
    Map(Vec<(String, Node)>),
}

/// A configuration error pinned to a file and, where known, a position and field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    pub pos: Option<Pos>,
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.file.display();
        match self.pos {
            Some(p) => write!(f, "{name}:{}:{}: ", p.line, p.col)?,
            None => write!(f, "{name}: ")?,
        }
        match &self.field {
            Some(field) => write!(f, "{field} {}", self.message),
            None => write!(f, "{}", self.message),
        }
    }
}

/// Reads a configuration file, with an error that names it.
pub fn read(file: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(file).map_err(|e| ConfigError {
        file: file.to_path_buf(),
        pos: None,
        field: None,
        message: format!("cannot read: {e}"),
    })
}

/// Parses one YAML document. An empty document is an empty mapping at 1:1.
pub fn parse(file: &Path, text: &str) -> Result<Node, ConfigError> {
    let mut builder = TreeBuilder::default();
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut builder, false).map_err(|e| ConfigError {
        file: file.to_path_buf(),
        pos: Some(Pos::from_marker(e.marker())),
        field: None,
        message: format!("invalid YAML: {}", e.info()),
    })?;
    if let Some(message) = builder.error {
        return Err(ConfigError {
            file: file.to_path_buf(),
            pos: None,
            field: None,
            message,
        });
    }
    Ok(builder.root.unwrap_or(Node {
        pos: Pos { line: 1, col: 1 },
        key_pos: None,
        value: Value::Map(Vec::new()),
    }))
}

/// A collection being built: the node, the key waiting for its value, the anchor id.
type OpenNode = (Node, Option<(String, Pos)>, usize);

#[derive(Default)]
struct TreeBuilder {
    stack: Vec<OpenNode>,
    anchors: HashMap<usize, Node>,
    root: Option<Node>,
    error: Option<String>,
}

impl TreeBuilder {
    fn push_value(&mut self, mut node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        let Some((parent, pending_key, _)) = self.stack.last_mut() else {
            if self.root.is_none() {
                self.root = Some(node);
            }
            return;
        };
        match &mut parent.value {
            Value::Seq(items) => items.push(node),
            Value::Map(entries) => match pending_key.take() {
                Some((key, key_pos)) => {
                    node.key_pos = Some(key_pos);
                    entries.retain(|(k, _)| *k != key);
                    entries.push((key, node));
                }
                None => match node.value {
                    Value::Scalar { text, .. } => *pending_key = Some((text, node.pos)),
                    _ => self.error = Some("mapping keys must be scalars".to_string()),
                },
            },
            Value::Scalar { .. } => {}
        }
    }
}

impl MarkedEventReceiver for TreeBuilder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let pos = Pos::from_marker(&mark);
        match ev {
            Event::Scalar(text, style, anchor, _) => {
                let quoted = !matches!(style, TScalarStyle::Plain);
                let node = Node {
                    pos,
                    key_pos: None,
                    value: Value::Scalar { text, quoted },
                };
                self.push_value(node, anchor);
            }
            Event::SequenceStart(anchor, _) => {
                let node = Node {
                    pos,
                    key_pos: None,
                    value: Value::Seq(Vec::new()),
                };
                self.stack.push((node, None, anchor));
            }
            Event::MappingStart(anchor, _) => {
                let node = Node {
                    pos,
                    key_pos: None,
                    value: Value::Map(Vec::new()),
                };
                self.stack.push((node, None, anchor));
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some((node, _, anchor)) = self.stack.pop() {
                    self.push_value(node, anchor);
                }
            }
            Event::Alias(id) => match self.anchors.get(&id).cloned() {
                Some(mut node) => {
                    node.pos = pos;
                    self.push_value(node, 0)
                }
                None => self.error = Some(format!("unknown alias at line {}", pos.line)),
            },
            _ => {}
        }
    }
}

/// Walks a tree while remembering the file and the field path, so errors can name both.
#[derive(Clone)]
pub struct Field<'a> {
    pub file: &'a Path,
    pub path: String,
    pub node: &'a Node,
}

impl<'a> Field<'a> {
    pub fn root(file: &'a Path, node: &'a Node) -> Self {
        Field {
            file,
            path: String::new(),
            node,
        }
    }

    pub fn error(&self, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_path_buf(),
            pos: Some(self.node.pos),
            field: (!self.path.is_empty()).then(|| self.path.to_string()),
            message: message.into(),
        }
    }

    /// An error pinned to this entry's key (for keys that are unknown or misspelt).
    pub fn key_error(&self, message: impl Into<String>) -> ConfigError {
        let mut err = self.error(message);
        err.pos = Some(self.node.key_pos.unwrap_or(self.node.pos));
        err
    }

    pub fn is_null(&self) -> bool {
        matches!(&self.node.value, Value::Scalar { text, quoted: false } if is_null_text(text))
    }

    /// The entries of a mapping; a null value counts as an empty mapping.
    pub fn entries(&self) -> Result<&'a [(String, Node)], ConfigError> {
        match &self.node.value {
            Value::Map(entries) => Ok(entries),
            _ if self.is_null() => Ok(&[]),
            _ => Err(self.error("must be a mapping")),
        }
    }

    /// The items of a sequence; a null value counts as an empty sequence.
    pub fn items(&self) -> Result<&'a [Node], ConfigError> {
        match &self.node.value {
            Value::Seq(items) => Ok(items),
            _ if self.is_null() => Ok(&[]),
            _ => Err(self.error("must be a list")),
        }
    }

    /// Any scalar as text, `None` for null.
    pub fn scalar_text(&self) -> Result<Option<&'a str>, ConfigError> {
        match &self.node.value {
            Value::Scalar { text, quoted } => {
                if !quoted && is_null_text(text) {
                    Ok(None)
                } else {
                    Ok(Some(text.as_str()))
                }
            }
            _ => Err(self.error("must be a scalar")),
        }
    }

    pub fn string(&self) -> Result<Option<String>, ConfigError> {
        Ok(self.scalar_text()?.map(str::to_string))
    }

    pub fn non_empty_string(&self) -> Result<String, ConfigError> {
        match &self.node.value {
            Value::Scalar { .. } => match self.scalar_text()? {
                Some(t) if !t.trim().is_empty() => Ok(t.to_string()),
                _ => Err(self.error("must be a non-empty string")),
            },
            Value::Map(_) => Err(self.error(
                "must be a non-empty string, got a mapping (hint: quote text that contains `: `)",
            )),
            Value::Seq(_) => Err(self.error("must be a non-empty string, got a list")),
        }
    }

    pub fn bool(&self) -> Result<Option<bool>, ConfigError> {
        let Some(text) = self.scalar_text()? else {
            return Ok(None);
        };
        match parse_bool(text) {
            Some(b) => Ok(Some(b)),
            None => Err(self.error(format!("must be a boolean, got `{text}`"))),
        }
    }

    pub fn number(&self) -> Result<Option<f64>, ConfigError> {
        let Some(text) = self.scalar_text()? else {
            return Ok(None);
        };
        match text.trim().replace('_', "").parse::<f64>() {
            Ok(n) if n.is_finite() => Ok(Some(n)),
            _ => Err(self.error(format!("must be a number, got `{text}`"))),
        }
    }

    pub fn non_negative_number(&self) -> Result<Option<f64>, ConfigError> {
        match self.number()? {
            Some(n) if n < 0.0 => Err(self.error(format!("must not be negative, got `{n}`"))),
            other => Ok(other),
        }
    }

    pub fn count(&self) -> Result<Option<u32>, ConfigError> {
        let Some(text) = self.scalar_text()? else {
            return Ok(None);
        };
        text.trim()
            .parse::<u32>()
            .map(Some)
            .map_err(|_| self.error(format!("must be a whole number >= 0, got `{text}`")))
    }

    /// A scalar as the old tool would have stringified it (`true` becomes `True`, null "").
    pub fn python_str(&self) -> Result<String, ConfigError> {
        let Some(text) = self.scalar_text()? else {
            return Ok(String::new());
        };
        let quoted = matches!(&self.node.value, Value::Scalar { quoted: true, .. });
        if !quoted && let Some(b) = parse_bool(text) {
            return Ok(if b { "True" } else { "False" }.to_string());
        }
        Ok(text.to_string())
    }

    /// The field for `key` of this mapping (`parent.key`).
    pub fn key(&self, key: &str, node: &'a Node) -> Field<'a> {
        let path = if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        };
        Field {
            file: self.file,
            path,
            node,
        }
    }

    /// The field for item `index` of this sequence (`parent[index]`).
    pub fn index(&self, index: usize, node: &'a Node) -> Field<'a> {
        Field {
            file: self.file,
            path: format!("{}[{index}]", self.path),
            node,
        }
    }

    /// Visits every entry of a mapping; entries `visit` does not claim become warnings.
    pub fn for_each_entry(
        &self,
        warnings: &mut Vec<String>,
        mut visit: impl FnMut(&str, Field<'a>) -> Result<bool, ConfigError>,
    ) -> Result<(), ConfigError> {
        for (key, node) in self.entries()? {
            let field = self.key(key, node);
            let warning = field.warning(&format!("unknown key `{}` ignored", field.path));
            if !visit(key, field)? {
                warnings.push(warning);
            }
        }
        Ok(())
    }

    /// A warning line pinned to this field's position.
    pub fn warning(&self, message: &str) -> String {
        let pos = self.node.key_pos.unwrap_or(self.node.pos);
        format!(
            "{}:{}:{}: {message}",
            self.file.display(),
            pos.line,
            pos.col
        )
    }

    /// A list of non-empty strings.
    pub fn string_list(&self) -> Result<Vec<String>, ConfigError> {
        let mut out = Vec::new();
        for (i, node) in self.items()?.iter().enumerate() {
            out.push(self.index(i, node).non_empty_string()?);
        }
        Ok(out)
    }
}

/// Converts a node to JSON the way YAML types it: plain scalars become null, booleans and
/// numbers where they read as such; quoted scalars stay strings.
pub fn to_json(node: &Node) -> serde_json::Value {
    use serde_json::Value as J;
    match &node.value {
        Value::Scalar { text, quoted: true } => J::String(text.clone()),
        Value::Scalar {
            text,
            quoted: false,
        } => {
            if is_null_text(text) {
                J::Null
            } else if let Some(b) = parse_bool(text) {
                J::Bool(b)
            } else if let Ok(i) = text.parse::<i64>() {
                J::from(i)
            } else if let Some(f) = text.parse::<f64>().ok().filter(|f| f.is_finite()) {
                J::from(f)
            } else {
                J::String(text.clone())
            }
        }
        Value::Seq(items) => J::Array(items.iter().map(to_json).collect()),
        Value::Map(entries) => J::Object(
            entries
                .iter()
                .map(|(k, v)| (k.clone(), to_json(v)))
                .collect(),
        ),
    }
}

fn is_null_text(text: &str) -> bool {
    matches!(text, "" | "~" | "null" | "Null" | "NULL")
}

fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "true" | "True" | "TRUE" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => Some(true),
        "false" | "False" | "FALSE" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Node {
        match parse(Path::new("x.yml"), text) {
            Ok(n) => n,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn positions_are_one_based() {
        let root = p("a: 1\nb:\n  - x\n  - ''\n");
        let Value::Map(entries) = &root.value else {
            panic!("not a map")
        };
        assert_eq!(entries[0].1.pos, Pos { line: 1, col: 4 });
        let Value::Seq(items) = &entries[1].1.value else {
            panic!("not a seq")
        };
        assert_eq!(items[1].pos, Pos { line: 4, col: 5 });
    }

    #[test]
    fn aliases_resolve() {
        let root = p("a: &x [1, 2]\nb: *x\n");
        let Value::Map(entries) = &root.value else {
            panic!("not a map")
        };
        assert_eq!(entries[0].1.value, entries[1].1.value);
    }

    #[test]
    fn syntax_error_has_position() {
        let err = parse(Path::new("bad.yml"), "a: [1, 2\nb: 3\n").err();
        let err = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(err.starts_with("bad.yml:"), "{err}");
        assert!(err.contains("invalid YAML"), "{err}");
    }

    #[test]
    fn yaml11_booleans_and_python_strings() {
        let root = p("a: yes\nb: 'yes'\nc:\n");
        let Value::Map(entries) = &root.value else {
            panic!("not a map")
        };
        let f = |i: usize| Field::root(Path::new("x"), &entries[i].1);
        assert_eq!(f(0).bool(), Ok(Some(true)));
        assert_eq!(f(0).python_str(), Ok("True".to_string()));
        assert_eq!(f(1).python_str(), Ok("yes".to_string()));
        assert_eq!(f(2).python_str(), Ok(String::new()));
    }
}
