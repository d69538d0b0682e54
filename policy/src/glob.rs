//! Wildcard patterns: `*` matches any run of characters (`/` included), `?` exactly one
//! character; everything else matches itself, case-sensitively. Subjects are bytes, since paths
//! need not be UTF-8; `?` takes one UTF-8 character where the bytes form one, else one byte.

/// Longest pattern accepted, in bytes.
pub const MAX_PATTERN_BYTES: usize = 1024;

/// A compiled wildcard pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Glob {
    pattern: Vec<u8>,
    literal: bool,
}

impl Glob {
    /// Compiles a pattern; never fails (see [`problem`] for what validation rejects).
    pub(crate) fn new(pattern: &str) -> Self {
        Self {
            pattern: pattern.as_bytes().to_vec(),
            literal: !pattern.contains(['*', '?']),
        }
    }

    /// Whether the pattern has no wildcard (it matches only itself).
    pub(crate) fn is_literal(&self) -> bool {
        self.literal
    }

    /// Whether `subject` matches the whole pattern.
    pub(crate) fn matches(&self, subject: &[u8]) -> bool {
        if self.literal {
            return self.pattern == subject;
        }
        wildcard_match(&self.pattern, subject)
    }
}

/// Length of the character starting at `s[i]`: its UTF-8 length when valid there, else 1.
fn char_len(s: &[u8], i: usize) -> usize {
    let n = match s[i] {
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => return 1,
    };
    match s.get(i..i + n) {
        Some(c) if std::str::from_utf8(c).is_ok() => n,
        _ => 1,
    }
}

/// Iterative wildcard match with single-star backtracking: O(pattern × subject) at worst.
fn wildcard_match(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0usize, 0usize);
    // Position after the last `*` seen, and where in the subject that star's match ends.
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        match pat.get(p) {
            Some(b'*') => {
                star = Some((p + 1, i));
                p += 1;
                continue;
            }
            Some(b'?') => {
                i += char_len(s, i);
                p += 1;
                continue;
            }
            Some(&c) if c == s[i] => {
                p += 1;
                i += 1;
                continue;
            }
            _ => {}
        }
        match star {
            Some((after, end)) => {
                let end = end + char_len(s, end);
                star = Some((after, end));
                p = after;
                i = end;
            }
            None => return false,
        }
    }
    pat[p.min(pat.len())..].iter().all(|&c| c == b'*')
}

/// What is wrong with a pattern, if anything: empty, too long, control characters, padding
/// whitespace, or syntax other tools give a meaning this matcher does not (`[...]`, `\`).
pub(crate) fn problem(pattern: &str) -> Option<String> {
    if pattern.is_empty() {
        return Some("pattern is empty".to_owned());
    }
    if pattern.len() > MAX_PATTERN_BYTES {
        return Some(format!(
            "pattern is {} bytes long; the limit is {MAX_PATTERN_BYTES}",
            pattern.len()
        ));
    }
    if pattern.chars().any(char::is_control) {
        return Some("pattern contains a control character".to_owned());
    }
    if pattern.trim() != pattern {
        return Some("pattern starts or ends with whitespace".to_owned());
    }
    if pattern.contains(['[', ']']) {
        return Some(
            "character classes ([...]) are not supported; only * and ? are wildcards".to_owned(),
        );
    }
    if pattern.contains('\\') {
        return Some("backslash escapes are not supported; only * and ? are wildcards".to_owned());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, s: &str) -> bool {
        Glob::new(p).matches(s.as_bytes())
    }

    #[test]
    fn literals_and_wildcards() {
        assert!(m("web", "web"));
        assert!(!m("web", "web-api"));
        assert!(m("web-*", "web-api"));
        assert!(m("web-*", "web-"));
        assert!(!m("web-*", "batch"));
        assert!(m("*", ""));
        assert!(!m("?", ""));
        assert!(m("a?c", "abc"));
        assert!(!m("a?c", "ac"));
        assert!(m("*/nginx:*", "public.ecr.aws/x/nginx:1.27"));
        assert!(!m("*/nginx:*", "nginx:1.27"));
        assert!(m("*/nginx:*", "docker.io/library/nginx:1.27"));
        assert!(m("/usr/bin/*", "/usr/bin/x/y"));
        assert!(m("*a*b*c", "xxaxxbxxbxxc"));
        assert!(!m("*a*b*c", "xxaxxbxxbxx"));
        assert!(m("**", "anything"));
        assert!(m("a*", "a"));
        assert!(!m("Web", "web"));
    }

    #[test]
    fn question_mark_takes_one_character() {
        assert!(m("caf?", "café"));
        assert!(m("?", "é"));
        assert!(!m("??", "é"));
        // Invalid UTF-8: one byte each.
        assert!(Glob::new("a??").matches(b"a\xff\xfe"));
        assert!(Glob::new("*?").matches("é".as_bytes()));
        // A star never splits a character, so the pieces cannot count as several.
        assert!(!m("*??", "€"));
        assert!(m("*??", "€€"));
    }

    #[test]
    fn pathological_pattern_is_fast() {
        let p = "*a".repeat(50) + "b";
        let s = "a".repeat(5000);
        assert!(!m(&p, &s));
    }

    #[test]
    fn problems() {
        assert!(problem("").is_some());
        assert!(problem(" x").is_some());
        assert!(problem("x\n").is_some());
        assert!(problem("[ab]").is_some());
        assert!(problem("a\\*").is_some());
        assert!(problem(&"a".repeat(MAX_PATTERN_BYTES + 1)).is_some());
        assert!(problem("web-*").is_none());
        assert!(problem("my app").is_none());
    }
}
