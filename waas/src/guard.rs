//! Per-client state: token-bucket rate limit with burst, prevent counting and bans; and the
//! client IP taken from `X-Forwarded-For` only through trusted hops.
//!
//! Time is passed in (`now`), so the logic is testable without clocks; memory is bounded by
//! [`MAX_CLIENTS`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipnet::IpNet;

use crate::policy::{WaasPolicy, parse_cidr};

/// Most client IPs tracked at once. When full, idle entries are evicted; if none is idle, the
/// table is cleared (clients lose their bucket, never get banned wrongly).
pub const MAX_CLIENTS: usize = 100_000;
/// An entry idle this long (and not banned) may be evicted.
const IDLE: Duration = Duration::from_secs(120);

/// The client IP: walk `X-Forwarded-For` from the right while the hop we believe is a trusted
/// proxy; the first untrusted address is the client. With no trusted proxies (or a peer that is
/// not one), the TCP peer is the client and `X-Forwarded-For` is ignored.
pub fn client_ip(peer: IpAddr, xff: &[&str], trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    let hops = xff
        .iter()
        .rev()
        .flat_map(|h| h.rsplit(','))
        .map(str::trim)
        .take(32);
    for hop in hops {
        let Ok(ip) = hop.parse::<IpAddr>() else {
            // Unparseable hop: stop at the last address we could verify.
            break;
        };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    client
}

/// Parses the policy's trusted proxies (invalid entries were refused by validation).
pub fn trusted_nets(p: &WaasPolicy) -> Vec<IpNet> {
    p.trusted_proxies
        .iter()
        .filter_map(|c| parse_cidr(c))
        .collect()
}

/// One client's state.
#[derive(Debug, Clone)]
struct Client {
    tokens: f64,
    last: Instant,
    prevents: u32,
    window_start: Instant,
    banned_until: Option<Instant>,
}

/// What [`Guard::admit`] decided before inspection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Within its rate.
    Ok,
    /// Banned until the given instant.
    Banned,
    /// Over its rate.
    RateLimited,
}

/// Rate limits and bans for every client IP.
#[derive(Debug, Default)]
pub struct Guard {
    clients: HashMap<IpAddr, Client>,
}

impl Guard {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of tracked clients.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// True when no client is tracked.
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    fn entry(&mut self, ip: IpAddr, now: Instant, burst: f64) -> &mut Client {
        if !self.clients.contains_key(&ip) && self.clients.len() >= MAX_CLIENTS {
            self.clients.retain(|_, c| {
                c.banned_until.is_some_and(|b| b > now) || now.duration_since(c.last) < IDLE
            });
            if self.clients.len() >= MAX_CLIENTS {
                self.clients.clear();
            }
        }
        self.clients.entry(ip).or_insert(Client {
            tokens: burst,
            last: now,
            prevents: 0,
            window_start: now,
            banned_until: None,
        })
    }

    /// Takes one token for `ip` (refilled at `rate_limit.requests_per_second` up to `burst`) and
    /// checks the ban. A banned client takes no token.
    pub fn admit(&mut self, ip: IpAddr, p: &WaasPolicy, now: Instant) -> Admission {
        let rate = f64::from(p.rate_limit.requests_per_second);
        let burst = f64::from(p.rate_limit.burst.max(1));
        let limit_on = p.enabled && p.rate_limit.effect != crate::policy::Effect::Disable;
        let c = self.entry(ip, now, burst);
        if let Some(until) = c.banned_until {
            if until > now {
                c.last = now;
                return Admission::Banned;
            }
            c.banned_until = None;
        }
        let elapsed = now.saturating_duration_since(c.last).as_secs_f64();
        c.last = now;
        if !limit_on {
            return Admission::Ok;
        }
        c.tokens = (c.tokens + elapsed * rate).min(burst);
        if c.tokens >= 1.0 {
            c.tokens -= 1.0;
            Admission::Ok
        } else {
            Admission::RateLimited
        }
    }

