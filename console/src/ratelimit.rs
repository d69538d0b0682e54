//! Rate limits of the Console's unauthenticated doors: enrollment (per token and per source
//! IP, gRPC `RESOURCE_EXHAUSTED`), certificate renewal (per Defender) and operator logins (per
//! source IP and per user, HTTP 429 with `Retry-After`).
//!
//! Token buckets on the monotonic clock (a step of the wall clock changes nothing), held in
//! this process's memory: each Console replica limits on its own. Every map is bounded
//! ([`MAX_KEYS`]): when full, buckets that have refilled are forgotten, and if none has, new
//! keys share one overflow bucket, so a flood of distinct keys cannot grow memory.
//!
//! Logins: a source that keeps failing is stopped by its bucket (it does not even reach the
//! password check); a user whose password keeps failing from anywhere gets a delay before each
//! further attempt, doubling from [`RateLimits::login_base_delay`] but never above
//! [`RateLimits::login_max_delay`]. An attacker can therefore slow the admin down by at most
//! that bounded delay, never lock them out: once the delay has passed, the right password works
//! even while the attack goes on (from another source; the attacker's own source is stopped
//! by its bucket).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most keys one limiter tracks.
pub const MAX_KEYS: usize = 100_000;

/// A token bucket's shape: `burst` at once, refilled at `per_second`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    pub burst: u32,
    pub per_second: f64,
}

impl Rate {
    /// `burst` at once, then `n` per `period`.
    pub fn new(burst: u32, n: u32, period: Duration) -> Self {
        Self {
            burst,
            per_second: f64::from(n) / period.as_secs_f64().max(1e-3),
        }
    }
}

/// The limits a Console applies; [`Default`] is what `serve` uses.
#[derive(Clone, Debug)]
pub struct RateLimits {
    /// Enrollments with one token: a fleet scaling out at once fits the burst.
    pub enroll_per_token: Rate,
    /// Enrollment attempts (valid or not) from one source IP. Generous: tasks behind one NAT
    /// gateway share a source address.
    pub enroll_per_source: Rate,
    /// Renewals of one Defender's certificate.
    pub renew_per_defender: Rate,
    /// Failed logins from one source IP before it must wait.
    pub login_failures_per_source: Rate,
    /// Failed logins of one user that cost nothing; each further one adds a delay.
    pub login_free_failures: u32,
    /// First delay after the free failures; doubled after each further failure.
    pub login_base_delay: Duration,
    /// The per-user delay never exceeds this, so nobody can lock the admin out for longer.
    pub login_max_delay: Duration,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            enroll_per_token: Rate::new(100, 5, Duration::from_secs(1)),
            enroll_per_source: Rate::new(200, 10, Duration::from_secs(1)),
            renew_per_defender: Rate::new(5, 1, Duration::from_secs(60)),
            login_failures_per_source: Rate::new(10, 1, Duration::from_secs(10)),
            login_free_failures: 5,
            login_base_delay: Duration::from_secs(1),
            login_max_delay: Duration::from_secs(30),
        }
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn refill(&mut self, rate: Rate, now: Instant) {
        let gained = now.saturating_duration_since(self.at).as_secs_f64() * rate.per_second;
        self.tokens = (self.tokens + gained).min(f64::from(rate.burst));
        self.at = now;
    }

    fn wait_for_one(&self, rate: Rate) -> Duration {
        if self.tokens >= 1.0 || rate.per_second <= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64((1.0 - self.tokens) / rate.per_second)
    }
}

/// Token buckets by key.
pub struct KeyedLimiter {
    rate: Rate,
    buckets: Mutex<HashMap<String, Bucket>>,
}

const OVERFLOW_KEY: &str = "\u{0}overflow";

impl KeyedLimiter {
    /// A limiter whose every key gets its own bucket of `rate`.
    pub fn new(rate: Rate) -> Self {
        Self {
            rate,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token from `key`'s bucket; `Err(retry_after)` when it is empty.
    pub fn take(&self, key: &str) -> Result<(), Duration> {
        self.with_bucket(key, |b, rate| {
            if b.tokens >= 1.0 {
                b.tokens -= 1.0;
                Ok(())
            } else {
                Err(b.wait_for_one(rate))
            }
        })
    }

    /// Whether `key` has a token left (none taken); `Err(retry_after)` when not.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        self.with_bucket(key, |b, rate| {
            if b.tokens >= 1.0 {
                Ok(())
            } else {
                Err(b.wait_for_one(rate))
            }
        })
    }

    /// Takes one token even when that leaves the bucket in debt (bounded at one burst), so
    /// that failures keep costing while the source is already refused.
    pub fn charge(&self, key: &str) {
        self.with_bucket(key, |b, rate| {
            b.tokens = (b.tokens - 1.0).max(-f64::from(rate.burst));
        });
    }

    fn with_bucket<T>(&self, key: &str, f: impl FnOnce(&mut Bucket, Rate) -> T) -> T {
        let now = Instant::now();
        let rate = self.rate;
        let mut map = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !map.contains_key(key) && map.len() >= MAX_KEYS {
            map.retain(|_, b| {
                b.refill(rate, now);
                b.tokens < f64::from(rate.burst)
            });
        }
        let key = if map.contains_key(key) || map.len() < MAX_KEYS {
            key
        } else {
            OVERFLOW_KEY
        };
        let bucket = map.entry(key.to_owned()).or_insert(Bucket {
            tokens: f64::from(rate.burst),
            at: now,
        });
        bucket.refill(rate, now);
        f(bucket, rate)
    }
}

