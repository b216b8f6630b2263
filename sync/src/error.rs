//! Errors (the call did not complete as a call) and expected outcomes (values).

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};

/// How a failed call should be treated by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// DynamoDB could not be reached or did not answer in time (connect
    /// refused, timeout, a cut response, 5xx). The outcome of a write that
    /// failed this way is unknown.
    Unavailable,
    /// DynamoDB answered, refusing the request for lack of capacity
    /// (`ThrottlingException`, `ProvisionedThroughputExceededException`,
    /// `RequestLimitExceeded`, ...), still after the SDK's retries with
    /// backoff. An answer, not an outage: it does not count towards the
    /// circuit breaker. An earlier attempt of the same call may have timed
    /// out, so a write that failed this way has an unknown outcome too.
    Throttled,
    /// DynamoDB answered and refused the request (validation, missing table,
    /// access denied). Retrying the same request will not help.
    Rejected,
    /// DynamoDB returned an item that edge-session did not write.
    Malformed,
}

/// A DynamoDB call that did not complete.
#[derive(Debug, Clone, thiserror::Error)]
#[error("dynamodb {op} failed ({kind:?}): {message}")]
pub struct DynamoError {
    /// The operation (`get`, `create`, `rotate`, ...).
    pub op: &'static str,
    /// How to treat it.
    pub kind: ErrorKind,
    /// What the SDK or the service said. Never contains a session token: the
    /// only key this crate sees is the hashed `sid`.
    pub message: String,
}

impl ErrorKind {
    /// The `kind` label of `edge_session_dynamodb_errors_total`.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Throttled => "throttled",
            ErrorKind::Rejected => "rejected",
            ErrorKind::Malformed => "malformed",
        }
    }
}

impl DynamoError {
    /// A failed DynamoDB call, counted in
    /// `edge_session_dynamodb_errors_total{op,kind}`.
    pub(crate) fn new(op: &'static str, kind: ErrorKind, message: impl Into<String>) -> Self {
        metrics::counter!("edge_session_dynamodb_errors_total", "op" => op, "kind" => kind.name())
            .increment(1);
        Self::uncounted(op, kind, message)
    }

    /// An error that is not a failed call (the breaker failing one fast,
    /// the caller's retry budget): not counted as a DynamoDB error.
    pub(crate) fn uncounted(op: &'static str, kind: ErrorKind, message: impl Into<String>) -> Self {
        DynamoError {
            op,
            kind,
            message: message.into(),
        }
    }

    /// An `Unavailable` error raised by the caller (a retry budget ran out).
    pub fn new_unavailable(op: &'static str, message: impl Into<String>) -> Self {
        Self::uncounted(op, ErrorKind::Unavailable, message)
    }

    /// True when the call got no usable answer: DynamoDB could not be
    /// reached, or it throttled the call (the outcome of a write is unknown
    /// either way). The 503 case: `store_throttled` when
    /// [`is_throttled`](Self::is_throttled), else `store_unavailable`.
    pub fn is_unavailable(&self) -> bool {
        matches!(self.kind, ErrorKind::Unavailable | ErrorKind::Throttled)
    }

    /// True when DynamoDB refused the call for lack of capacity (after the
    /// SDK's retries): the 503 `store_throttled` case, with `Retry-After`.
    pub fn is_throttled(&self) -> bool {
        self.kind == ErrorKind::Throttled
    }
}

/// A conditional write found the item not in the state it expected (another
/// writer changed or deleted it, or a new key already exists).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conflict;

/// Why `rotate`'s transaction was cancelled. Nothing was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RotateConflict {
    /// The old item is gone or no longer at the expected version.
    OldChanged,
    /// An item with the new key already exists.
    NewExists,
    /// Another transaction was touching one of the items; safe to retry.
    TransactionInProgress,
    /// The user's revocation epoch moved ("log out everywhere" ran): a
    /// session bound under the old epoch must not be written.
    EpochChanged,
    /// The user holds as many sessions as the guard's limit allows (by the
    /// count in the epoch item, an upper bound): nothing was written.
    UserAtLimit,
}

/// The error codes with which DynamoDB and DynamoDB Streams refuse a call
/// for lack of capacity (the request itself was fine): retried by the SDK
/// with backoff, then [`ErrorKind::Throttled`]: an answer, so the circuit
/// breaker does not count them.
const THROTTLING_CODES: [&str; 5] = [
    "ThrottlingException",
    "Throttling",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "LimitExceededException",
];

/// Whether `code` is one of DynamoDB's throttling error codes.
pub(crate) fn is_throttling(code: &str) -> bool {
    THROTTLING_CODES.contains(&code)
}

/// Whether DynamoDB answered at all, and with what.
fn kind_of<E>(err: &SdkError<E, HttpResponse>) -> ErrorKind
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match err {
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or("Unknown");
            match code {
                _ if is_throttling(code) => ErrorKind::Throttled,
                "InternalServerError" | "ServiceUnavailable" => ErrorKind::Unavailable,
                _ if service.raw().status().is_server_error() => ErrorKind::Unavailable,
                _ => ErrorKind::Rejected,
            }
        }
        SdkError::ConstructionFailure(_) => ErrorKind::Rejected,
        // Timeouts, dispatch failures (refused, reset), and responses that
        // could not be parsed (a body cut halfway) all mean "no answer".
        _ => ErrorKind::Unavailable,
    }
}

/// A conditional write refused because its condition did not hold.
pub(crate) const CONDITION_FAILED: &str = "ConditionalCheckFailedException";
/// A plain write refused because a transaction on its item is in flight.
pub(crate) const TRANSACTION_CONFLICT: &str = "TransactionConflictException";

/// The outcome of a single conditional write: `Ok(Some(out))` when it was
/// written, `Ok(None)` when DynamoDB refused it with one of the codes in
/// `refused` (its condition did not hold, ...), an error otherwise.
pub(crate) fn conditional<T, E>(
    op: &'static str,
    result: Result<T, SdkError<E, HttpResponse>>,
    refused: &[&str],
) -> Result<Option<T>, DynamoError>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match result {
        Ok(out) => Ok(Some(out)),
        Err(SdkError::ServiceError(service))
            if service
                .err()
                .code()
                .is_some_and(|code| refused.contains(&code)) =>
        {
            Ok(None)
        }
        Err(err) => Err(classify(op, &err)),
    }
}

/// Whether DynamoDB did not answer at all (what the circuit breaker counts):
/// a throttled call was answered.
pub(crate) fn is_unreachable<E>(err: &SdkError<E, HttpResponse>) -> bool
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    kind_of(err) == ErrorKind::Unavailable
}

/// Classify an SDK error into a [`DynamoError`].
pub(crate) fn classify<E>(op: &'static str, err: &SdkError<E, HttpResponse>) -> DynamoError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let message = match err {
        SdkError::ServiceError(service) => {
            let inner = service.err();
            format!(
                "{}: {}",
                inner.code().unwrap_or("Unknown"),
                inner.message().unwrap_or("")
            )
        }
        _ => error_chain(err),
    };
    DynamoError::new(op, kind_of(err), message)
}

/// The error and its sources on one line.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        out.push_str(": ");
        out.push_str(&inner.to_string());
        source = inner.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_codes_are_the_capacity_refusals() {
        for code in [
            "ThrottlingException",
            "Throttling",
            "ProvisionedThroughputExceededException",
            "RequestLimitExceeded",
            "LimitExceededException",
        ] {
            assert!(is_throttling(code), "{code}");
        }
        for code in ["ValidationException", "InternalServerError", "Unknown"] {
            assert!(!is_throttling(code), "{code}");
        }
    }
}
