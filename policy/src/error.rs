//! Errors of parsing and validating a policy document.

use std::fmt;

use serde::Serialize;

/// Why a policy document could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The document exceeds [`MAX_POLICY_BYTES`](crate::MAX_POLICY_BYTES).
    #[error("policy document is {size} bytes; the limit is {max} bytes")]
    TooLarge {
        /// Size of the document, bytes.
        size: usize,
        /// The limit, bytes.
        max: usize,
    },
    /// Not JSON, or not the policy's shape (unknown key, wrong type, missing field).
    #[error("{}", json_message(path, message, *line, *column))]
    Json {
        /// Where in the document (`rules[2].network.denied_outbound_ips[0]`), empty for the root.
        path: String,
        /// What is wrong, without the position.
        message: String,
        /// 1-based line of the error (0 when unknown).
        line: usize,
        /// 1-based column of the error (0 when unknown).
        column: usize,
    },
    /// Well-formed but invalid (from [`crate::CompiledPolicy::from_json`]).
    #[error("policy is invalid: {}", join(.0))]
    Invalid(Vec<ValidationError>),
}

/// Renders a JSON error as `path: message (line L, column C)`.
fn json_message(path: &str, message: &str, line: usize, column: usize) -> String {
    let mut out = String::new();
    if !path.is_empty() {
        out.push_str(path);
        out.push_str(": ");
    }
    out.push_str(message);
    if line > 0 {
        out.push_str(&format!(" (line {line}, column {column})"));
    }
    out
}

/// Joins validation errors with `; `.
fn join(errors: &[ValidationError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl PolicyError {
    /// From a serde_path_to_error failure: keeps the path, the message and the position.
    pub(crate) fn from_json(e: serde_path_to_error::Error<serde_json::Error>) -> Self {
        let path = e.path().to_string();
        // The root path displays as ".".
        let path = if path == "." { String::new() } else { path };
        Self::from_json_error(path, e.inner())
    }

    /// From a serde_json error at `path`.
    pub(crate) fn from_json_error(path: String, e: &serde_json::Error) -> Self {
        let full = e.to_string();
        let suffix = format!(" at line {} column {}", e.line(), e.column());
        let message = full.strip_suffix(&suffix).unwrap_or(&full).to_owned();
        PolicyError::Json {
            path,
            message,
            line: e.line(),
            column: e.column(),
        }
    }
}

/// One problem found by [`RuntimePolicy::validate`](crate::RuntimePolicy::validate).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ValidationError {
    /// Where the problem is, e.g. `rules[2].network.denied_outbound_ips[0]`.
    pub path: String,
    /// What is wrong and, where it helps, how to fix it.
    pub message: String,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl std::error::Error for ValidationError {}
