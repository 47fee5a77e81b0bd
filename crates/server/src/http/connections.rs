//! The per-address connection limit: at most `http.max_connections_per_address` connections from one client
//! address are served at once, so that one client cannot take every file descriptor and the memory their
//! buffers hold. actix-web has no such limit; its connect hook counts each connection and closes one over the
//! limit before a byte of it is read.

use std::any::Any;
use std::collections::HashMap;
use std::net::{IpAddr, Shutdown};
use std::sync::{Arc, Mutex, PoisonError};

use actix_web::dev::Extensions;
use actix_web::rt::net::TcpStream;
use prometheus::IntGauge;

use crate::ratelimit::client_key;

/// Open connections per client address, shared by every worker.
#[derive(Clone, Debug)]
pub struct ConnectionLimit {
    max: usize,
    exempt: Arc<[IpAddr]>,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
    /// Every connection served, exempt ones included.
    gauge: IntGauge,
}

/// One counted connection; dropping it (when its connection ends) frees the place.
#[derive(Debug)]
pub struct ConnectionSlot {
    /// `None` for an exempt address, whose connections are not counted.
    key: Option<IpAddr>,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
    gauge: IntGauge,
}

impl ConnectionLimit {
    /// A limit of `max` connections per address; addresses in `exempt` (trusted proxies, which carry many
    /// clients' connections) are not limited. `gauge` counts every connection served.
    pub fn new(max: usize, exempt: &[IpAddr], gauge: IntGauge) -> ConnectionLimit {
        ConnectionLimit {
            max,
            exempt: exempt.iter().map(|ip| ip.to_canonical()).collect(),
            open: Arc::default(),
            gauge,
        }
    }

    /// A place for one more connection from `peer`, or `None` when the address already holds `max`.
    /// An exempt address always gets a place, which counts nothing.
    pub fn acquire(&self, peer: IpAddr) -> Option<ConnectionSlot> {
        let peer = peer.to_canonical();
        if self.exempt.contains(&peer) {
            return Some(self.slot(None));
        }
        let key = client_key(peer);
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(key).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(self.slot(Some(key)))
    }

    fn slot(&self, key: Option<IpAddr>) -> ConnectionSlot {
        self.gauge.inc();
        ConnectionSlot {
            key,
            open: Arc::clone(&self.open),
            gauge: self.gauge.clone(),
        }
    }

    /// The connect hook: counts the connection in its extensions (dropped with the connection) or, over the
    /// limit, shuts the socket down at once so the connection ends without a request being read.
    pub fn on_connect(&self, io: &dyn Any, ext: &mut Extensions) {
        let Some(stream) = io.downcast_ref::<TcpStream>() else {
            return;
        };
        let Ok(peer) = stream.peer_addr() else {
            return;
        };
        match self.acquire(peer.ip()) {
            Some(slot) => {
                ext.insert(slot);
            }
            None => {
                log::debug!(client:% = peer.ip(); "connection refused: too many open connections");
                // The dispatcher then reads end-of-stream and drops the connection; a failure means the
                // peer is already gone.
                let _ = socket2::SockRef::from(stream).shutdown(Shutdown::Both);
            }
        }
    }

    /// Connections open from `peer`'s address (its /64 for IPv6).
    pub fn open(&self, peer: IpAddr) -> usize {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.get(&client_key(peer)).copied().unwrap_or(0)
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.gauge.dec();
        let Some(key) = self.key else { return };
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                // So that the map holds only addresses with open connections, however many have come.
                open.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gauge() -> IntGauge {
        IntGauge::new("open", "open").unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn an_address_gets_max_places_and_gets_them_back() {
        let gauge = gauge();
        let limit = ConnectionLimit::new(2, &[], gauge.clone());
        let ip: IpAddr = [10, 0, 0, 1].into();
        let a = limit.acquire(ip);
        let b = limit.acquire(ip);
        assert!(a.is_some() && b.is_some());
        assert!(limit.acquire(ip).is_none());
        // Another address is not affected.
        assert!(limit.acquire([10, 0, 0, 2].into()).is_some());
        assert_eq!(gauge.get(), 2, "refused and closed connections are not open");
        drop(a);
        assert_eq!(limit.open(ip), 1);
        assert_eq!(gauge.get(), 1);
        let c = limit.acquire(ip);
        assert!(c.is_some());
        assert_eq!(gauge.get(), 2);
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() -> anyhow::Result<()> {
        let limit = ConnectionLimit::new(1, &[], gauge());
        let first = limit.acquire("2001:db8::1".parse()?);
        assert!(first.is_some());
        assert!(limit.acquire("2001:db8::2:3".parse()?).is_none());
        assert!(limit.acquire("2001:db8:0:1::1".parse()?).is_some());
        let v4 = limit.acquire("9.9.9.9".parse()?);
        assert!(v4.is_some());
        assert!(limit.acquire("::ffff:9.9.9.9".parse()?).is_none());
        Ok(())
    }

    #[test]
    fn trusted_proxies_are_not_limited() -> anyhow::Result<()> {
        let proxy: IpAddr = "10.0.0.5".parse()?;
        let gauge = gauge();
        let limit = ConnectionLimit::new(1, &[proxy], gauge.clone());
        let slots: Vec<_> = (0..10).map(|_| limit.acquire(proxy)).collect();
        assert!(slots.iter().all(Option::is_some));
        assert_eq!(limit.open(proxy), 0);
        assert_eq!(gauge.get(), 10, "but their connections are open");
        Ok(())
    }
}
