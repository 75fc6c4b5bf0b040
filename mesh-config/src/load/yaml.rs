//! YAML (and JSON, which is YAML) into a tree of nodes that remember their line.
//!
//! Typed deserialization then runs over the tree (through `serde_json::Value`), and every
//! error or validation finding names a field path; the tree maps that path back to a line.
//! Parsing is bounded: document size, nesting depth, node count and alias expansion.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use crate::diag::{FieldPath, Seg};

/// A value with the line it starts on (1-based; 0 when unknown).
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Line of the value (for map entries the loader prefers the key's line).
    pub line: u32,
    /// The value.
    pub value: Value,
}

/// A YAML value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `null`, `~` or empty.
    Null,
    /// A boolean.
    Bool(bool),
    /// A signed integer.
    Int(i64),
    /// An unsigned integer too large for `i64`.
    UInt(u64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in document order; keys carry their own line.
    Map(Vec<(Key, Node)>),
}

/// A mapping key and its line.
#[derive(Clone, Debug, PartialEq)]
pub struct Key {
    /// Line of the key.
    pub line: u32,
    /// The key as a string (numbers and booleans in key position are spelled out).
    pub name: String,
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<Value>::deserialize(d)?;
        Ok(Node { line: u32::try_from(spanned.referenced.line()).unwrap_or(u32::MAX), value: spanned.value })
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(i64::try_from(v).map_or(Value::UInt(v), Value::Int))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        i64::try_from(v).map(Value::Int).map_err(|_| E::custom("integer out of range"))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        u64::try_from(v)
            .map(|v| self.visit_u64::<E>(v).expect("infallible"))
            .map_err(|_| E::custom("integer out of range"))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Value, E> {
        Ok(Value::Str(String::from_utf8_lossy(v).into_owned()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(Value::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<KeyName>>()? {
            let value = map.next_value::<Node>()?;
            let line = u32::try_from(key.referenced.line()).unwrap_or(u32::MAX);
            entries.push((Key { line, name: key.value.0 }, value));
        }
        Ok(Value::Map(entries))
    }
}

/// A key of any scalar type, spelled as a string.
struct KeyName(String);

impl<'de> Deserialize<'de> for KeyName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Read keys as strings, keeping their spelling: `y`, `on`, `0x1F` stay text.
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = KeyName;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a scalar mapping key")
            }
            fn visit_str<E>(self, v: &str) -> Result<KeyName, E> {
                Ok(KeyName(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<KeyName, E> {
                Ok(KeyName(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<KeyName, E> {
                Ok(KeyName(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<KeyName, E> {
                Ok(KeyName(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<KeyName, E> {
                Ok(KeyName(v.to_string()))
            }
            fn visit_bool<E>(self, v: bool) -> Result<KeyName, E> {
                Ok(KeyName(v.to_string()))
            }
        }
        d.deserialize_string(V)
    }
}

/// Limits for untrusted input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest file read, in bytes.
    pub max_bytes: usize,
    /// Deepest nesting.
    pub max_depth: usize,
    /// Most nodes in one file.
    pub max_nodes: usize,
    /// Most alias uses in one file (alias bombs).
    pub max_aliases: usize,
    /// Most documents in one file.
    pub max_documents: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_bytes: 8 << 20, max_depth: 64, max_nodes: 250_000, max_aliases: 100, max_documents: 10_000 }
    }
}

/// A YAML syntax or limit error, with its line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line, 0 when unknown.
    pub line: u32,
    /// What went wrong.
    pub message: String,
}

/// Parse every document of a YAML stream (empty documents are skipped).
pub fn parse_documents(text: &str, limits: &Limits) -> Result<Vec<Node>, ParseError> {
    if text.len() > limits.max_bytes {
        return Err(ParseError {
            line: 0,
            message: format!("file is {} bytes; the limit is {} bytes", text.len(), limits.max_bytes),
        });
    }
    let options = serde_saphyr::options! {
        // YAML 1.2 booleans only: `y`, `on`, `no` stay strings (the "Norway problem").
        strict_booleans: true,
        null_as_string: false,
        budget: serde_saphyr::budget! {
            max_depth: limits.max_depth,
            max_nodes: limits.max_nodes,
            max_aliases: limits.max_aliases,
            max_documents: limits.max_documents,
            max_total_scalar_bytes: limits.max_bytes,
        },
    };
    let docs: Vec<Node> = serde_saphyr::from_multiple_with_options(text, options).map_err(|e| {
        let line = e.location().map(|l| u32::try_from(l.line()).unwrap_or(0)).unwrap_or(0);
        ParseError { line, message: plain_message(&e) }
    })?;
    Ok(docs.into_iter().filter(|d| d.value != Value::Null).collect())
}

fn plain_message(e: &serde_saphyr::Error) -> String {
    // The crate renders a code snippet below the message; keep the message line only.
    let text = e.without_snippet().to_string();
    let first = text.lines().next().unwrap_or("").trim();
    // Drop a trailing " at line X, column Y" (we print the line ourselves).
    let first = first.find(" at line ").map_or(first, |i| &first[..i]);
    // Library advice that means nothing to a user of the mesh.
    first.find(", set DuplicateKeyPolicy").map_or(first, |i| &first[..i]).to_string()
}

impl Node {
    /// As JSON, for typed deserialization. `null` members are dropped (absent and null
    /// mean the same in Kubernetes and protobuf JSON); non-finite floats become strings.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::UInt(u) => J::from(*u),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or_else(|| J::String(f.to_string()), J::Number),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => J::Object(
                entries
                    .iter()
                    .filter(|(_, v)| v.value != Value::Null)
                    .map(|(k, v)| (k.name.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }

    /// A member of a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|(_, v)| v)
    }

    fn entry(&self, key: &str) -> Option<(&Key, &Node)> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k.name == key).map(|(k, v)| (k, v)),
            _ => None,
        }
    }

    /// The string value, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The line that best locates `path`: the key line of the deepest member found (the
    /// line of the field itself when it exists, of its parent when it is missing).
    pub fn line_of(&self, path: &FieldPath) -> u32 {
        let mut node = self;
        let mut line = self.line;
        for seg in path.segments() {
            let next = match seg {
                Seg::Key(k) => node.entry(k).map(|(key, value)| (key.line, value)),
                Seg::Index(i) => match &node.value {
                    Value::Seq(items) => items.get(*i).map(|n| (n.line, n)),
                    _ => None,
                },
            };
            match next {
                Some((l, n)) => {
                    line = l;
                    node = n;
                }
                None => break,
            }
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_paths() {
        let text = "a: 1\nb:\n  c:\n  - x: 1\n  - y:\n      z: \"s\"\n";
        // `y` is a key, not the YAML 1.1 boolean.
        let docs = parse_documents(text, &Limits::default()).unwrap();
        assert_eq!(docs.len(), 1);
        let d = &docs[0];
        let p = |s: &[Seg]| FieldPath::from_segments(s.to_vec());
        assert_eq!(d.line_of(&p(&[Seg::Key("a".into())])), 1);
        assert_eq!(d.line_of(&p(&[Seg::Key("b".into()), Seg::Key("c".into())])), 3);
        assert_eq!(
            d.line_of(&p(&[
                Seg::Key("b".into()),
                Seg::Key("c".into()),
                Seg::Index(1),
                Seg::Key("y".into()),
                Seg::Key("z".into())
            ])),
            6
        );
        // Missing members locate at the deepest parent found.
        assert_eq!(
            d.line_of(&p(&[Seg::Key("b".into()), Seg::Key("c".into()), Seg::Index(1), Seg::Key("nope".into())])),
            5
        );
        assert_eq!(d.to_json(), serde_json::json!({"a": 1, "b": {"c": [{"x": 1}, {"y": {"z": "s"}}]}}));
        let norway = parse_documents("country: no\nflag: on\nreal: true\n", &Limits::default()).unwrap();
        assert_eq!(norway[0].to_json(), serde_json::json!({"country": "no", "flag": "on", "real": true}));
    }

    #[test]
    fn multi_document_and_json() {
        let docs = parse_documents("---\na: 1\n---\n---\n{\"b\": [1, 2.5, true, null]}\n", &Limits::default()).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].line, 5);
        assert_eq!(docs[1].to_json(), serde_json::json!({"b": [1, 2.5, true, null]}));
    }

    #[test]
    fn limits_reject_bombs() {
        let bomb = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\ng: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]\n";
        let limits = Limits { max_aliases: 20, ..Limits::default() };
        assert!(parse_documents(bomb, &limits).is_err());
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(parse_documents(&deep, &Limits::default()).is_err());
        let big = "a: b\n".repeat(100);
        let err = parse_documents(&big, &Limits { max_bytes: 100, ..Limits::default() }).unwrap_err();
        assert!(err.message.contains("limit is 100 bytes"), "{}", err.message);
    }

    #[test]
    fn syntax_errors_have_lines() {
        let err = parse_documents("a: 1\nb: [1, 2\nc: 3\n", &Limits::default()).unwrap_err();
        assert!(err.line >= 2, "{err:?}");
        let dup = parse_documents("a: 1\na: 2\n", &Limits::default()).unwrap_err();
        assert_eq!(dup.line, 2, "{dup:?}");
    }
}
