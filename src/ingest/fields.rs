//! Ingest: a JSON object's fields, read one by one by name. Every refusal names the field's
//! path (`events[1].platform`) and says what was expected in a client author's words ("a
//! string", "true or false"), never in a Rust type's; the code is the field's own, the same a
//! form body gets for the same fault.

use serde_json::{Map, Value};

use super::{Code, IngestError};
use crate::text::printable;

/// Game engines send ids and times as numbers or as strings; both are accepted.
#[derive(Debug, Clone)]
pub(super) enum Scalar {
    Text(String),
    Integer(i64),
    Float(f64),
}

/// The fields of one JSON object, taken out as they are read; what is left at [`Fields::done`]
/// is unknown.
pub(crate) struct Fields {
    object: Map<String, Value>,
    /// `events[1].` for an event of a batch; empty for a body that is one object.
    prefix: String,
}

impl Fields {
    /// `value` as an object; `path` names it in the refusal (`events[1]`), `None` for the body.
    pub(super) fn of(value: Value, path: Option<String>) -> Result<Fields, IngestError> {
        match value {
            Value::Object(object) => Ok(Fields {
                object,
                prefix: path.map(|path| format!("{path}.")).unwrap_or_default(),
            }),
            other => Err(IngestError::bad(
                Code::InvalidJson,
                format!(
                    "{} must be a JSON object, not {}",
                    path.map_or("the body".to_string(), |path| format!("`{path}`")),
                    kind(&other)
                ),
            )),
        }
    }

    /// The field's name as the client sees it in a refusal: `events[1].platform`.
    pub(super) fn path(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// A string field; `null` is the same as leaving it out.
    pub(super) fn text(&mut self, name: &str) -> Result<Option<String>, IngestError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            Some(other) => Err(self.wrong(name, "a string", &other)),
        }
    }

    /// A string field that must be there and hold more than spaces.
    pub(super) fn required_text(&mut self, name: &str) -> Result<String, IngestError> {
        match self.text(name)? {
            Some(text) if !text.trim().is_empty() => Ok(text),
            _ => Err(missing(&self.path(name))),
        }
    }

    /// `true` or `false`.
    pub(super) fn flag(&mut self, name: &str) -> Result<Option<bool>, IngestError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::Bool(flag)) => Ok(Some(flag)),
            Some(other) => Err(self.wrong(name, "true or false", &other)),
        }
    }

    /// A string or a number: game engines send ids and times either way.
    pub(super) fn scalar(&mut self, name: &str) -> Result<Option<Scalar>, IngestError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(Scalar::Text(text))),
            Some(Value::Number(number)) => Ok(Some(match number.as_i64() {
                Some(integer) => Scalar::Integer(integer),
                None => Scalar::Float(number.as_f64().unwrap_or(f64::NAN)),
            })),
            Some(other) => Err(self.wrong(name, "a string or a number", &other)),
        }
    }

    /// A field that is read and dropped, whatever it holds.
    pub(super) fn skip(&mut self, name: &str) {
        self.object.remove(name);
    }

    /// Refuses the first field no getter took; `known` lists the fields in the refusal.
    pub(super) fn done(self, known: &[&str]) -> Result<(), IngestError> {
        match self.object.keys().next() {
            None => Ok(()),
            Some(name) => Err(unknown_field(&self.path(name), known)),
        }
    }

    fn take(&mut self, name: &str) -> Option<Value> {
        self.object.remove(name).filter(|value| !value.is_null())
    }

    fn wrong(&self, name: &str, expected: &str, got: &Value) -> IngestError {
        IngestError::bad(
            invalid_code(name),
            format!(
                "`{}` must be {expected}, not {}",
                self.path(name),
                kind(got)
            ),
        )
    }
}

/// The code of a field holding a value of the wrong kind or form: the field's own where it has
/// checks of its own (so `"platform": 5` and `platform=xbox9` are the same fault), else
/// `invalid_field`.
pub(crate) fn invalid_code(name: &str) -> Code {
    match name {
        "user_id" => Code::InvalidUserId,
        "event_name" => Code::InvalidEventName,
        "ip" => Code::InvalidIp,
        "time_stamp" | "timestamp" => Code::InvalidTimeStamp,
        "platform" => Code::InvalidPlatform,
        "storefront" => Code::InvalidStorefront,
        "event_id" => Code::InvalidEventId,
        "url" => Code::InvalidUrl,
        "id" => Code::InvalidId,
        "game" => Code::InvalidGame,
        _ => Code::InvalidField,
    }
}

/// A required field left out, `null`, or only spaces.
pub(crate) fn missing(path: &str) -> IngestError {
    IngestError::bad(Code::MissingField, format!("`{path}` is required"))
}

/// A field the endpoint does not take.
pub(crate) fn unknown_field(path: &str, known: &[&str]) -> IngestError {
    IngestError::bad(
        Code::UnknownField,
        format!(
            "unknown field `{}`; the fields are: {}",
            printable(path),
            known.join(", ")
        ),
    )
}

/// What a JSON value is, in a client author's words.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "true or false",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(json: &str) -> Fields {
        Fields::of(serde_json::from_str(json).expect("json"), None).expect("object")
    }

    #[test]
    fn a_wrong_kind_names_the_field_and_what_was_expected() {
        let refused = fields(r#"{"platform": 5}"#).text("platform").unwrap_err();
        assert_eq!(refused.code.as_str(), "invalid_platform");
        assert_eq!(refused.message, "`platform` must be a string, not a number");
        let refused = fields(r#"{"consent": "yes"}"#).flag("consent").unwrap_err();
        assert_eq!(refused.code.as_str(), "invalid_field");
        assert_eq!(
            refused.message,
            "`consent` must be true or false, not a string"
        );
    }

    #[test]
    fn a_batch_event_is_named_by_its_index() {
        let value = serde_json::json!({"user_id": true, "extra": 1});
        let mut event = Fields::of(value, Some("events[3]".into())).expect("object");
        let refused = event.scalar("user_id").unwrap_err();
        assert_eq!(refused.code.as_str(), "invalid_user_id");
        assert_eq!(
            refused.message,
            "`events[3].user_id` must be a string or a number, not true or false"
        );
        let refused = event.done(&["user_id"]).unwrap_err();
        assert_eq!(refused.code.as_str(), "unknown_field");
        assert!(refused.message.contains("`events[3].extra`"), "{refused}");
        let refused = Fields::of(serde_json::json!(7), Some("events[0]".into())).err();
        assert_eq!(
            refused.map(|err| err.message),
            Some("`events[0]` must be a JSON object, not a number".into())
        );
    }

    #[test]
    fn null_is_left_out_and_a_required_field_must_hold_text() {
        let mut body = fields(r#"{"url": null, "game": "  ", "referrer": null}"#);
        assert_eq!(body.text("referrer").ok(), Some(None));
        assert_eq!(
            body.required_text("url").unwrap_err().code.as_str(),
            "missing_field"
        );
        assert_eq!(
            body.required_text("game").unwrap_err().code.as_str(),
            "missing_field"
        );
        assert!(body.done(&[]).is_ok());
    }
}
