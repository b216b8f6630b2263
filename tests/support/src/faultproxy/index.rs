//! Index propagation delay ([`super::Fault::IndexDelay`]): DynamoDB updates
//! a global secondary index asynchronously, so a `Query` on the index may
//! not yet return an item the table committed a moment ago. The embedded
//! server updates its indexes in the same write; the proxy hides each item
//! written through it from index queries until its own delay has passed.
//!
//! Only what a late index *omits* is modelled (a new or rewritten item not
//! yet there); a deleted item lingering in the index is not.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::answers::{contains, next_request, write_keys};
use super::Counts;

/// How late an item shows up in an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexLag {
    /// A seeded distribution with stalls, drawn per (item, write): median
    /// 20 ms, p99 800 ms, and one write in a thousand 5 s late.
    Seeded(u64),
    /// None: the index shows every write at once (its queries are counted).
    None,
}

impl IndexLag {
    /// The delay of the `nth` write of the item `sid` (base64, as on the
    /// wire).
    pub fn delay(self, sid: &str, nth: u64) -> Duration {
        let IndexLag::Seeded(seed) = self else {
            return Duration::ZERO;
        };
        let mut hasher = std::hash::DefaultHasher::new();
        (seed, sid, nth).hash(&mut hasher);
        seeded_quantile(hasher.finish() as f64 / u64::MAX as f64)
    }
}

/// The delay at quantile `q` of the seeded distribution: log-uniform
/// between the points 1 ms (q 0), 20 ms (q 0.5), 800 ms (q 0.99) and 5 s
/// (q 0.999), then 5 s.
fn seeded_quantile(q: f64) -> Duration {
    const POINTS: [(f64, f64); 4] = [(0.0, 1.0), (0.5, 20.0), (0.99, 800.0), (0.999, 5000.0)];
    let ms = POINTS.windows(2).find(|w| q < w[1].0).map_or(5000.0, |w| {
        let ((q0, m0), (q1, m1)) = (w[0], w[1]);
        let t = (q - q0) / (q1 - q0);
        (m0.ln() + t * (m1.ln() - m0.ln())).exp()
    });
    Duration::from_secs_f64(ms / 1000.0)
}

/// The writes of each item seen through the proxy: when the last one was
/// acknowledged, and how many there were.
pub type Written = HashMap<String, (Instant, u64)>;

/// One request, then its whole response, at a time: note each acknowledged
/// write's items, and drop from each index query's answer the items whose
/// last write is younger than its delay.
pub async fn exchange(
    mut client: TcpStream,
    mut server: TcpStream,
    lag: IndexLag,
    counts: &Counts,
) {
    let (mut from_client, mut from_server) = (Vec::new(), Vec::new());
    while let Some(request) = next_request(&mut client, &mut from_client).await {
        if server.write_all(&request).await.is_err() {
            return;
        }
        let Some(mut response) = next_request(&mut server, &mut from_server).await else {
            return;
        };
        let ok = response.starts_with(b"HTTP/1.1 200");
        if ok
            && contains(&request, "\"IndexName\"")
            && contains(&request, "DynamoDB_20120810.Query")
        {
            counts.index_queries.fetch_add(1, Ordering::SeqCst);
            response = hide_unpropagated(&response, lag, counts);
        } else if ok {
            if let Some((_, keys)) = write_keys(&request) {
                let now = Instant::now();
                let mut written = counts.written.lock().unwrap();
                for (key, _) in keys {
                    if let Some(sid) = key.strip_prefix("sid:") {
                        let entry = written.entry(sid.to_owned()).or_insert((now, 0));
                        *entry = (now, entry.1 + 1);
                    }
                }
            }
        }
        if client.write_all(&response).await.is_err() {
            return;
        }
    }
}

/// `response` (a `Query` answer) without the items the index would not show
/// yet, re-framed (its checksum header dropped: the body changed).
fn hide_unpropagated(response: &[u8], lag: IndexLag, counts: &Counts) -> Vec<u8> {
    let Some(split) = response.windows(4).position(|w| w == b"\r\n\r\n") else {
        return response.to_vec();
    };
    let Ok(mut body) = serde_json::from_slice::<serde_json::Value>(&response[split + 4..]) else {
        return response.to_vec();
    };
    let now = Instant::now();
    let mut hidden = 0u64;
    if let Some(items) = body.get_mut("Items").and_then(|v| v.as_array_mut()) {
        let written = counts.written.lock().unwrap();
        items.retain(|item| {
            let visible = item
                .pointer("/sid/B")
                .and_then(|v| v.as_str())
                .and_then(|sid| Some((sid, written.get(sid)?)))
                .is_none_or(|(sid, (at, nth))| now >= *at + lag.delay(sid, *nth));
            hidden += u64::from(!visible);
            visible
        });
        let count = items.len();
        body["Count"] = count.into();
    }
    if hidden == 0 {
        return response.to_vec();
    }
    counts.index_hidden.fetch_add(hidden, Ordering::SeqCst);
    let body = body.to_string();
    let head = String::from_utf8_lossy(&response[..split]);
    let mut out = String::new();
    for line in head.split("\r\n") {
        let name = line
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if name != "content-length" && name != "x-amz-crc32" {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str(&format!("content-length: {}\r\n\r\n{body}", body.len()));
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seeded_lag_has_the_stated_quantiles() {
        let mut delays: Vec<Duration> = (0..100_000u64)
            .map(|n| IndexLag::Seeded(7).delay(&format!("sid-{n}"), 1))
            .collect();
        delays.sort();
        let at = |q: f64| delays[(q * delays.len() as f64) as usize].as_secs_f64() * 1000.0;
        assert!((15.0..27.0).contains(&at(0.5)), "p50 {} ms", at(0.5));
        assert!((600.0..1100.0).contains(&at(0.99)), "p99 {} ms", at(0.99));
        assert!(at(0.9995) >= 4999.0, "p99.95 {} ms", at(0.9995));
        assert_eq!(
            IndexLag::Seeded(7).delay("x", 1),
            IndexLag::Seeded(7).delay("x", 1),
            "seeded: the same draw each time"
        );
    }
}
