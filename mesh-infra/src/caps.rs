//! Caps on concurrent connections, in total and per peer address: a peer that
//! opens many connections is refused before it can starve the others.
use std::{
    collections::{hash_map::Entry, HashMap},
    net::IpAddr,
    sync::{Arc, Mutex},
};

/// Which cap refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    Total,
    Peer,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    per_peer: HashMap<IpAddr, usize>,
}

/// Counts open connections; `admit` hands out a place held until it drops.
#[derive(Debug, Clone)]
pub struct Caps {
    pub total: usize,
    pub per_peer: usize,
    open: Arc<Mutex<Open>>,
}

impl Caps {
    pub fn new(total: usize, per_peer: usize) -> Caps {
        Caps {
            total,
            per_peer,
            open: Arc::default(),
        }
    }

    pub fn admit(&self, peer: IpAddr) -> Result<Place, Full> {
        let peer = peer.to_canonical();
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.total >= self.total {
            return Err(Full::Total);
        }
        let n = open.per_peer.entry(peer).or_default();
        if *n >= self.per_peer {
            return Err(Full::Peer);
        }
        *n += 1;
        open.total += 1;
        Ok(Place {
            open: self.open.clone(),
            peer,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).total
    }
}

/// One admitted connection's place.
#[derive(Debug)]
pub struct Place {
    open: Arc<Mutex<Open>>,
    peer: IpAddr,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Entry::Occupied(mut e) = open.per_peer.entry(self.peer) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn total_and_per_peer_caps_free_on_drop() {
        let caps = Caps::new(3, 2);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let a1 = caps.admit(a).expect("first");
        let _a2 = caps.admit(a).expect("second");
        assert_eq!(caps.admit(a).err(), Some(Full::Peer));
        let _b1 = caps.admit(b).expect("other peer");
        assert_eq!(caps.admit(b).err(), Some(Full::Total));
        drop(a1);
        assert_eq!(caps.open(), 2);
        let _a3 = caps.admit(a).expect("freed by drop");
        // A v4-mapped address is the IPv4 peer.
        assert_eq!(
            caps.admit("::ffff:10.0.0.1".parse().unwrap()).err(),
            Some(Full::Total)
        );
    }
}
