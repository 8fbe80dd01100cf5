//! Strict reading of the JSON files this crate loads (plans, score files): every key of every
//! object is seen, so a key given twice is an error instead of silently keeping the last
//! value, and digests are checked to be SHA-256 digests.

use std::fmt;

use serde::Deserializer;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// How a duplicate key is described: given the path of the object that holds it (`""` for
/// the top level, e.g. `remove` or `layers[2].scores`) and the key, the words of the error
/// (serde_json appends the line and column).
pub(crate) type Describe<'a> = &'a dyn Fn(&str, &str) -> String;

/// Why [`parse`] refused a text.
#[derive(Debug)]
pub(crate) enum JsonError {
    /// Not JSON at all (syntax, or the text ends early).
    Syntax(serde_json::Error),
    /// Valid JSON with a key given twice in one object (the description, with its position).
    Duplicate(String),
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JsonError::Syntax(e) => write!(f, "not JSON: {e}"),
            JsonError::Duplicate(d) => f.write_str(d),
        }
    }
}

/// Parses `text` as one JSON value, refusing any object that holds a key twice.
pub(crate) fn parse(text: &str, describe: Describe<'_>) -> Result<Value, JsonError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = Strict {
        path: String::new(),
        describe,
    }
    .deserialize(&mut de)
    .and_then(|v| de.end().map(|()| v))
    .map_err(|e| match e.classify() {
        serde_json::error::Category::Data => JsonError::Duplicate(e.to_string()),
        _ => JsonError::Syntax(e),
    })?;
    Ok(value)
}

/// The generic description of a duplicate key: `the key "u" appears twice in
/// layers[2].scores`.
pub(crate) fn duplicate_key(path: &str, key: &str) -> String {
    let key = quoted(key);
    if path.is_empty() {
        format!("the key {key} appears twice at the top level; each key may appear once")
    } else {
        format!(
            "the key {key} appears twice in {}; each key may appear once",
            cut(path)
        )
    }
}

/// Checks that `value` is a SHA-256 digest as fair-pruner writes it: exactly 64 lowercase
/// hexadecimal digits. `field` names it in the error.
pub(crate) fn check_digest(field: &str, value: &str) -> Result<(), String> {
    let hex = |c: u8| c.is_ascii_digit() || (b'a'..=b'f').contains(&c);
    if value.len() == 64 && value.bytes().all(hex) {
        return Ok(());
    }
    Err(format!(
        "\"{field}\" must be a SHA-256 digest, 64 lowercase hexadecimal digits (0-9, a-f), found {} ({} characters)",
        quoted(value),
        value.chars().count()
    ))
}

/// `value` quoted for an error message, cut after 80 characters.
pub(crate) fn quoted(value: &str) -> String {
    match value.char_indices().nth(80) {
        Some((end, _)) => format!("{:?}...", &value[..end]),
        None => format!("{value:?}"),
    }
}

/// `path` for an error message, cut after 80 characters.
pub(crate) fn cut(path: &str) -> String {
    match path.char_indices().nth(80) {
        Some((end, _)) => format!("{}...", &path[..end]),
        None => path.to_owned(),
    }
}

/// A `serde_json::Value` seed that refuses duplicate keys; `path` locates the value.
struct Strict<'a> {
    path: String,
    describe: Describe<'a>,
}

impl Strict<'_> {
    fn child(&self, step: fmt::Arguments<'_>) -> Self {
        Strict {
            path: format!("{}{step}", self.path),
            describe: self.describe,
        }
    }
}

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // serde_json never yields a non-finite number; `from` maps one to null.
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(self.child(format_args!("[{}]", items.len())))? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom((self.describe)(&self.path, &key)));
            }
            let child = if self.path.is_empty() {
                self.child(format_args!("{key}"))
            } else {
                self.child(format_args!(".{key}"))
            };
            let value = map.next_value_seed(child)?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_keys_are_found_at_any_depth_with_their_path() {
        let ok = parse(r#"{"a": [1, {"b": 2}], "c": {"d": null}}"#, &duplicate_key).unwrap();
        assert_eq!(ok["a"][1]["b"], 2);
        for (text, needle) in [
            (
                r#"{"a": 1, "a": 1}"#,
                "\"a\" appears twice at the top level",
            ),
            (r#"{"x": {"k": 1, "k": 2}}"#, "\"k\" appears twice in x;"),
            (
                r#"{"x": [{}, {"k": 1, "k": 2}]}"#,
                "\"k\" appears twice in x[1];",
            ),
        ] {
            let e = parse(text, &duplicate_key).unwrap_err();
            assert!(matches!(e, JsonError::Duplicate(_)), "{text}");
            let e = e.to_string();
            assert!(e.contains(needle) && e.contains("column"), "{text}: {e}");
        }
        // A huge key is cut in the message.
        let k = "k".repeat(10_000);
        let e = parse(
            &format!(r#"{{"{k}": {{"{k}": 1, "{k}": 2}}}}"#),
            &duplicate_key,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("appears twice") && e.len() < 400, "{e}");
        let e = parse(r#"{"a": 1"#, &duplicate_key).unwrap_err();
        assert!(matches!(e, JsonError::Syntax(_)), "{e}");
        assert!(matches!(
            parse("{} {}", &duplicate_key),
            Err(JsonError::Syntax(_))
        ));
    }

    #[test]
    fn digests_are_64_lowercase_hex_digits() {
        assert!(check_digest("d", &"0a".repeat(32)).is_ok());
        for bad in [
            "xyz".to_owned(),
            String::new(),
            "0".repeat(63),
            "0".repeat(65),
            "A".repeat(64),
            format!("{}g", "0".repeat(63)),
            "é".repeat(32),
        ] {
            let e = check_digest("model_digest", &bad).unwrap_err();
            assert!(
                e.contains("\"model_digest\"") && e.contains("64"),
                "{bad}: {e}"
            );
        }
    }
}
