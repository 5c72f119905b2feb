//! Typed configuration errors: each names the field (a path such as `rules[3].when.deal_size`)
//! and what is wrong with it. A list of them becomes one INVALID_ARGUMENT `crm_core::Error`
//! with a field violation each ([`into_core`]).

use serde::{Deserialize, Serialize};

/// What is wrong with a configuration field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE", tag = "kind", content = "detail")]
pub enum Problem {
    /// The field must be set.
    #[error("is required")]
    Required,
    /// The value appears twice where it must be unique.
    #[error("duplicates {0}")]
    Duplicate(String),
    /// The field contradicts itself or another field (the detail says how).
    #[error("contradicts: {0}")]
    Contradiction(String),
    /// A condition no record can satisfy (an empty list of allowed values).
    #[error("matches nothing")]
    MatchesNothing,
    /// A rule that has nothing to give its result to (no targets).
    #[error("references nothing")]
    ReferencesNothing,
    /// A reference to something that does not exist.
    #[error("references unknown {0}")]
    UnknownReference(String),
    /// A number outside its range.
    #[error("is out of range: {0}")]
    OutOfRange(String),
}

/// One configuration error: the field's path and the problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct ConfigError {
    /// Path of the field, such as `rules[3].when.deal_size`.
    pub field: String,
    /// What is wrong.
    pub problem: Problem,
}

impl ConfigError {
    /// An error of `field`.
    pub fn new(field: impl Into<String>, problem: Problem) -> Self {
        Self {
            field: field.into(),
            problem,
        }
    }

    /// The same error with `prefix.` in front of the field path.
    pub fn prefixed(mut self, prefix: &str) -> Self {
        self.field = if self.field.is_empty() {
            prefix.to_owned()
        } else {
            format!("{prefix}.{}", self.field)
        };
        self
    }
}

/// Turns configuration errors into one INVALID_ARGUMENT error with a violation per field.
pub fn into_core(errors: Vec<ConfigError>) -> crm_core::Error {
    crm_core::Error::invalid_fields(
        errors
            .into_iter()
            .map(|e| crm_core::FieldViolation::new(e.field, e.problem.to_string()))
            .collect(),
    )
}
