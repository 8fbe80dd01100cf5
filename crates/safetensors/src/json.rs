//! The header's JSON, read by `serde_json` into a small value tree that keeps every object's
//! keys in order and refuses a key given twice in one object (`serde_json`'s own maps, like
//! safetensors' `HashMap`, would silently keep the last one).
//!
//! A refusal says where: syntax errors carry the byte of the header they were found at,
//! and a key given twice is named with the tensor (or the metadata) it belongs to.

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

/// A JSON value of a header.
#[derive(Debug, PartialEq)]
pub(crate) enum Value {
    Null,
    Bool,
    /// A non-negative integer that fits in 64 bits (how safetensors reads a `usize`).
    Count(u64),
    /// Any other number (negative, fractional, with an exponent, or too large).
    Number,
    Str(String),
    Array(Vec<Value>),
    /// The pairs in the order written; no key appears twice.
    Object(Vec<(String, Value)>),
}

impl Value {
    /// "a string", "an array", ... for messages.
    pub(crate) fn what(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool => "a boolean",
            Value::Count(_) | Value::Number => "a number",
            Value::Str(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        }
    }
}

/// Where in the header a value lies, to name a key given twice.
#[derive(Clone, Copy)]
enum Within<'a> {
    /// The top-level object.
    Header,
    /// The value of `"__metadata__"`.
    Metadata,
    /// The entry of a tensor.
    Tensor(&'a str),
    /// Deeper, inside the entry of a tensor (or the metadata, for `None`).
    Nested(Option<&'a str>),
}

impl Within<'_> {
    fn twice(self, key: &str) -> String {
        match self {
            Within::Header if key == "__metadata__" => {
                "\"__metadata__\" appears more than once in the header".to_owned()
            }
            Within::Header => format!("tensor '{key}' appears more than once in the header"),
            Within::Metadata => {
                format!("the header's \"__metadata__\" lists \"{key}\" more than once")
            }
            Within::Tensor(name) => format!("tensor '{name}' lists \"{key}\" more than once"),
            Within::Nested(Some(name)) => format!(
                "an object inside the entry of tensor '{name}' lists \"{key}\" more than once"
            ),
            Within::Nested(None) => {
                format!("an object inside the header lists \"{key}\" more than once")
            }
        }
    }

    /// Where the elements of an array here lie.
    fn element(self) -> Self {
        match self {
            Within::Header | Within::Metadata => Within::Nested(None),
            Within::Tensor(name) => Within::Nested(Some(name)),
            nested @ Within::Nested(_) => nested,
        }
    }

    /// Where the value of `key` in an object here lies.
    fn child<'k>(self, key: &'k str) -> Within<'k>
    where
        Self: 'k,
    {
        match self {
            Within::Header if key == "__metadata__" => Within::Metadata,
            Within::Header => Within::Tensor(key),
            Within::Metadata => Within::Nested(None),
            Within::Tensor(name) | Within::Nested(Some(name)) => Within::Nested(Some(name)),
            Within::Nested(None) => Within::Nested(None),
        }
    }
}

/// Reads one value at `within` (a [`DeserializeSeed`] that is also its visitor).
#[derive(Clone, Copy)]
struct Strict<'a>(Within<'a>);

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Value, E> {
        Ok(Value::Bool)
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Count(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(u64::try_from(v).map_or(Value::Number, Value::Count))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Value, E> {
        Ok(Value::Number)
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inside = self.0.element();
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Strict(inside))? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut pairs = Vec::new();
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(de::Error::custom(self.0.twice(&key)));
            }
            let value = map.next_value_seed(Strict(self.0.child(&key)))?;
            pairs.push((key, value));
        }
        Ok(Value::Object(pairs))
    }
}

/// Parses a header: one JSON value followed only by whitespace. The error is in plain
/// words: a syntax error says what was expected and at which byte of the header, a key
/// given twice names the tensor (or the metadata) and the key.
pub(crate) fn parse(text: &str) -> Result<Value, String> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = Strict(Within::Header)
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v));
    value.map_err(|e| describe(text, &e))
}

/// Plain words for a `serde_json` error on `text`, with the byte it was found at.
fn describe(text: &str, e: &serde_json::Error) -> String {
    let full = e.to_string();
    let message = full
        .strip_suffix(&format!(" at line {} column {}", e.line(), e.column()))
        .unwrap_or(&full);
    match e.classify() {
        // Our own refusals (a key given twice): already in words, and not about syntax.
        serde_json::error::Category::Data => message.to_owned(),
        serde_json::error::Category::Eof => {
            format!(
                "the header is not valid JSON: {message}, but the header ends at byte {}",
                text.len()
            )
        }
        _ => {
            let mut at = offset(text, e.line(), e.column());
            // A misspelt `true`, `false` or `null` is reported at its first letter.
            if message.starts_with("expected ident") {
                while at > 0 && text.as_bytes()[at - 1].is_ascii_alphabetic() {
                    at -= 1;
                }
            }
            match text.get(at..).and_then(|rest| rest.chars().next()) {
                Some(c) => format!(
                    "the header is not valid JSON: {message}, found {c:?} at byte {at} of the \
                     header"
                ),
                None => format!(
                    "the header is not valid JSON: {message}, but the header ends at byte {at}"
                ),
            }
        }
    }
}