    /// Records a prevent verdict for `ip`; bans it when `ban` is true or when it reached
    /// `ban.after_prevents` within `ban.window_seconds`. Returns true when the client is now banned.
    pub fn record_prevent(&mut self, ip: IpAddr, ban: bool, p: &WaasPolicy, now: Instant) -> bool {
        let burst = f64::from(p.rate_limit.burst.max(1));
        let c = self.entry(ip, now, burst);
        let window = Duration::from_secs(u64::from(p.ban.window_seconds));
        if now.saturating_duration_since(c.window_start) > window {
            c.window_start = now;
            c.prevents = 0;
        }
        c.prevents = c.prevents.saturating_add(1);
        let threshold = p.ban.after_prevents > 0 && c.prevents >= p.ban.after_prevents;
        if ban || threshold {
            c.banned_until = Some(now + Duration::from_secs(u64::from(p.ban.minutes) * 60));
            c.prevents = 0;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn xff_believed_only_through_trusted_hops() {
        let trusted = vec![parse_cidr("10.0.0.0/8").unwrap()];
        // Untrusted peer: XFF ignored (a client cannot spoof its address).
        assert_eq!(
            client_ip(ip("1.2.3.4"), &["9.9.9.9"], &trusted),
            ip("1.2.3.4")
        );
        // Trusted ALB appended the real client; a spoofed left entry is not believed.
        assert_eq!(
            client_ip(ip("10.0.1.5"), &["6.6.6.6, 1.2.3.4"], &trusted),
            ip("1.2.3.4")
        );
        // Two trusted hops.
        assert_eq!(
            client_ip(ip("10.0.1.5"), &["1.2.3.4, 10.0.2.2"], &trusted),
            ip("1.2.3.4")
        );
        // No trusted proxies configured: peer.
        assert_eq!(client_ip(ip("10.0.1.5"), &["1.2.3.4"], &[]), ip("10.0.1.5"));
        // Garbage hop: stop at the last verified one.
        assert_eq!(
            client_ip(ip("10.0.1.5"), &["1.2.3.4, junk"], &trusted),
            ip("10.0.1.5")
        );
    }

    #[test]
    fn token_bucket_allows_burst_then_refills_at_rate() {
        let mut p = WaasPolicy::default();
        p.rate_limit.requests_per_second = 10;
        p.rate_limit.burst = 5;
        p.rate_limit.effect = crate::policy::Effect::Prevent;
        let mut g = Guard::new();
        let t0 = Instant::now();
        let a = ip("1.1.1.1");
        for _ in 0..5 {
            assert_eq!(g.admit(a, &p, t0), Admission::Ok);
        }
        assert_eq!(g.admit(a, &p, t0), Admission::RateLimited);
        // 100 ms later one token came back.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(g.admit(a, &p, t1), Admission::Ok);
        assert_eq!(g.admit(a, &p, t1), Admission::RateLimited);
        // Another client has its own bucket.
        assert_eq!(g.admit(ip("2.2.2.2"), &p, t1), Admission::Ok);
    }

    #[test]
    fn bans_after_repeated_prevents_and_expire() {
        let mut p = WaasPolicy::default();
        p.ban.after_prevents = 3;
        p.ban.minutes = 1;
        let mut g = Guard::new();
        let t0 = Instant::now();
        let a = ip("1.1.1.1");
        assert!(!g.record_prevent(a, false, &p, t0));
        assert!(!g.record_prevent(a, false, &p, t0));
        assert!(g.record_prevent(a, false, &p, t0));
        assert_eq!(g.admit(a, &p, t0), Admission::Banned);
        assert_eq!(
            g.admit(a, &p, t0 + Duration::from_secs(59)),
            Admission::Banned
        );
        assert_eq!(g.admit(a, &p, t0 + Duration::from_secs(61)), Admission::Ok);
        // The ban effect bans at once.
        assert!(g.record_prevent(ip("3.3.3.3"), true, &p, t0));
    }

    #[test]
    fn table_is_bounded() {
        let p = WaasPolicy::default();
        let mut g = Guard::new();
        let t0 = Instant::now();
        for i in 0..(MAX_CLIENTS as u32 + 10) {
            g.admit(IpAddr::from(i.to_be_bytes()), &p, t0);
        }
        assert!(g.len() <= MAX_CLIENTS);
    }
}
