//! Who holds how many of a listener's connections, and whether one more
//! may come in. Pure: no I/O, no clock; the caller keeps the table behind
//! a lock and attaches to each connection a handle `H` that closes it when
//! it is handed back as evicted.
//!
//! The rules, in order, for a new connection from `peer`:
//! 1. a source never holds more than `per_source` connections at once;
//! 2. below `total` connections in all, it is admitted;
//! 3. at `total`, it is admitted only if the busiest source holds at
//!    least two more than `peer` does: then the busiest source's oldest
//!    connection is evicted to make room. Otherwise it is refused.
//!
//! So no set of sources can starve one that holds fewer connections than
//! they do: the kubelet, whose probes hold one connection at a time, gets
//! in however many connections other pods keep open.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

/// The bounds of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// The most connections one source address holds at once.
    pub per_source: usize,
    /// The most connections the listener holds at once.
    pub total: usize,
}

/// Why a connection was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its source already holds `per_source` connections.
    SourceFull,
    /// The listener holds `total` and no source holds two more than this one.
    AllFull,
}

impl Refusal {
    /// The low-cardinality name (logs, metric labels).
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::SourceFull => "source_full",
            Refusal::AllFull => "all_full",
        }
    }
}

/// A connection let in: its id (to release it) and, when it displaced
/// another, that one's handle (the caller closes it).
#[derive(Debug)]
pub struct Admitted<H> {
    pub id: u64,
    pub evicted: Option<H>,
}

/// The connections a listener holds, by source, oldest first.
#[derive(Debug)]
pub struct Table<H> {
    caps: Caps,
    sources: HashMap<IpAddr, VecDeque<(u64, H)>>,
    held: usize,
    next_id: u64,
}

/// One source per address: an IPv4 peer seen on a dual-stack socket
/// (`::ffff:a.b.c.d`) counts as its IPv4 address.
fn source(peer: IpAddr) -> IpAddr {
    peer.to_canonical()
}

impl<H> Table<H> {
    /// An empty table.
    pub fn new(caps: Caps) -> Table<H> {
        Table {
            caps,
            sources: HashMap::new(),
            held: 0,
            next_id: 0,
        }
    }

    /// How many connections are held in all.
    pub fn held(&self) -> usize {
        self.held
    }

    /// How many connections `peer` holds.
    pub fn held_by(&self, peer: IpAddr) -> usize {
        self.sources.get(&source(peer)).map_or(0, VecDeque::len)
    }

