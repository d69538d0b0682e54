//! Accepts the three forms an operator pastes and yields the task definition object.
//!
//! * the bare task definition from the ECS console's JSON tab (read-only fields included);
//! * a DescribeTaskDefinition response, `{"taskDefinition": {...}, "tags": [...]}`, whose
//!   tags become the RegisterTaskDefinition `tags`;
//! * a RegisterTaskDefinition input (`--cli-input-json`), which is already clean.

use serde_json::{Map, Value};

use crate::error::ProtectError;

/// Largest input accepted; a real task definition is a few kilobytes.
pub const MAX_INPUT_BYTES: usize = 1024 * 1024;

/// Parses `input` and extracts the task definition object (tags merged in), before cleaning.
pub(crate) fn accept(input: &str) -> Result<Map<String, Value>, ProtectError> {
    if input.len() > MAX_INPUT_BYTES {
        return Err(ProtectError::TooLarge {
            size: input.len(),
            limit: MAX_INPUT_BYTES,
        });
    }
    // Text copied on Windows may start with a byte-order mark, which JSON parsers reject.
    let text = input.strip_prefix('\u{feff}').unwrap_or(input);
    if text.trim().is_empty() {
        return Err(ProtectError::NotJson {
            line: 1,
            column: 1,
            reason: "the input is empty".into(),
        });
    }
    let value: Value = serde_json::from_str(text).map_err(|e| ProtectError::NotJson {
        line: e.line(),
        column: e.column(),
        reason: strip_location(&e.to_string()),
    })?;
    let Value::Object(mut outer) = value else {
        return Err(not_an_object(&value));
    };

    let task = match outer.remove("taskDefinition") {
        Some(Value::Object(mut task)) => {
            // The response lists tags beside the task definition; registration takes them inside.
            if let Some(tags) = outer.remove("tags").filter(|t| !t.is_null()) {
                task.entry("tags").or_insert(tags);
            }
            task
        }
        Some(other) => {
            return Err(ProtectError::InvalidField {
                path: "taskDefinition".into(),
                reason: format!(
                    "expected the task definition object, found {}",
                    kind_of(&other)
                ),
            });
        }
        None => outer,
    };
    check_containers(&task)?;
    Ok(task)
}

/// Removes serde_json's trailing " at line L column C", which the error reports separately.
fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// Names a JSON value's type for messages.
fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a JSON array",
        Value::Object(_) => "an object",
    }
}

/// Builds the refusal for valid JSON that is not an object, with a hint for common mix-ups.
fn not_an_object(value: &Value) -> ProtectError {
    let hint = match value {
        Value::Array(items) if items.iter().any(|i| i.get("image").is_some()) => {
            "it looks like a list of container definitions only (e.g. Terraform's container_definitions); paste the whole task definition from the ECS console's JSON tab, or wrap the list as {\"family\": \"NAME\", \"containerDefinitions\": [...]}".to_owned()
        }
        Value::String(_) => {
            "it looks like the JSON was quoted as a string; paste the task definition object itself".to_owned()
        }
        _ => "paste the task definition from the ECS console's JSON tab or a DescribeTaskDefinition response".to_owned(),
    };
    ProtectError::NotAnObject {
        found: kind_of(value),
        hint,
    }
}