/// The byte of `text` at one-based `line` and `column` (`serde_json` counts columns in
/// bytes, and reports the byte an error is about).
fn offset(text: &str, line: usize, column: usize) -> usize {
    let start = if line <= 1 {
        0
    } else {
        text.bytes()
            .enumerate()
            .filter(|&(_, b)| b == b'\n')
            .nth(line - 2)
            .map_or(text.len(), |(i, _)| i + 1)
    };
    let at = start + column.saturating_sub(1);
    // Never inside a character: back to its first byte.
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_json_is_read() {
        let ok = [
            r#"{}"#,
            r#"{"a":[1,-2.5e+3,0,true,false,null,"x\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00"]}  "#,
            "{ \"k\" : { \"n\" : [ ] } }\n",
        ];
        for text in ok {
            assert!(parse(text).is_ok(), "{text}");
        }
        let v = parse(r#"{"b":[0,18446744073709551615,-1,1.0,18446744073709551616],"a":"\u00e9"}"#)
            .unwrap();
        assert_eq!(
            v,
            Value::Object(vec![
                (
                    "b".to_owned(),
                    Value::Array(vec![
                        Value::Count(0),
                        Value::Count(u64::MAX),
                        Value::Number,
                        Value::Number,
                        Value::Number,
                    ])
                ),
                ("a".to_owned(), Value::Str("é".to_owned())),
            ])
        );
    }

    /// Where each error is reported: the byte positions are counted by hand from the text.
    #[test]
    fn syntax_errors_name_the_byte_they_are_at() {
        let bad = [
            (r#"{"a":1,}"#, 7, '}'),
            (r#"{"a" 1}"#, 5, '1'),
            (r#"{"a":01}"#, 6, '1'),
            (r#"{"a":[1 2]}"#, 8, '2'),
            (r#"{"a":tru}"#, 5, 't'),
            (r#"{"a":nope}"#, 5, 'n'),
            (r#"{"a":1} x"#, 8, 'x'),
            ("{\"a\":1,\n \"b\":x}", 13, 'x'),
            (r#"{"é":1,}"#, 8, '}'),
        ];
        for (text, at, c) in bad {
            let e = parse(text).err().unwrap_or_else(|| panic!("{text}"));
            assert!(
                e.starts_with("the header is not valid JSON: "),
                "{text}: {e}"
            );
            assert!(
                e.ends_with(&format!(", found {c:?} at byte {at} of the header")),
                "{text}: {e}"
            );
        }
        for text in [r#"{"a":"x"#, r#"{"a":"#, "{"] {
            let e = parse(text).unwrap_err();
            assert!(
                e.ends_with(&format!("but the header ends at byte {}", text.len())),
                "{text}: {e}"
            );
        }
        // Strings: a lone surrogate or a raw control character is refused.
        assert!(parse(r#"{"a":"\ud800"}"#).is_err());
        assert!(parse("{\"a\":\"\u{1}\"}").is_err());
        // Deep nesting is refused, not a stack overflow.
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(200), "]".repeat(200));
        let e = parse(&deep).unwrap_err();
        assert!(e.contains("recursion limit exceeded"), "{e}");
    }

    #[test]
    fn a_key_given_twice_is_refused_with_where() {
        let cases = [
            (
                r#"{"a":{},"b":{},"a":{}}"#,
                "tensor 'a' appears more than once in the header",
            ),
            (
                r#"{"__metadata__":{},"__metadata__":null}"#,
                "\"__metadata__\" appears more than once in the header",
            ),
            (
                r#"{"__metadata__":{"k":"1","k":"2"}}"#,
                "the header's \"__metadata__\" lists \"k\" more than once",
            ),
            (
                r#"{"w":{"dtype":"F32","dtype":"F32"}}"#,
                "tensor 'w' lists \"dtype\" more than once",
            ),
            (
                r#"{"w":{"x":[{"y":1,"y":1}]}}"#,
                "an object inside the entry of tensor 'w' lists \"y\" more than once",
            ),
            (
                r#"{"__metadata__":[{"y":1,"y":1}]}"#,
                "an object inside the header lists \"y\" more than once",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(parse(text).unwrap_err(), expected, "{text}");
        }
        // The same key in different objects is fine.
        assert!(parse(r#"{"a":{"k":1},"b":{"k":1},"k":{"a":1}}"#).is_ok());
    }
}
