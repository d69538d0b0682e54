//! The Defender's own resource use, reported in heartbeats so its overhead is visible.

use std::time::Instant;

/// Resident memory of this process in bytes (0 when /proc is unavailable).
pub fn rss_bytes() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page).unwrap_or(4096)
}

/// CPU time of this process (user + system) in seconds.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| f.get(*i)?.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    ticks as f64 / hz.max(1) as f64
}

/// Measures CPU use between successive calls.
pub struct CpuMeter {
    last_cpu: f64,
    last_at: Instant,
}

impl CpuMeter {
    /// Starts measuring now.
    pub fn new() -> Self {
        Self {
            last_cpu: cpu_seconds(),
            last_at: Instant::now(),
        }
    }

    /// Percent of one core used since the last call, times 100.
    pub fn centipercent(&mut self) -> u32 {
        let now = Instant::now();
        let cpu = cpu_seconds();
        let wall = now.duration_since(self.last_at).as_secs_f64();
        let used = (cpu - self.last_cpu).max(0.0);
        self.last_cpu = cpu;
        self.last_at = now;
        if wall <= 0.0 {
            return 0;
        }
        (used / wall * 10_000.0).round() as u32
    }
}

impl Default for CpuMeter {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_memory_and_cpu() {
        assert!(rss_bytes() > 0);
        let mut m = CpuMeter::new();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        assert!(x > 0);
        let _ = m.centipercent();
    }
}
