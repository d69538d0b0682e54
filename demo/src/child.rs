//! `defender-demo child`: a process that lives a moment, does a little work and exits, so the
//! Defender has process starts and exits to report.

use std::time::{Duration, Instant};

use clap::Args;

/// `child` options.
#[derive(Debug, Args)]
pub struct ChildArgs {
    /// How long the child lives (about a third of it busy computing).
    #[arg(long, env = "DEMO_CHILD_LIFETIME", default_value = "1500ms", value_parser = crate::parse_duration)]
    pub lifetime: Duration,
    /// Name of the app that spawned it (shows in its argv, hence in the forensics).
    #[arg(long, default_value = "demo")]
    pub parent: String,
}

/// Runs the child: count primes for a third of its lifetime, sleep the rest, print one line.
pub fn run(args: &ChildArgs) {
    let start = Instant::now();
    let busy = args.lifetime / 3;
    let mut limit = 10_000u32;
    let mut found = 0;
    while start.elapsed() < busy {
        found = count_primes(limit);
        limit = limit.saturating_mul(2).min(5_000_000);
    }
    if let Some(rest) = args.lifetime.checked_sub(start.elapsed()) {
        std::thread::sleep(rest);
    }
    println!(
        "[{} child pid {}] {found} primes below {limit}, done in {} ms",
        args.parent,
        std::process::id(),
        start.elapsed().as_millis()
    );
}

/// Primes below `n` (sieve of Eratosthenes).
pub fn count_primes(n: u32) -> usize {
    let n = n as usize;
    if n < 3 {
        return 0;
    }
    let mut composite = vec![false; n];
    let mut count = 0;
    for i in 2..n {
        if !composite[i] {
            count += 1;
            let mut j = i * i;
            while j < n {
                composite[j] = true;
                j += i;
            }
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primes_are_counted() {
        assert_eq!(count_primes(0), 0);
        assert_eq!(count_primes(10), 4);
        assert_eq!(count_primes(100), 25);
        assert_eq!(count_primes(10_000), 1229);
    }
}
