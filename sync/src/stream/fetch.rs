//! The follower's calls: the table's stream ([`stream_arn`], `DescribeTable`),
//! its shards ([`list_shards`], `DescribeStream`), and one poll of a shard
//! ([`fetch`]: `GetShardIterator` when it has no iterator, then
//! `GetRecords`), with the classification of what failed and the backoff
//! after a failure (exponential, jittered).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use aws_sdk_dynamodbstreams::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodbstreams::types::{Record, ShardIteratorType};

use super::recovery::{failure_of_code, Failure, Op};
use super::shards::{Listed, Position};
use crate::error::{classify, DynamoError, ErrorKind};

/// The table's current stream ARN.
pub(super) async fn stream_arn(
    dynamodb: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Result<String, DynamoError> {
    let op = "stream_follower";
    let description = crate::table::describe(dynamodb, table, op).await?;
    match description.latest_stream_arn() {
        Some(arn) if !arn.is_empty() => Ok(arn.to_owned()),
        _ => Err(DynamoError::new(
            op,
            ErrorKind::Rejected,
            format!("table `{table}` has no stream to follow"),
        )),
    }
}

/// Every shard of the stream `arn`, following `DescribeStream`'s pages.
pub(super) async fn list_shards(
    streams: &aws_sdk_dynamodbstreams::Client,
    arn: &str,
) -> Result<Vec<Listed>, DynamoError> {
    let mut listed = Vec::new();
    let mut seen = HashSet::new();
    let mut start: Option<String> = None;
    loop {
        let out = streams
            .describe_stream()
            .stream_arn(arn)
            .set_exclusive_start_shard_id(start.take())
            .send()
            .await
            .map_err(|err| classify("describe_stream", &err))?;
        let description = out.stream_description().ok_or_else(|| {
            DynamoError::new(
                "describe_stream",
                ErrorKind::Malformed,
                "no stream description",
            )
        })?;
        let mut new_in_page = false;
        for shard in description.shards() {
            let Some(id) = shard.shard_id() else { continue };
            if seen.insert(id.to_owned()) {
                new_in_page = true;
                listed.push(Listed {
                    id: id.to_owned(),
                    parent: shard.parent_shard_id().map(str::to_owned),
                });
            }
        }
        match description.last_evaluated_shard_id() {
            // A server that ignores `ExclusiveStartShardId` would repeat
            // its page forever; stop when a page brings nothing new.
            Some(last) if !last.is_empty() && new_in_page => start = Some(last.to_owned()),
            _ => return Ok(listed),
        }
    }
}

/// What a failed call means to the follower, and what the service said.
fn failure_of<E>(
    err: &SdkError<E, aws_sdk_dynamodbstreams::config::http::HttpResponse>,
) -> (Failure, String)
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match err {
        SdkError::ServiceError(service) => {
            let inner = service.err();
            let code = inner.code().unwrap_or("Unknown");
            (
                failure_of_code(code, service.raw().status().is_server_error()),
                format!("{code}: {}", inner.message().unwrap_or("")),
            )
        }
        SdkError::ConstructionFailure(_) => {
            (Failure::Rejected, DisplayErrorContext(err).to_string())
        }
        _ => (Failure::Unavailable, DisplayErrorContext(err).to_string()),
    }
}

/// Exponential backoff (`base` doubled per failure after the first, at most
/// `max`), scaled by a jitter in [0.5, 1].
pub(super) fn backoff(failures: u32, base: Duration, max: Duration, jitter: f64) -> Duration {
    let doublings = failures.saturating_sub(1).min(20);
    let full = base.saturating_mul(1u32 << doublings).min(max);
    full.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// A number in [0, 1) that differs from call to call (no RNG dependency:
/// std's randomly keyed hasher over the current instant).
pub(super) fn jitter() -> f64 {
    use std::hash::BuildHasher;
    let bits = std::collections::hash_map::RandomState::new().hash_one(Instant::now());
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// What one fetch task brings back.
#[derive(Debug)]
pub(super) struct Fetched {
    /// A new iterator was acquired (so `LATEST`, if used, is spent).
    pub(super) acquired: bool,
    pub(super) outcome: Outcome,
}

/// How a fetch ended.
#[derive(Debug)]
pub(super) enum Outcome {
    Records {
        records: Vec<Record>,
        /// `None`: the shard is closed and this was its end.
        next: Option<String>,
    },
    Failed {
        op: Op,
        failure: Failure,
        message: String,
        /// The iterator that was used, to keep if it is still good.
        iterator: Option<String>,
    },
}

/// Acquire an iterator if there is none, then one `GetRecords`.
pub(super) async fn fetch(
    client: aws_sdk_dynamodbstreams::Client,
    arn: String,
    shard_id: String,
    iterator: Option<String>,
    resume: Position,
    limit: i32,
) -> Fetched {
    let (iterator, acquired) = match iterator {
        Some(iterator) => (iterator, false),
        None => {
            let (kind, sequence) = match resume {
                Position::TrimHorizon => (ShardIteratorType::TrimHorizon, None),
                Position::Latest => (ShardIteratorType::Latest, None),
                Position::After(sequence) => {
                    (ShardIteratorType::AfterSequenceNumber, Some(sequence))
                }
            };
            let answer = client
                .get_shard_iterator()
                .stream_arn(arn)
                .shard_id(shard_id)
                .shard_iterator_type(kind)
                .set_sequence_number(sequence)
                .send()
                .await;
            match answer {
                Ok(out) => match out.shard_iterator {
                    Some(iterator) => (iterator, true),
                    // No iterator: the shard is closed and has nothing at or
                    // after that position.
                    None => {
                        return Fetched {
                            acquired: true,
                            outcome: Outcome::Records {
                                records: Vec::new(),
                                next: None,
                            },
                        }
                    }
                },
                Err(err) => {
                    let (failure, message) = failure_of(&err);
                    return Fetched {
                        acquired: false,
                        outcome: Outcome::Failed {
                            op: Op::GetShardIterator,
                            failure,
                            message,
                            iterator: None,
                        },
                    };
                }
            }
        }
    };
    let answer = client
        .get_records()
        .shard_iterator(iterator.clone())
        .limit(limit.clamp(1, 1000))
        .send()
        .await;
    let outcome = match answer {
        Ok(out) => Outcome::Records {
            records: out.records.unwrap_or_default(),
            next: out.next_shard_iterator.filter(|i| !i.is_empty()),
        },
        Err(err) => {
            let (failure, message) = failure_of(&err);
            Outcome::Failed {
                op: Op::GetRecords,
                failure,
                message,
                iterator: Some(iterator),
            }
        }
    };
    Fetched { acquired, outcome }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_bound_with_jitter() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(5);
        assert_eq!(backoff(1, base, max, 1.0), base);
        assert_eq!(backoff(1, base, max, 0.0), base / 2);
        assert_eq!(backoff(3, base, max, 1.0), base * 4);
        assert_eq!(backoff(40, base, max, 1.0), max);
        assert_eq!(backoff(u32::MAX, base, max, 0.0), max / 2);
        for _ in 0..100 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j));
        }
    }
}
