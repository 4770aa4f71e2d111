//! Errors of the native core. Rejects of bad payloads are not errors (they are data, see
//! [`crate::decode::Reject`]); these are misuses of the API, mapped to Python exceptions in
//! exactly one place (`lib.rs`).

/// A call the native core refuses.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NativeError {
    /// A limit is out of its usable range (Python: `LimitsError`).
    #[error("invalid decode limits: {0}")]
    InvalidLimits(String),
    /// An input that breaks the call's contract, e.g. a uuid that is not 16 bytes
    /// (Python: `NativeError`).
    #[error("invalid input: {0}")]
    InvalidInput(String),
}
