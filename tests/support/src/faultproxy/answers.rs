//! What the fault proxy answers itself, and the HTTP/1.1 framing it needs
//! for that: DynamoDB's refusals (throttling, the per-partition write
//! limit), a stalled feed's empty `GetRecords`, and a late feed's held-back
//! answers.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Counts, THROTTLED_BODY};

/// Which requests the proxy answers itself.
#[derive(Debug, Clone, Copy)]
pub(super) enum Answer {
    /// `GetRecords`, with no records.
    EmptyRecords,
    /// Writes past this many units a second on one partition key.
    OverLimit(u32),
}

impl Answer {
    /// The proxy's own answer to `request`, or `None` to forward it.
    pub(super) fn to(self, request: &[u8], counts: &Counts) -> Option<String> {
        match self {
            Answer::EmptyRecords => contains(request, "GetRecords").then(|| {
                counts.stalled.fetch_add(1, Ordering::SeqCst);
                json_response(&empty_records(request))
            }),
            Answer::OverLimit(limit) => {
                let over = over_limit(request, limit, counts)?;
                counts.throttled.fetch_add(1, Ordering::SeqCst);
                Some(over)
            }
        }
    }
}

/// The partition keys a write touches, with the units each costs, and
/// whether it is a transaction (`None`: not a write).
pub(super) fn write_keys(request: &[u8]) -> Option<(bool, Vec<(String, u32)>)> {
    let text = String::from_utf8_lossy(request);
    let target = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("x-amz-target: ")
                .or_else(|| l.strip_prefix("X-Amz-Target: "))
        })?
        .trim()
        .rsplit('.')
        .next()?
        .to_owned();
    let body_at = text.find("\r\n\r\n")? + 4;
    let body: serde_json::Value = serde_json::from_str(&text[body_at..]).ok()?;
    let item_keys = |item: &serde_json::Value, table_units: u32, out: &mut Vec<(String, u32)>| {
        if let Some(sid) = item.pointer("/sid/B").and_then(|v| v.as_str()) {
            out.push((format!("sid:{sid}"), table_units));
        }
        for index in ["jb", "uid"] {
            if let Some(key) = item
                .pointer(&format!("/{index}/S"))
                .and_then(|v| v.as_str())
            {
                out.push((format!("{index}:{key}"), 1));
            }
        }
    };
    let mut keys = Vec::new();
    match target.as_str() {
        "PutItem" => item_keys(&body["Item"], 1, &mut keys),
        "DeleteItem" | "UpdateItem" => item_keys(&body["Key"], 1, &mut keys),
        "TransactWriteItems" => {
            for entry in body["TransactItems"].as_array()? {
                if let Some(put) = entry.get("Put") {
                    item_keys(&put["Item"], 2, &mut keys);
                }
                for op in ["Delete", "Update"] {
                    if let Some(write) = entry.get(op) {
                        item_keys(&write["Key"], 2, &mut keys);
                    }
                }
            }
            return Some((true, keys));
        }
        _ => return None,
    }
    Some((false, keys))
}

