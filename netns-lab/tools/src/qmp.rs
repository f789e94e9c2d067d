//! The QEMU Machine Protocol as `skyvine-qmp` speaks it: one JSON object per line on a unix
//! socket. QEMU greets with `{"QMP": …}`, the client sends `qmp_capabilities`, then commands
//! `{"execute": NAME, "arguments": {…}, "id": N}`; QEMU answers `{"return": …, "id": N}` or
//! `{"error": {"class": …, "desc": …}, "id": N}` and, at any time in between, sends events
//! `{"event": NAME, "data": {…}, "timestamp": {"seconds": S, "microseconds": US}}`.
//!
//! Pure: this module classifies lines and builds commands; the socket is the binary's. Event
//! timestamps are QEMU's wall clock (`g_get_real_time`), so events of two QEMU processes on one
//! host compare directly: a live migration's guest off time is the destination's `RESUME`
//! minus the source's `STOP`.

use serde_json::{Map, Value};
use thiserror::Error;

/// One message from QEMU.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// The greeting sent on connect (its version object).
    Greeting { version: Value },
    /// A command's result.
    Return { id: Option<u64>, value: Value },
    /// A command's failure.
    Error {
        id: Option<u64>,
        class: String,
        desc: String,
    },
    /// An asynchronous event.
    Event(Event),
}

/// An event with QEMU's timestamp.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub name: String,
    /// Microseconds since the Unix epoch, QEMU's wall clock.
    pub at_us: i64,
    pub data: Value,
}

/// Why a line is not a QMP message.
#[derive(Debug, Error, PartialEq)]
pub enum ParseError {
    #[error("not JSON: {0}")]
    Json(String),
    #[error("not a QMP message (no QMP, return, error or event key): {0}")]
    Unknown(String),
    #[error("event {name} without a valid timestamp")]
    Timestamp { name: String },
}

