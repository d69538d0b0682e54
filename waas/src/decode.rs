//! Decoding as attackers encode: URL (repeated, for double encoding), `%uXXXX`, HTML entities and
//! base64, each with bounded work.
//!
//! [`variants`] turns one raw value into the few forms the detectors look at; every form is at
//! most as long as its input (decoding never grows text), and at most [`MAX_VARIANTS`] exist.

use base64::Engine as _;

/// Most forms [`variants`] returns for one value.
pub const MAX_VARIANTS: usize = 6;
/// Rounds of URL decoding (2 covers double encoding; 3 covers the odd triple).
const URL_ROUNDS: usize = 3;
/// Shortest value worth trying as base64.
const MIN_BASE64: usize = 12;

/// Percent-decodes `s` (`%XX`, `%uXXXX`; `+` to space when `plus` is true). Invalid escapes stay
/// as they are; invalid UTF-8 after decoding is replaced (U+FFFD).
pub fn url_decode(s: &str, plus: bool) -> String {
    let b = s.as_bytes();
    if !b.iter().any(|&c| c == b'%' || (plus && c == b'+')) {
        return s.to_owned();
    }
    let mut out: Vec<u8> = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' {
            if i + 5 < b.len()
                && (b[i + 1] == b'u' || b[i + 1] == b'U')
                && let Some(cp) = hex4(&b[i + 2..i + 6])
            {
                push_unicode(&mut out, cp);
                i += 6;
                continue;
            }
            if i + 2 < b.len()
                && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
            {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
            out.push(c);
        } else if plus && c == b'+' {
            out.push(b' ');
        } else {
            out.push(c);
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Pushes a `%uXXXX` code point; full-width ASCII (U+FF01..U+FF5E) maps to ASCII, as IIS did.
fn push_unicode(out: &mut Vec<u8>, cp: u32) {
    let cp = if (0xFF01..=0xFF5E).contains(&cp) {
        cp - 0xFEE0
    } else {
        cp
    };
    let ch = char::from_u32(cp).unwrap_or('\u{FFFD}');
    let mut buf = [0u8; 4];
    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
}

/// Value of one hex digit.
fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Value of four hex digits.
fn hex4(b: &[u8]) -> Option<u32> {
    b.iter()
        .try_fold(0u32, |acc, &c| hex(c).map(|d| acc << 4 | u32::from(d)))
}

/// Decodes HTML character references: the common named ones and numeric `&#NN;` / `&#xHH;`
/// (the `;` optional, as browsers accept).
pub fn html_decode(s: &str) -> String {
    if !s.contains('&') {
        return s.to_owned();
    }
    const NAMED: &[(&str, char)] = &[
        ("lt", '<'),
        ("gt", '>'),
        ("quot", '"'),
        ("apos", '\''),
        ("amp", '&'),
        ("nbsp", ' '),
        ("colon", ':'),
        ("lpar", '('),
        ("rpar", ')'),
        ("sol", '/'),
        ("bsol", '\\'),
        ("tab", '\t'),
        ("newline", '\n'),
        ("grave", '`'),
        ("equals", '='),
        ("period", '.'),
        ("semi", ';'),
        ("comma", ','),
        ("excl", '!'),
        ("num", '#'),
        ("percnt", '%'),
        ("plus", '+'),
        ("lsqb", '['),
        ("rsqb", ']'),
        ("lcub", '{'),
        ("rcub", '}'),
        ("dollar", '$'),
        ("vert", '|'),
        ("ast", '*'),
        ("quest", '?'),
    ];
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('&') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        let mut done = false;
        if let Some(num) = after.strip_prefix('#') {
            let (digits, radix, skip) = if let Some(h) = num.strip_prefix(['x', 'X']) {
                (
                    h.bytes().take_while(u8::is_ascii_hexdigit).count(),
                    16,
                    2usize,
                )
            } else {
                (num.bytes().take_while(u8::is_ascii_digit).count(), 10, 1)
            };
            if digits > 0 && digits <= 8 {
                let text = &after[skip..skip + digits];
                if let Some(ch) = u32::from_str_radix(text, radix)
                    .ok()
                    .and_then(char::from_u32)
                {
                    out.push(ch);
                    let mut used = skip + digits;
                    if after[used..].starts_with(';') {
                        used += 1;
                    }
                    rest = &after[used..];
                    done = true;
                }
            }
        } else {
            let name_len = after
                .bytes()
                .take(10)
                .take_while(u8::is_ascii_alphabetic)
                .count();
            let name = &after[..name_len];
            if let Some((_, ch)) = NAMED.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
                out.push(*ch);
                let mut used = name_len;
                if after[used..].starts_with(';') {
                    used += 1;
                }
                rest = &after[used..];
                done = true;
            }
        }
        if !done {
            out.push('&');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Decodes `s` as base64 (standard or URL-safe, padding optional) when it looks like base64 and
/// the result is mostly printable text; `None` otherwise.
pub fn base64_text(s: &str) -> Option<String> {
    let t = s.trim();
    if t.len() < MIN_BASE64
        || !t
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'=' | b'-' | b'_'))
    {
        return None;
    }
    // Plain words and numbers are valid base64 too; require some mix of cases or digits.
    let upper = t.bytes().any(|c| c.is_ascii_uppercase());
    let lower = t.bytes().any(|c| c.is_ascii_lowercase());
    if !(upper && lower) {
        return None;
    }
    let body = t.trim_end_matches('=');
    let engines = [
        base64::engine::general_purpose::STANDARD_NO_PAD,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    // Try the three alignments too: a value may carry a base64 tail cut anywhere.
    for skip in 0..3.min(body.len()) {
        let cut = &body[skip..];
        // A length of 4n+1 is never valid base64: drop the last character.
        let cut = if cut.len() % 4 == 1 {
            &cut[..cut.len() - 1]
        } else {
            cut
        };
        for e in &engines {
            if let Ok(bytes) = e.decode(cut) {
                let printable = bytes
                    .iter()
                    .filter(|&&c| (0x20..0x7f).contains(&c) || matches!(c, b'\t' | b'\n' | b'\r'))
                    .count();
                if !bytes.is_empty() && printable * 10 >= bytes.len() * 9 {
                    return Some(String::from_utf8_lossy(&bytes).into_owned());
                }
            }
        }
    }
    None
}

/// The forms of `raw` the detectors inspect: the raw text, its URL decodings (repeated until
/// stable, at most three rounds), `%uXXXX`-decoded, HTML-entity decoded, and base64 when it
/// decodes to text. Duplicates are dropped; `plus` makes `+` a space (query strings and forms).
pub fn variants(raw: &str, plus: bool) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(4);
    let push = |out: &mut Vec<String>, v: String| {
        if out.len() < MAX_VARIANTS && !out.contains(&v) {
            out.push(v);
        }
    };
    push(&mut out, raw.to_owned());
    let mut cur = raw.to_owned();
    for round in 0..URL_ROUNDS {
        // `+` is a space only in the first round: a `+` that decoding produced is literal.
        let next = url_decode(&cur, plus && round == 0);
        if next == cur {
            break;
        }
        cur = next;
    }
    let html = html_decode(&html_decode(&cur));
    // Entities may hide percent escapes and the reverse: one more URL round after entities.
    let html_url = url_decode(&html, false);
    push(&mut out, cur.clone());
    push(&mut out, html);
    push(&mut out, html_url);
    if cur.contains("\\x") || cur.contains("\\u") {
        push(&mut out, js_unescape(&cur));
    }
    if let Some(b) = base64_text(&cur) {
        push(&mut out, b);
    }
    out
}

/// Decodes JavaScript string escapes `\xHH` and `\uHHHH` (other backslashes stay).
pub fn js_unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && (b[i + 1] == b'x' || b[i + 1] == b'X')
            && let (Some(h), Some(l)) = (hex(b[i + 2]), hex(b[i + 3]))
        {
            out.push(char::from(h << 4 | l));
            i += 4;
            continue;
        }
        if b[i] == b'\\'
            && i + 5 < b.len()
            && (b[i + 1] == b'u' || b[i + 1] == b'U')
            && let Some(cp) = hex4(&b[i + 2..i + 6])
        {
            out.push(char::from_u32(cp).unwrap_or('\u{FFFD}'));
            i += 6;
            continue;
        }
        // Copy one whole char.
        let ch = s[i..].chars().next().unwrap_or('\u{FFFD}');
        out.push(ch);
        i += ch.len_utf8().max(1);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_decoding_handles_double_unicode_and_invalid() {
        assert_eq!(url_decode("a%20b+c", true), "a b c");
        assert_eq!(url_decode("a%20b+c", false), "a b+c");
        assert_eq!(url_decode("%252e%252e%252f", false), "%2e%2e%2f");
        assert_eq!(url_decode("%u003cscript%u003e", false), "<script>");
        assert_eq!(url_decode("%uff0e%uff0e/", false), "../");
        assert_eq!(url_decode("100%", false), "100%");
        assert_eq!(url_decode("%zz%4", false), "%zz%4");
        let v = variants("%252e%252e%252fetc%252fpasswd", false);
        assert!(v.iter().any(|x| x == "../etc/passwd"), "{v:?}");
    }

    #[test]
    fn html_entities_decode() {
        assert_eq!(html_decode("&lt;script&gt;"), "<script>");
        assert_eq!(html_decode("&#60;&#x3C;&#X3c"), "<<<");
        assert_eq!(html_decode("java&Tab;script&colon;"), "java\tscript:");
        assert_eq!(html_decode("AT&T & co"), "AT&T & co");
    }

    #[test]
    fn js_escapes_and_plus_after_the_first_round() {
        assert_eq!(js_unescape(r"\u0076al\x75e"), "value");
        assert_eq!(js_unescape(r"a\zb"), r"a\zb");
        let v = variants("%252bADw-script", true);
        assert!(v.iter().any(|x| x == "+ADw-script"), "{v:?}");
    }

    #[test]
    fn base64_only_when_it_decodes_to_text() {
        assert_eq!(
            base64_text("amF2YS5sYW5nLlJ1bnRpbWU=").as_deref(),
            Some("java.lang.Runtime")
        );
        assert_eq!(base64_text("helloworldfoo"), None);
        assert_eq!(base64_text("short"), None);
    }
}
