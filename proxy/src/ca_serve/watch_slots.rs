//! Who holds watch subscriptions: a cap in total and one per client
//! address, so that a single client cannot take every slot. A slot is
//! given back when its `Slot` is dropped (the watcher's task ended).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

pub struct WatchSlots {
    held: Arc<Mutex<Held>>,
    max_total: usize,
    max_per_client: usize,
}

#[derive(Default)]
struct Held {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    Full,
    ClientFull,
}

pub struct Slot {
    held: Arc<Mutex<Held>>,
    client: IpAddr,
}

impl WatchSlots {
    pub fn new(max_total: usize, max_per_client: usize) -> WatchSlots {
        WatchSlots {
            held: Arc::default(),
            max_total,
            max_per_client,
        }
    }

    pub fn take(&self, peer: IpAddr) -> Result<Slot, Refused> {
        let client = client_key(peer);
        let mut held = lock(&self.held);
        if held.total >= self.max_total {
            return Err(Refused::Full);
        }
        let mine = held.per_client.entry(client).or_insert(0);
        if *mine >= self.max_per_client {
            return Err(Refused::ClientFull);
        }
        *mine += 1;
        held.total += 1;
        Ok(Slot {
            held: self.held.clone(),
            client,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = lock(&self.held);
        held.total = held.total.saturating_sub(1);
        if let Some(mine) = held.per_client.get_mut(&self.client) {
            *mine = mine.saturating_sub(1);
            if *mine == 0 {
                // Empty entries are removed so the map stays as small as
                // the set of clients currently watching.
                held.per_client.remove(&self.client);
            }
        }
    }
}

fn lock(held: &Mutex<Held>) -> std::sync::MutexGuard<'_, Held> {
    held.lock().unwrap_or_else(|p| p.into_inner())
}

/// One IPv4 address is one client; for IPv6, one /64, because a single
/// host is routinely given a whole /64 and could otherwise pick a fresh
/// address per subscription.
fn client_key(peer: IpAddr) -> IpAddr {
    match peer.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(prefix.into())
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn each_client_has_its_own_share_of_the_total() {
        let slots = WatchSlots::new(3, 2);
        let a1 = slots.take(ip("10.0.0.1")).unwrap();
        let _a2 = slots.take(ip("10.0.0.1")).unwrap();
        assert_eq!(slots.take(ip("10.0.0.1")).err(), Some(Refused::ClientFull));
        let _b1 = slots.take(ip("10.0.0.2")).unwrap();
        assert_eq!(slots.take(ip("10.0.0.3")).err(), Some(Refused::Full));
        drop(a1);
        let _a3 = slots.take(ip("10.0.0.1")).unwrap();
    }

    #[test]
    fn an_ipv6_client_is_its_slash_64_and_a_mapped_ipv4_is_ipv4() {
        let slots = WatchSlots::new(10, 1);
        let _v6 = slots.take(ip("2001:db8:1:2::1")).unwrap();
        assert!(slots.take(ip("2001:db8:1:2:ffff::9")).is_err());
        assert!(slots.take(ip("2001:db8:1:3::1")).is_ok());
        let _v4 = slots.take(ip("192.0.2.7")).unwrap();
        assert!(slots.take(ip("::ffff:192.0.2.7")).is_err());
    }

    #[test]
    fn returned_slots_leave_no_entries_behind() {
        let slots = WatchSlots::new(10, 10);
        drop(slots.take(ip("10.0.0.1")).unwrap());
        let held = lock(&slots.held);
        assert_eq!(held.total, 0);
        assert!(held.per_client.is_empty());
    }
}
