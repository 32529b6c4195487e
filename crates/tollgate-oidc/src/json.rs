//! JSON objects that refuse duplicate member names, at any depth.
//!
//! `serde_json` keeps the last of two members with the same name; another parser may keep the
//! first. A token whose header says `"alg":"RS256","alg":"none"` must not mean different things
//! to different readers, so it is refused.

use std::fmt;

use serde::Deserializer;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Why a document was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JsonError {
    /// Not JSON, or not an object at the top.
    Invalid,
    /// A member name repeats within one object.
    DuplicateKey,
}

/// Parses `bytes` as one JSON object (surrounding whitespace allowed), refusing duplicate
/// member names anywhere inside. Nesting is limited by `serde_json`'s recursion limit.
pub(crate) fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, JsonError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = match StrictSeed.deserialize(&mut de) {
        Ok(v) => v,
        // Every value the visitor is offered is accepted; the only data error it raises is a
        // repeated member name. Syntax, EOF and I/O errors are other categories.
        Err(e) if e.is_data() => return Err(JsonError::DuplicateKey),
        Err(_) => return Err(JsonError::Invalid),
    };
    if de.end().is_err() {
        return Err(JsonError::Invalid);
    }
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(JsonError::Invalid),
    }
}

#[derive(Clone, Copy)]
struct StrictSeed;

impl<'de> DeserializeSeed<'de> for StrictSeed {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
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
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(StrictSeed)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom("duplicate member name"));
            }
            let value = map.next_value_seed(StrictSeed)?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_only() {
        assert!(parse_object(br#"{"a":1}"#).is_ok());
        assert!(parse_object(b" {\"a\":[1,2,{\"b\":null}]} \n").is_ok());
        assert_eq!(parse_object(b"[1]"), Err(JsonError::Invalid));
        assert_eq!(parse_object(b"\"x\""), Err(JsonError::Invalid));
        assert_eq!(parse_object(b"{} {}"), Err(JsonError::Invalid));
        assert_eq!(parse_object(b"{"), Err(JsonError::Invalid));
        assert_eq!(parse_object(b""), Err(JsonError::Invalid));
        assert_eq!(parse_object(b"{\"a\":\"\xff\"}"), Err(JsonError::Invalid));
    }

    #[test]
    fn duplicates_refused_at_any_depth() {
        assert_eq!(
            parse_object(br#"{"a":1,"a":2}"#),
            Err(JsonError::DuplicateKey)
        );
        assert_eq!(
            parse_object(br#"{"a":{"b":1,"b":1}}"#),
            Err(JsonError::DuplicateKey)
        );
        assert_eq!(
            parse_object(br#"{"a":[{"b":1,"b":1}]}"#),
            Err(JsonError::DuplicateKey)
        );
        // An escape that spells the same name is the same name.
        assert_eq!(
            parse_object(br#"{"alg":1,"\u0061lg":2}"#),
            Err(JsonError::DuplicateKey)
        );
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(parse_object(deep.as_bytes()), Err(JsonError::Invalid));
    }
}
