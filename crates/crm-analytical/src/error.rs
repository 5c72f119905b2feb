//! The crate's error: one or more offending fields, each with a typed problem.
//!
//! Every function of this crate that can reject its input returns [`Error`]. It converts into
//! `crm_core::Error` (INVALID_ARGUMENT with one field violation per [`FieldError`]) with `?` or
//! `.into()`, so the service layer forwards it unchanged and the gateway maps it once.

use std::fmt;

/// What is wrong with a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Problem {
    /// A required value is missing or empty.
    Required,
    /// A number outside its allowed range.
    OutOfRange,
    /// Not a finite number (NaN or infinite).
    NotFinite,
    /// A list that must be strictly increasing is not.
    NotIncreasing,
    /// A list has the wrong number of entries.
    WrongCount,
    /// A name or key appears twice.
    Duplicate,
    /// A reference to something that does not exist (a field, a stage, a currency rate).
    Unknown,
    /// A stage or rule that can never be reached.
    Unreachable,
    /// Some combination of inputs is covered by no rule.
    Uncovered,
    /// Weights whose sum is zero or not positive.
    ZeroSum,
    /// Not an ISO 4217 currency code.
    Currency,
    /// A conversion rate needed for a currency is missing.
    MissingRate,
    /// A rule or expression that does not parse.
    Syntax,
    /// A value of the wrong type for its field (or an operator its type does not support).
    Type,
    /// A value too large to compute with exactly.
    Overflow,
    /// Options that contradict each other.
    Conflict,
    /// A chart could not be drawn.
    Render,
}

impl Problem {
    /// The stable UPPER_SNAKE name of the problem.
    pub fn as_str(self) -> &'static str {
        match self {
            Problem::Required => "REQUIRED",
            Problem::OutOfRange => "OUT_OF_RANGE",
            Problem::NotFinite => "NOT_FINITE",
            Problem::NotIncreasing => "NOT_INCREASING",
            Problem::WrongCount => "WRONG_COUNT",
            Problem::Duplicate => "DUPLICATE",
            Problem::Unknown => "UNKNOWN",
            Problem::Unreachable => "UNREACHABLE",
            Problem::Uncovered => "UNCOVERED",
            Problem::ZeroSum => "ZERO_SUM",
            Problem::Currency => "CURRENCY",
            Problem::MissingRate => "MISSING_RATE",
            Problem::Syntax => "SYNTAX",
            Problem::Type => "TYPE",
            Problem::Overflow => "OVERFLOW",
            Problem::Conflict => "CONFLICT",
            Problem::Render => "RENDER",
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One offending field: its path (`weights.margin`, `stages[2].key`, `rule`), the problem and
/// a lower-case description.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FieldError {
    /// Path of the field, e.g. `recency.thresholds` or `transitions[1].to`.
    pub field: String,
    /// What is wrong.
    pub problem: Problem,
    /// Human-readable description (lower case, no trailing period).
    pub message: String,
}

impl FieldError {
    /// A field error.
    pub fn new(field: impl Into<String>, problem: Problem, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem,
            message: message.into(),
        }
    }
}

/// One or more offending fields. Never empty when returned by this crate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// The offending fields, in the order they were found.
    pub violations: Vec<FieldError>,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.violations.as_slice() {
            [] => f.write_str("invalid input"),
            [one] => write!(f, "invalid {}: {}", one.field, one.message),
            many => {
                f.write_str("invalid fields: ")?;
                for (i, v) in many.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{}: {}", v.field, v.message)?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for Error {}

impl Error {
    /// An error naming one field.
    pub fn field(field: impl Into<String>, problem: Problem, message: impl Into<String>) -> Self {
        Self {
            violations: vec![FieldError::new(field, problem, message)],
        }
    }

    /// The paths of the offending fields.
    pub fn fields(&self) -> Vec<&str> {
        self.violations.iter().map(|v| v.field.as_str()).collect()
    }

    /// Whether `field` is named with `problem`.
    pub fn has(&self, field: &str, problem: Problem) -> bool {
        self.violations
            .iter()
            .any(|v| v.field == field && v.problem == problem)
    }

    /// Prefixes every field path with `prefix.` (e.g. `weights` -> `model.weights`).
    pub fn in_field(mut self, prefix: &str) -> Self {
        for v in &mut self.violations {
            v.field = if v.field.is_empty() {
                prefix.to_owned()
            } else if v.field.starts_with('[') {
                format!("{prefix}{}", v.field)
            } else {
                format!("{prefix}.{}", v.field)
            };
        }
        self
    }
}

impl From<FieldError> for Error {
    fn from(e: FieldError) -> Self {
        Self {
            violations: vec![e],
        }
    }
}

impl From<Error> for crm_core::Error {
    fn from(e: Error) -> Self {
        crm_core::Error::invalid_fields(
            e.violations
                .into_iter()
                .map(|v| crm_core::FieldViolation::new(v.field, v.message))
                .collect(),
        )
    }
}

/// Collects field errors so one answer names every bad field.
#[derive(Debug, Default)]
pub(crate) struct Collector(pub(crate) Vec<FieldError>);

impl Collector {
    pub(crate) fn add(
        &mut self,
        field: impl Into<String>,
        problem: Problem,
        message: impl Into<String>,
    ) {
        self.0.push(FieldError::new(field, problem, message));
    }

    pub(crate) fn extend(&mut self, e: Error) {
        self.0.extend(e.violations);
    }

    pub(crate) fn finish(self) -> Result<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Error { violations: self.0 })
        }
    }
}

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_to_core_invalid_argument_naming_each_field() {
        let mut c = Collector::default();
        c.add(
            "weights.margin",
            Problem::NotFinite,
            "must be a finite number",
        );
        c.add("weights", Problem::ZeroSum, "must sum to more than zero");
        let Err(e) = c.finish() else {
            unreachable!("two violations were added")
        };
        assert!(e.has("weights.margin", Problem::NotFinite));
        let core: crm_core::Error = e.in_field("model").into();
        assert_eq!(core.kind, crm_core::ErrorKind::InvalidArgument);
        let fields: Vec<_> = core.violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["model.weights.margin", "model.weights"]);
    }
}