/// DynamoDB's refusal of `request` when it would pass `limit` units this
/// second on any key it writes; otherwise the units are taken.
pub(super) fn over_limit(request: &[u8], limit: u32, counts: &Counts) -> Option<String> {
    let (transaction, keys) = write_keys(request)?;
    let second = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let mut windows = counts.windows.lock().unwrap();
    if windows.len() > 100_000 {
        windows.retain(|_, (s, _)| *s == second);
    }
    let used = |windows: &std::collections::HashMap<String, (u64, u32)>, key: &str| {
        windows
            .get(key)
            .filter(|(s, _)| *s == second)
            .map_or(0, |(_, u)| *u)
    };
    let mut wanted: std::collections::HashMap<&str, u32> = std::collections::HashMap::new();
    for (key, units) in &keys {
        *wanted.entry(key.as_str()).or_default() += units;
    }
    if wanted
        .iter()
        .any(|(key, units)| used(&windows, key) + units > limit)
    {
        let (kind, body) = if transaction {
            let reasons = vec![r#"{"Code":"ThrottlingError","Message":"Throughput exceeds the current capacity for one or more global secondary indexes."}"#; keys.len().max(1)].join(",");
            (
                "TransactionCanceledException",
                format!(
                    r#"{{"__type":"com.amazonaws.dynamodb.v20120810#TransactionCanceledException","Message":"Transaction cancelled, please refer cancellation reasons for specific reasons [ThrottlingError]","CancellationReasons":[{reasons}]}}"#
                ),
            )
        } else {
            ("ThrottlingException", THROTTLED_BODY.to_owned())
        };
        return Some(format!(
            "HTTP/1.1 400 Bad Request\r\n\
             content-type: application/x-amz-json-1.0\r\n\
             x-amzn-errortype: {kind}\r\n\
             x-amzn-requestid: fault-proxy\r\n\
             content-length: {}\r\n\r\n{body}",
            body.len()
        ));
    }
    for (key, units) in wanted {
        let now = used(&windows, key) + units;
        windows.insert(key.to_owned(), (second, now));
    }
    None
}

pub(super) fn contains(bytes: &[u8], text: &str) -> bool {
    bytes.windows(text.len()).any(|w| w == text.as_bytes())
}

/// The next whole HTTP/1.1 request on `from` (headers and `Content-Length`
/// bytes of body), `pending` holding what was read past the previous one.
/// `None` when the connection ends.
pub(super) async fn next_request<R: AsyncReadExt + Unpin>(
    from: &mut R,
    pending: &mut Vec<u8>,
) -> Option<Vec<u8>> {
    let mut chunk = [0u8; 16 * 1024];
    let body_start = loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        match from.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => pending.extend_from_slice(&chunk[..n]),
        }
    };
    let length = content_length(&pending[..body_start]);
    while pending.len() < body_start + length {
        match from.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => pending.extend_from_slice(&chunk[..n]),
        }
    }
    Some(pending.drain(..body_start + length).collect())
}

/// One request, then its whole response, at a time (HTTP/1.1 keeps them
/// in order), delaying what a change feed delivers by `by`.
pub(super) async fn exchange(mut client: TcpStream, mut server: TcpStream, by: Duration) {
    let (mut from_client, mut from_server) = (Vec::new(), Vec::new());
    while let Some(request) = next_request(&mut client, &mut from_client).await {
        if server.write_all(&request).await.is_err() {
            return;
        }
        let Some(response) = next_request(&mut server, &mut from_server).await else {
            return;
        };
        if contains(&request, "GetRecords") {
            tokio::time::sleep(by).await;
        }
        if client.write_all(&response).await.is_err() {
            return;
        }
    }
}

/// A `200` answer in the AWS JSON 1.0 protocol.
pub(super) fn json_response(body: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\n\
         content-type: application/x-amz-json-1.0\r\n\
         x-amzn-requestid: fault-proxy\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// `GetRecords`' answer with no records, handing the request's own
/// iterator back: the caller polls the same place for ever.
pub(super) fn empty_records(request: &[u8]) -> String {
    let text = String::from_utf8_lossy(request);
    let key = "\"ShardIterator\":\"";
    let iterator = text.find(key).map_or("", |at| {
        let rest = &text[at + key.len()..];
        let mut end = 0;
        let bytes = rest.as_bytes();
        while end < bytes.len() && !(bytes[end] == b'"' && (end == 0 || bytes[end - 1] != b'\\')) {
            end += 1;
        }
        &rest[..end]
    });
    format!(r#"{{"Records":[],"NextShardIterator":"{iterator}"}}"#)
}

/// Answer every HTTP/1.1 request on `client` with DynamoDB's throttling
/// error, keeping the connection alive as DynamoDB does.
pub(super) async fn throttle(mut client: TcpStream, counts: &Counts) {
    let mut buf = Vec::with_capacity(16 * 1024);
    while next_request(&mut client, &mut buf).await.is_some() {
        counts.throttled.fetch_add(1, Ordering::SeqCst);
        let response = format!(
            "HTTP/1.1 400 Bad Request\r\n\
             content-type: application/x-amz-json-1.0\r\n\
             x-amzn-errortype: ThrottlingException\r\n\
             x-amzn-requestid: fault-proxy\r\n\
             content-length: {}\r\n\r\n{THROTTLED_BODY}",
            THROTTLED_BODY.len()
        );
        if client.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// The `Content-Length` of a request's header block (0 when absent).
pub(super) fn content_length(headers: &[u8]) -> usize {
    String::from_utf8_lossy(headers)
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_is_read_case_insensitively() {
        let head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n";
        assert_eq!(content_length(head), 12);
        assert_eq!(content_length(b"GET / HTTP/1.1\r\n\r\n"), 0);
    }
}
