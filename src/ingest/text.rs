//! Ingest: hostile text kept out of the store: control characters, bytes that are not UTF-8,
//! and JSON keys sent twice.
//!
//! The rules (docs/api.md, "Hostile text"): a UTM value or a click id comes from a URL that a
//! visitor's browser may have mangled, so its control characters are removed and the visit is
//! kept; an identifier (`user_id`) is refused with 400, since two ids that differ only in what
//! would be removed must not become one player. A form whose percent-decoded bytes are not
//! UTF-8, a JSON body that is not UTF-8 (anywhere, ignored fields included) and a JSON object
//! that names a key twice are refused with 400: each has two readings, and the store must not
//! pick one silently.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::{Code, IngestError};
use crate::text::{printable, without_controls};

/// The `name=value` pairs of an `application/x-www-form-urlencoded` body, decoded. Unlike
/// `url::form_urlencoded::parse`, which turns bytes that are not UTF-8 into U+FFFD (so that
/// `user_id=%FF` and `user_id=%FE` were one player), such a field is refused, by name.
pub(crate) fn form_pairs(body: &[u8]) -> Result<Vec<(String, String)>, IngestError> {
    let mut pairs = Vec::new();
    for field in body.split(|byte| *byte == b'&') {
        if field.is_empty() {
            continue;
        }
        let (name, value) = match field.iter().position(|byte| *byte == b'=') {
            Some(at) => (&field[..at], &field[at + 1..]),
            None => (field, &[][..]),
        };
        let name = form_decode(name).ok_or_else(|| {
            IngestError::bad(
                Code::InvalidEncoding,
                "a form field's name is not UTF-8 once percent-decoded",
            )
        })?;
        let value = form_decode(value).ok_or_else(|| {
            IngestError::bad(
                Code::InvalidEncoding,
                format!("`{}` is not UTF-8 once percent-decoded", printable(&name)),
            )
        })?;
        pairs.push((name, value));
    }
    Ok(pairs)
}

/// `+` as a space, then `%XX` as the byte; `None` unless the bytes are UTF-8.
fn form_decode(encoded: &[u8]) -> Option<String> {
    let spaced: Vec<u8> = encoded
        .iter()
        .map(|byte| if *byte == b'+' { b' ' } else { *byte })
        .collect();
    let bytes: Vec<u8> = percent_encoding::percent_decode(&spaced).collect();
    String::from_utf8(bytes).ok()
}

/// A JSON body as a tree, refused when an object names a key twice (serde_json would keep the
/// last, so `{"user_id": "a", "user_id": "b"}` would be player "b" to the store while a log or
/// a proxy reading the first saw "a"). Every string is checked for UTF-8 on the way, those a
/// typed body would skip as well.
pub(crate) fn json_value(body: &[u8]) -> Result<Value, IngestError> {
    let duplicate = Cell::new(None);
    let mut reader = serde_json::Deserializer::from_slice(body);
    let parsed = Unique {
        duplicate: &duplicate,
    }
    .deserialize(&mut reader)
    .and_then(|value| reader.end().map(|()| value));
    match (parsed, duplicate.take()) {
        (_, Some(key)) => Err(IngestError::bad(
            Code::DuplicateField,
            format!("field `{}` appears more than once", printable(&key)),
        )),
        (Ok(value), None) => Ok(value),
        (Err(err), None) => Err(invalid_json(err)),
    }
}

fn invalid_json(err: serde_json::Error) -> IngestError {
    IngestError::bad(
        Code::InvalidJson,
        format!("invalid JSON body: {}", serde_message(&err)),
    )
}

/// The parser's sentence (where the syntax broke: "expected value at line 1 column 3"),
/// without control characters.
fn serde_message(err: &serde_json::Error) -> String {
    without_controls(&err.to_string()).into_owned()
}

/// Builds a [`Value`] as serde_json's own visitor does, except that a repeated key stops the
/// parse and is named in `duplicate`, so the refusal can say which field it was.
#[derive(Clone, Copy)]
struct Unique<'a> {
    duplicate: &'a Cell<Option<String>>,
}

impl<'de> DeserializeSeed<'de> for Unique<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Unique<'_> {
    type Value = Value;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Value, A::Error> {
        let mut array = Vec::new();
        while let Some(item) = items.next_element_seed(self)? {
            array.push(item);
        }
        Ok(Value::Array(array))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = entries.next_key::<String>()? {
            let value = entries.next_value_seed(self)?;
            if object.contains_key(&key) {
                let message = format!("duplicate field `{}`", printable(&key));
                self.duplicate.set(Some(key));
                return Err(de::Error::custom(message));
            }
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode_strictly() {
        assert_eq!(
            form_pairs(b"user_id=a+b%21&&event_name=&flag").expect("valid"),
            vec![
                ("user_id".to_string(), "a b!".to_string()),
                ("event_name".to_string(), String::new()),
                ("flag".to_string(), String::new()),
            ]
        );
        let refused = form_pairs(b"user_id=%FF").expect_err("not UTF-8");
        assert_eq!(refused.code.as_str(), "invalid_encoding");
        assert!(refused.message.contains("`user_id`"), "{}", refused.message);
        assert!(form_pairs(b"%C3=1").is_err(), "a cut sequence in a name");
        assert!(
            form_pairs("user_id=%E2%82%AC".as_bytes()).is_ok(),
            "the euro sign"
        );
        // A malformed escape stays as sent, as browsers and url's parser keep it.
        assert_eq!(
            form_pairs(b"a=%zz%").expect("valid"),
            vec![("a".to_string(), "%zz%".to_string())]
        );
    }

    #[test]
    fn json_names_a_repeated_key_at_any_depth() {
        for body in [
            r#"{"user_id": "a", "user_id": "b"}"#,
            r#"[{"x": 1}, {"user_id": 1, "y": {"k": 1, "k": 2}, "user_id": 2}]"#,
        ] {
            let refused = json_value(body.as_bytes()).expect_err(body);
            assert_eq!(refused.code.as_str(), "duplicate_field", "{body}");
        }
        let refused = json_value(br#"{"y": {"k": 1, "k": 2}}"#).expect_err("nested");
        assert!(refused.message.contains("`k`"), "{}", refused.message);
        let value = json_value(br#"{"a": [1, -2, 2.5, "x", null, true], "b": {}}"#).expect("ok");
        assert_eq!(value["a"][2], 2.5);
        assert_eq!(
            json_value(b"{} x").expect_err("trailing").code.as_str(),
            "invalid_json"
        );
        assert_eq!(
            json_value(b"{\"a\": \"\xff\"}")
                .expect_err("UTF-8")
                .code
                .as_str(),
            "invalid_json"
        );
    }
}