/// Classifies one line from QEMU.
pub fn parse(line: &str) -> Result<Message, ParseError> {
    let value: Value =
        serde_json::from_str(line.trim()).map_err(|e| ParseError::Json(e.to_string()))?;
    let Value::Object(object) = value else {
        return Err(ParseError::Unknown(shorten(line)));
    };
    let id = object.get("id").and_then(Value::as_u64);
    if let Some(greeting) = object.get("QMP") {
        return Ok(Message::Greeting {
            version: greeting.get("version").cloned().unwrap_or(Value::Null),
        });
    }
    if let Some(value) = object.get("return") {
        return Ok(Message::Return {
            id,
            value: value.clone(),
        });
    }
    if let Some(error) = object.get("error") {
        let text = |key: &str| {
            error
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        return Ok(Message::Error {
            id,
            class: text("class"),
            desc: text("desc"),
        });
    }
    if let Some(name) = object.get("event").and_then(Value::as_str) {
        return event(name, &object).map(Message::Event);
    }
    Err(ParseError::Unknown(shorten(line)))
}

fn event(name: &str, object: &Map<String, Value>) -> Result<Event, ParseError> {
    let stamp = object.get("timestamp");
    let field = |key: &str| stamp.and_then(|t| t.get(key)).and_then(Value::as_i64);
    let (Some(seconds), Some(micros)) = (field("seconds"), field("microseconds")) else {
        return Err(ParseError::Timestamp {
            name: name.to_owned(),
        });
    };
    let at_us = seconds
        .checked_mul(1_000_000)
        .and_then(|us| us.checked_add(micros))
        .filter(|_| (0..1_000_000).contains(&micros))
        .ok_or_else(|| ParseError::Timestamp {
            name: name.to_owned(),
        })?;
    Ok(Event {
        name: name.to_owned(),
        at_us,
        data: object.get("data").cloned().unwrap_or(Value::Null),
    })
}

/// The line that runs `command` with `arguments` (an object, or null for none) under `id`.
pub fn command(command: &str, arguments: Value, id: u64) -> String {
    let mut object = Map::new();
    object.insert("execute".into(), command.into());
    if !arguments.is_null() {
        object.insert("arguments".into(), arguments);
    }
    object.insert("id".into(), id.into());
    let mut line = Value::Object(object).to_string();
    line.push('\n');
    line
}

/// `query-migrate`'s status, as far as a client waiting for the end cares.
#[derive(Debug, Clone, PartialEq)]
pub enum MigrationState {
    /// Still going (setup, active, device, pre-switchover…): the status word.
    Running(String),
    Completed,
    /// Failed or cancelled, with QEMU's reason when it gave one.
    Failed(String),
}

/// Reads the `status` (and on failure `error-desc`) of a `query-migrate` result.
pub fn migration_state(info: &Value) -> MigrationState {
    let status = info.get("status").and_then(Value::as_str).unwrap_or("none");
    match status {
        "completed" => MigrationState::Completed,
        "failed" | "cancelled" | "cancelling" => {
            let desc = info
                .get("error-desc")
                .and_then(Value::as_str)
                .unwrap_or("no reason given");
            MigrationState::Failed(format!("{status}: {desc}"))
        }
        other => MigrationState::Running(other.to_owned()),
    }
}

/// A millisecond figure of a `query-migrate` result (`total-time`, `downtime`, `setup-time`).
pub fn migration_ms(info: &Value, key: &str) -> Option<u64> {
    info.get(key).and_then(Value::as_u64)
}

/// The guest's off time in milliseconds: from the source's STOP to the destination's RESUME.
pub fn off_time_ms(stop: &Event, resume: &Event) -> f64 {
    (resume.at_us - stop.at_us) as f64 / 1000.0
}

fn shorten(line: &str) -> String {
    line.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn greeting_returns_errors_and_events_are_told_apart() {
        let greeting = r#"{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7+deb12u18+b3"}, "capabilities": ["oob"]}}"#;
        assert!(matches!(parse(greeting), Ok(Message::Greeting { .. })));
        assert_eq!(
            parse(r#"{"return": {}, "id": 3}"#),
            Ok(Message::Return {
                id: Some(3),
                value: json!({})
            })
        );
        assert_eq!(
            parse(r#"{"id": 4, "error": {"class": "GenericError", "desc": "no such thing"}}"#),
            Ok(Message::Error {
                id: Some(4),
                class: "GenericError".into(),
                desc: "no such thing".into()
            })
        );
        let stop =
            r#"{"timestamp": {"seconds": 1700000000, "microseconds": 250000}, "event": "STOP"}"#;
        let Ok(Message::Event(stop)) = parse(stop) else {
            panic!("STOP not parsed");
        };
        assert_eq!(stop.name, "STOP");
        assert_eq!(stop.at_us, 1_700_000_000_250_000);
    }

    #[test]
    fn garbage_and_events_without_time_are_refused() {
        assert!(matches!(parse("not json"), Err(ParseError::Json(_))));
        assert!(matches!(parse("[1, 2]"), Err(ParseError::Unknown(_))));
        assert!(matches!(
            parse(r#"{"foo": 1}"#),
            Err(ParseError::Unknown(_))
        ));
        assert_eq!(
            parse(r#"{"event": "RESUME"}"#),
            Err(ParseError::Timestamp {
                name: "RESUME".into()
            })
        );
        assert!(matches!(
            parse(r#"{"event": "RESUME", "timestamp": {"seconds": 1, "microseconds": 1000000}}"#),
            Err(ParseError::Timestamp { .. })
        ));
        assert!(matches!(
            parse(&format!(
                r#"{{"event": "X", "timestamp": {{"seconds": {}, "microseconds": 0}}}}"#,
                i64::MAX
            )),
            Err(ParseError::Timestamp { .. })
        ));
    }

    #[test]
    fn commands_are_one_line_with_arguments_only_when_given() {
        let line = command("migrate", json!({"uri": "unix:/tmp/m.sock"}), 7);
        assert!(line.ends_with('\n') && !line.trim_end().contains('\n'));
        let back: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            back,
            json!({"execute": "migrate", "arguments": {"uri": "unix:/tmp/m.sock"}, "id": 7})
        );
        let bare: Value = serde_json::from_str(&command("cont", Value::Null, 8)).unwrap();
        assert_eq!(bare, json!({"execute": "cont", "id": 8}));
    }

    #[test]
    fn migration_status_and_off_time() {
        assert_eq!(
            migration_state(&json!({"status": "active"})),
            MigrationState::Running("active".into())
        );
        assert_eq!(
            migration_state(&json!({"status": "completed", "downtime": 12})),
            MigrationState::Completed
        );
        assert_eq!(
            migration_state(&json!({"status": "failed", "error-desc": "socket closed"})),
            MigrationState::Failed("failed: socket closed".into())
        );
        assert_eq!(migration_ms(&json!({"downtime": 12}), "downtime"), Some(12));
        let at = |us| Event {
            name: String::new(),
            at_us: us,
            data: Value::Null,
        };
        assert_eq!(off_time_ms(&at(1_000_000), &at(1_012_500)), 12.5);
    }
}