/// Refuses a task definition without a non-empty `containerDefinitions` list, naming look-alikes.
fn check_containers(task: &Map<String, Value>) -> Result<(), ProtectError> {
    match task.get("containerDefinitions") {
        Some(Value::Array(list)) if !list.is_empty() => Ok(()),
        Some(Value::Array(_)) => Err(ProtectError::NoContainers(
            "\"containerDefinitions\" is empty; a task definition needs at least one container"
                .into(),
        )),
        Some(Value::Null) | None => {
            let hint = if task.contains_key("Resources")
                || task.contains_key("ContainerDefinitions")
            {
                "this looks like CloudFormation (PascalCase keys); paste the registered task definition from the ECS console's JSON tab or `aws ecs describe-task-definition` instead"
            } else if task.contains_key("container_definitions") {
                "this looks like Terraform (snake_case keys); paste the registered task definition from the ECS console's JSON tab or `aws ecs describe-task-definition` instead"
            } else {
                "paste a task definition from the ECS console's JSON tab, a DescribeTaskDefinition response, or a RegisterTaskDefinition input"
            };
            Err(ProtectError::NoContainers(format!(
                "the input has no \"containerDefinitions\"; {hint}"
            )))
        }
        Some(other) => Err(ProtectError::InvalidField {
            path: "containerDefinitions".into(),
            reason: format!(
                "expected a list of container definitions, found {}",
                kind_of(other)
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn all_three_forms_yield_the_same_task() {
        let bare =
            r#"{"family":"f","revision":2,"containerDefinitions":[{"name":"a","image":"i"}]}"#;
        let described = r#"{"taskDefinition":{"family":"f","revision":2,"containerDefinitions":[{"name":"a","image":"i"}]},
            "tags":[{"key":"team","value":"x"}],"ResponseMetadata":{"RequestId":"r"}}"#;
        let register = r#"{"family":"f","containerDefinitions":[{"name":"a","image":"i"}],"tags":[{"key":"team","value":"x"}]}"#;
        let a = accept(bare).map(Value::Object);
        let b = accept(described).map(Value::Object);
        let c = accept(register).map(Value::Object);
        assert_eq!(
            a,
            Ok(
                json!({"family":"f","revision":2,"containerDefinitions":[{"name":"a","image":"i"}]})
            )
        );
        assert_eq!(
            b,
            Ok(
                json!({"family":"f","revision":2,"containerDefinitions":[{"name":"a","image":"i"}],
                "tags":[{"key":"team","value":"x"}]})
            )
        );
        assert_eq!(
            c,
            Ok(
                json!({"family":"f","containerDefinitions":[{"name":"a","image":"i"}],
                "tags":[{"key":"team","value":"x"}]})
            )
        );
    }

    #[test]
    fn syntax_errors_carry_line_and_column() {
        let err = accept("{\n  \"family\": \"f\",\n  \"containerDefinitions\": [\n}").err();
        let Some(ProtectError::NotJson {
            line,
            column,
            reason,
        }) = &err
        else {
            panic!("{err:?}")
        };
        assert_eq!((*line, *column), (4, 1));
        assert!(!reason.contains("at line"), "{reason}");
        let msg = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("line 4, column 1"), "{msg}");
    }

    #[test]
    fn refusals_are_specific() {
        assert!(matches!(accept(""), Err(ProtectError::NotJson { .. })));
        assert!(matches!(
            accept("[{\"name\":\"a\",\"image\":\"i\"}]"),
            Err(ProtectError::NotAnObject { found: "a JSON array", hint }) if hint.contains("Terraform")
        ));
        assert!(matches!(
            accept("\"{}\""),
            Err(ProtectError::NotAnObject {
                found: "a string",
                ..
            })
        ));
        assert!(matches!(
            accept("42"),
            Err(ProtectError::NotAnObject {
                found: "a number",
                ..
            })
        ));
        assert!(
            matches!(accept("{}"), Err(ProtectError::NoContainers(m)) if m.contains("no \"containerDefinitions\""))
        );
        assert!(matches!(
            accept(r#"{"family":"f","containerDefinitions":[]}"#),
            Err(ProtectError::NoContainers(m)) if m.contains("is empty")
        ));
        assert!(matches!(
            accept(r#"{"Resources":{}}"#),
            Err(ProtectError::NoContainers(m)) if m.contains("CloudFormation")
        ));
        assert!(matches!(
            accept(r#"{"container_definitions":"[]"}"#),
            Err(ProtectError::NoContainers(m)) if m.contains("Terraform")
        ));
        assert!(matches!(
            accept(r#"{"containerDefinitions":{"a":1}}"#),
            Err(ProtectError::InvalidField { path, .. }) if path == "containerDefinitions"
        ));
        assert!(matches!(
            accept(r#"{"taskDefinition":[]}"#),
            Err(ProtectError::InvalidField { path, .. }) if path == "taskDefinition"
        ));
    }

    #[test]
    fn size_cap_is_enforced_before_parsing() {
        let big = format!("{{\"family\":\"{}\"}}", "x".repeat(MAX_INPUT_BYTES));
        let err = accept(&big).err();
        assert!(matches!(
            err,
            Some(ProtectError::TooLarge {
                limit: MAX_INPUT_BYTES,
                ..
            })
        ));
        assert!(
            err.map(|e| e.to_string())
                .unwrap_or_default()
                .contains("1 MiB")
        );
    }

    #[test]
    fn byte_order_mark_is_tolerated() {
        let text = "\u{feff}{\"family\":\"f\",\"containerDefinitions\":[{\"name\":\"a\",\"image\":\"i\"}]}";
        assert!(accept(text).is_ok());
    }
}