struct UserFailures {
    failures: u32,
    next_allowed: Instant,
}

/// Login throttling per source IP and per user (see the module docs).
pub struct LoginLimiter {
    limits: RateLimits,
    sources: KeyedLimiter,
    users: Mutex<HashMap<String, UserFailures>>,
}

impl LoginLimiter {
    /// A limiter applying `limits`.
    pub fn new(limits: &RateLimits) -> Self {
        Self {
            limits: limits.clone(),
            sources: KeyedLimiter::new(limits.login_failures_per_source),
            users: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a login of `user` from `source` may be checked now; `Err(retry_after)` if not.
    pub fn check(&self, user: &str, source: &str) -> Result<(), Duration> {
        self.sources.check(source)?;
        let now = Instant::now();
        let users = self.lock_users();
        match users.get(user) {
            Some(u) if u.next_allowed > now => Err(u.next_allowed - now),
            _ => Ok(()),
        }
    }

    /// Records a wrong password for `user` from `source`.
    pub fn failed(&self, user: &str, source: &str) {
        self.sources.charge(source);
        let now = Instant::now();
        let mut users = self.lock_users();
        if !users.contains_key(user) && users.len() >= MAX_KEYS {
            users.retain(|_, u| u.next_allowed > now);
            if users.len() >= MAX_KEYS {
                return;
            }
        }
        let u = users.entry(user.to_owned()).or_insert(UserFailures {
            failures: 0,
            next_allowed: now,
        });
        u.failures = u.failures.saturating_add(1);
        if u.failures > self.limits.login_free_failures {
            let doublings = (u.failures - self.limits.login_free_failures - 1).min(20);
            let delay = self
                .limits
                .login_base_delay
                .saturating_mul(1 << doublings)
                .min(self.limits.login_max_delay);
            u.next_allowed = now + delay;
        }
    }

    /// Records a successful login: the user's failures are forgotten.
    pub fn succeeded(&self, user: &str) {
        self.lock_users().remove(user);
    }

    fn lock_users(&self) -> std::sync::MutexGuard<'_, HashMap<String, UserFailures>> {
        self.users
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_the_burst_then_refuses_with_a_wait() {
        let l = KeyedLimiter::new(Rate::new(3, 1, Duration::from_secs(10)));
        for _ in 0..3 {
            assert!(l.take("a").is_ok());
        }
        let wait = l.take("a").unwrap_err();
        assert!(wait > Duration::from_secs(5) && wait <= Duration::from_secs(10));
        // Another key has its own bucket.
        assert!(l.take("b").is_ok());
    }

    #[test]
    fn user_delay_grows_but_stays_bounded() {
        let limits = RateLimits {
            login_failures_per_source: Rate::new(1000, 1, Duration::from_secs(1)),
            login_free_failures: 2,
            login_base_delay: Duration::from_secs(1),
            login_max_delay: Duration::from_secs(4),
            ..RateLimits::default()
        };
        let l = LoginLimiter::new(&limits);
        l.failed("admin", "1.1.1.1");
        l.failed("admin", "1.1.1.1");
        assert!(l.check("admin", "2.2.2.2").is_ok());
        for _ in 0..50 {
            l.failed("admin", "1.1.1.1");
        }
        let wait = l.check("admin", "2.2.2.2").unwrap_err();
        assert!(wait <= Duration::from_secs(4) && wait > Duration::from_secs(3));
        l.succeeded("admin");
        assert!(l.check("admin", "2.2.2.2").is_ok());
    }

    #[test]
    fn a_failing_source_is_stopped_before_the_password_check() {
        let limits = RateLimits {
            login_failures_per_source: Rate::new(3, 1, Duration::from_secs(60)),
            ..RateLimits::default()
        };
        let l = LoginLimiter::new(&limits);
        for _ in 0..3 {
            assert!(l.check("x", "9.9.9.9").is_ok());
            l.failed("x", "9.9.9.9");
        }
        assert!(l.check("someone-else", "9.9.9.9").is_err());
        assert!(l.check("someone-else", "8.8.8.8").is_ok());
    }
}
