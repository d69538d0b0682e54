//! Which of the install bundle's Console addresses the link uses: one picked at random when
//! the Defender starts (so a fleet spreads over the Console replicas), and the next one in the
//! bundle's order after each failed or lost connection (so every address is tried once before
//! a dead one is tried again, each attempt after the link's reconnect backoff). With one
//! address nothing changes: it is always that one.

use std::sync::atomic::{AtomicUsize, Ordering};

/// The bundle's Console addresses and the one in use; shared by the link and the certificate
/// renewal, so both talk to the same Console.
#[derive(Debug)]
pub struct ConsoleAddrs {
    addrs: Vec<String>,
    current: AtomicUsize,
}

impl ConsoleAddrs {
    /// Starts at a random one of `addrs` (`host:port`, as decoded from the bundle, never
    /// empty; an empty list is treated as one empty address, which fails to connect).
    pub fn new(addrs: &[String]) -> Self {
        let start = rand::random_range(0..addrs.len().max(1));
        Self::starting_at(addrs, start)
    }

    /// Starts at `addrs[start % len]` (tests, and callers that must be deterministic).
    pub fn starting_at(addrs: &[String], start: usize) -> Self {
        let addrs = if addrs.is_empty() {
            vec![String::new()]
        } else {
            addrs.to_vec()
        };
        let current = AtomicUsize::new(start % addrs.len());
        Self { addrs, current }
    }

    /// The address to connect to now.
    pub fn current(&self) -> &str {
        &self.addrs[self.current.load(Ordering::Relaxed) % self.addrs.len()]
    }

    /// Moves to the next address (after the last, the first) because the current one failed
    /// or its connection was lost; returns it. With one address it stays.
    pub fn fail_over(&self) -> &str {
        let len = self.addrs.len();
        let next = (self.current.load(Ordering::Relaxed) + 1) % len;
        self.current.store(next, Ordering::Relaxed);
        &self.addrs[next]
    }

    /// How many addresses there are to choose from.
    pub fn len(&self) -> usize {
        self.addrs.len()
    }

    /// Always false: there is at least one address (see [`ConsoleAddrs::new`]).
    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("h{i}:8084")).collect()
    }

    #[test]
    fn one_address_never_changes() {
        let a = ConsoleAddrs::new(&list(1));
        assert_eq!(a.current(), "h0:8084");
        assert_eq!(a.fail_over(), "h0:8084");
        assert_eq!(a.current(), "h0:8084");
    }

    #[test]
    fn failing_over_visits_every_address_before_repeating_one() {
        for start in 0..4 {
            let a = ConsoleAddrs::starting_at(&list(4), start);
            let mut seen = vec![a.current().to_owned()];
            for _ in 0..3 {
                seen.push(a.fail_over().to_owned());
            }
            seen.sort();
            assert_eq!(seen, list(4), "from {start}");
            assert_eq!(a.fail_over(), format!("h{start}:8084"));
        }
    }

    #[test]
    fn the_start_is_random() {
        let starts: std::collections::HashSet<String> = (0..200)
            .map(|_| ConsoleAddrs::new(&list(3)).current().to_owned())
            .collect();
        // 200 draws all landing on fewer than 3 of them: about 3 * (2/3)^200, never.
        assert_eq!(starts.len(), 3);
    }
}
