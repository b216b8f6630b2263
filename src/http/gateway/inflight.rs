//! `gateway.max_inflight_per_client`: how many proxied requests one client
//! (an IPv4 address or an IPv6 /64, the login budgets' key) may have in
//! flight at once, from its request head to the last byte of the answer.
//! Past it: 429 `too_many_requests` with `Retry-After: 1`, before anything
//! is sent upstream. So no one client can hold the upstream pool, however
//! slowly it sends or reads. An entry lives only while its client has a
//! request in flight.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// Requests in flight, by client. Shared by every worker.
#[derive(Debug)]
pub struct InFlight {
    cap: u32,
    by_client: Mutex<HashMap<IpAddr, u32>>,
}

/// One request in flight: dropped, it leaves.
#[derive(Debug)]
pub struct Slot {
    owner: Arc<InFlight>,
    client: IpAddr,
}

impl InFlight {
    /// At most `cap` requests in flight per client.
    pub fn new(cap: u32) -> Arc<Self> {
        Arc::new(InFlight {
            cap,
            by_client: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for `client` (already reduced to its key), or `None` if it
    /// has `cap` in flight.
    pub fn enter(self: &Arc<Self>, client: IpAddr) -> Option<Slot> {
        let mut map = self
            .by_client
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let n = map.entry(client).or_insert(0);
        if *n >= self.cap {
            return None;
        }
        *n += 1;
        Some(Slot {
            owner: Arc::clone(self),
            client,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self
            .owner
            .by_client
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_gets_cap_slots_and_its_entry_goes_with_the_last() {
        let inflight = InFlight::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let one = inflight.enter(a).unwrap();
        let two = inflight.enter(a).unwrap();
        assert!(inflight.enter(a).is_none());
        assert!(
            inflight.enter(b).is_some(),
            "another client is not affected"
        );
        drop(one);
        let three = inflight.enter(a).unwrap();
        drop((two, three));
        assert!(inflight.by_client.lock().unwrap().is_empty());
    }
}
