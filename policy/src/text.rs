//! Bounded, printable renderings of attacker-controlled bytes for audit messages.

/// Most characters of one rendered value (a path, an argv) in a message.
pub const MAX_MESSAGE_VALUE_CHARS: usize = 200;

/// Renders bytes as text: lossy UTF-8, control characters escaped, cut to
/// [`MAX_MESSAGE_VALUE_CHARS`] with `…` when longer.
pub(crate) fn show(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::new();
    for (count, c) in text.chars().enumerate() {
        if count >= MAX_MESSAGE_VALUE_CHARS {
            out.push('…');
            return out;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Renders argv as one space-separated line, bounded like [`show`].
pub(crate) fn show_argv(argv: &[Vec<u8>]) -> String {
    let mut joined = Vec::new();
    for (i, arg) in argv.iter().enumerate() {
        if i > 0 {
            joined.push(b' ');
        }
        joined.extend_from_slice(arg);
        // Enough to fill the message; the rest would be cut anyway.
        if joined.len() > MAX_MESSAGE_VALUE_CHARS * 4 {
            break;
        }
    }
    show(&joined)
}

/// Renders a string from the policy (a pattern) bounded like [`show`].
pub(crate) fn show_str(s: &str) -> String {
    show(s.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_printable() {
        let long = vec![b'a'; 1000];
        let s = show(&long);
        assert_eq!(s.chars().count(), MAX_MESSAGE_VALUE_CHARS + 1);
        assert!(s.ends_with('…'));
        assert_eq!(show(b"a\nb\x1b"), "a\\nb\\u{1b}");
        assert_eq!(show(b"\xff"), "\u{fffd}");
        let argv: Vec<Vec<u8>> = (0..1000).map(|i| format!("arg{i}").into_bytes()).collect();
        let a = show_argv(&argv);
        assert!(a.starts_with("arg0 arg1 "));
        assert!(a.chars().count() <= MAX_MESSAGE_VALUE_CHARS + 1);
    }
}