    /// Lets a connection from `peer` in (with `handle` to close it later
    /// if it is evicted), or says why not: the rules in the module comment.
    pub fn admit(&mut self, peer: IpAddr, handle: H) -> Result<Admitted<H>, Refusal> {
        let peer = source(peer);
        let mine = self.held_by(peer);
        if mine >= self.caps.per_source {
            return Err(Refusal::SourceFull);
        }
        let mut evicted = None;
        if self.held >= self.caps.total {
            let busiest = self
                .sources
                .iter_mut()
                .max_by_key(|(_, held)| held.len())
                .filter(|(_, held)| held.len() >= mine + 2)
                .ok_or(Refusal::AllFull)?;
            // At least two held: the source keeps an entry.
            evicted = busiest.1.pop_front().map(|(_, h)| h);
            self.held -= 1;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.sources
            .entry(peer)
            .or_default()
            .push_back((id, handle));
        self.held += 1;
        Ok(Admitted { id, evicted })
    }

    /// Hands connection `id` of `peer` back; false when it is no longer
    /// held (it was evicted, or never admitted).
    pub fn release(&mut self, peer: IpAddr, id: u64) -> bool {
        let peer = source(peer);
        let Some(held) = self.sources.get_mut(&peer) else {
            return false;
        };
        let Some(at) = held.iter().position(|(i, _)| *i == id) else {
            return false;
        };
        held.remove(at);
        if held.is_empty() {
            self.sources.remove(&peer);
        }
        self.held -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAPS: Caps = Caps {
        per_source: 3,
        total: 5,
    };

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    fn fill(table: &mut Table<u32>, peer: IpAddr, n: usize) -> Vec<u64> {
        (0..n)
            .map(|_| table.admit(peer, 0).expect("admitted").id)
            .collect()
    }

    /// Rule 1: a source never holds more than `per_source` at once, even
    /// with the listener nearly empty; handing one back lets one more in.
    #[test]
    fn one_source_holds_at_most_its_cap() {
        let mut t = Table::new(CAPS);
        let ids = fill(&mut t, ip(1), 3);
        assert_eq!(t.admit(ip(1), 0).map(|a| a.id), Err(Refusal::SourceFull));
        assert_eq!(t.held(), 3);
        assert!(t.release(ip(1), ids[0]));
        assert!(t.admit(ip(1), 0).is_ok());
        assert_eq!(t.held_by(ip(1)), 3);
    }

    /// Rule 1 per source: another address is counted on its own.
    #[test]
    fn sources_are_counted_apart() {
        let mut t = Table::new(CAPS);
        fill(&mut t, ip(1), 3);
        assert!(t.admit(ip(2), 0).is_ok());
        assert_eq!((t.held_by(ip(1)), t.held_by(ip(2)), t.held()), (3, 1, 4));
    }

    /// An IPv4 peer on a dual-stack socket is the same source as itself.
    #[test]
    fn an_ipv4_mapped_peer_is_its_ipv4_source() {
        let mut t = Table::new(CAPS);
        fill(&mut t, ip(1), 3);
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().expect("ip");
        assert_eq!(t.admit(mapped, 0).map(|a| a.id), Err(Refusal::SourceFull));
    }

    /// Rule 3: at the total, a source holding fewer displaces the busiest
    /// source's oldest connection, whose handle comes back to be closed.
    #[test]
    fn at_the_total_a_lighter_source_evicts_the_busiest_ones_oldest() {
        let mut t = Table::new(CAPS);
        for (n, h) in [(1, 10), (1, 11), (1, 12), (2, 20), (2, 21)] {
            t.admit(ip(n), h).expect("admitted");
        }
        assert_eq!(t.held(), 5);
        let a = t.admit(ip(3), 30).expect("the kubelet gets in");
        assert_eq!(a.evicted, Some(10));
        assert_eq!((t.held_by(ip(1)), t.held_by(ip(3)), t.held()), (2, 1, 5));
    }

    /// Rule 3's limit: no eviction that would only swap two sources (the
    /// busiest holds at most one more than the newcomer's source): the
    /// newcomer is refused.
    #[test]
    fn at_the_total_a_swap_is_refused() {
        let mut t = Table::new(Caps {
            per_source: 3,
            total: 3,
        });
        fill(&mut t, ip(1), 1);
        fill(&mut t, ip(2), 2);
        // ip(1) holds 1, ip(2) 2: evicting one of ip(2)'s only swaps them.
        let ids = t.admit(ip(1), 0).map(|a| a.id);
        assert_eq!(ids, Err(Refusal::AllFull));
        assert_eq!((t.held_by(ip(1)), t.held_by(ip(2))), (1, 2));
        // One that holds none gets in: 2 >= 0 + 2.
        assert!(t.admit(ip(3), 0).is_ok_and(|a| a.evicted.is_some()));
    }

    /// Many sources each at the cap cannot keep out one that holds none.
    #[test]
    fn many_full_sources_cannot_starve_a_new_one() {
        let mut t = Table::new(Caps {
            per_source: 4,
            total: 12,
        });
        for n in 1..=3 {
            fill(&mut t, ip(n), 4);
        }
        // More intruders: each gets in only by displacing a busier one.
        for n in 4..=9 {
            let _ = t.admit(ip(n), 0);
        }
        assert_eq!(t.held(), 12);
        assert!(t.admit(ip(100), 0).is_ok(), "the probe's source got in");
        assert_eq!(t.held(), 12);
    }

    /// An evicted connection's release does not count it twice; releasing
    /// the last of a source forgets the source.
    #[test]
    fn releasing_an_evicted_connection_changes_nothing() {
        let mut t = Table::new(Caps {
            per_source: 3,
            total: 2,
        });
        let ids = fill(&mut t, ip(1), 2);
        t.admit(ip(2), 0).expect("evicts");
        assert!(!t.release(ip(1), ids[0]), "already gone");
        assert_eq!(t.held(), 2);
        assert!(t.release(ip(1), ids[1]));
        assert_eq!((t.held_by(ip(1)), t.held()), (0, 1));
        assert!(!t.release(ip(9), 1234));
    }
}
