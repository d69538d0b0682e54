//! Attack detectors: libinjection (SQLi, XSS) plus pattern families written for this project,
//! applied to every decoded form of every part of a request.
//!
//! Each family's patterns live in its own module as `(rule id, description, regex)`; the
//! [`Engine`] compiles them once into one `RegexSet` per family and view (raw-lowercased, SQL
//! normalised, shell normalised), so one part costs one pass per family.

mod cmdi;
mod java;
mod lfi;
mod protocol;
mod scanner;
mod sqli;
mod xss;

use regex::bytes::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};
use serde::{Deserialize, Serialize};

pub use protocol::{OVERSIZED_HEAD, oversized_head, protocol_findings};

use crate::decode::variants;
use crate::request::{HttpRequest, Location, Part, cut, parts};

/// Longest matched excerpt kept in a finding, bytes.
pub const MAX_MATCH_BYTES: usize = 200;
/// Most findings one request reports (the first ones found).
pub const MAX_FINDINGS: usize = 16;

/// A protection family; each has its own effect in the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// SQL injection.
    Sqli,
    /// Cross-site scripting.
    Xss,
    /// OS command injection.
    Cmdi,
    /// Path traversal and local file inclusion.
    Lfi,
    /// Remote file inclusion.
    Rfi,
    /// Server-side request forgery to cloud metadata endpoints.
    Ssrf,
    /// Java attacks: JNDI / Log4Shell lookups, class and deserialization gadgets, OGNL.
    Java,
    /// Shellshock (`() { :; };` in a header).
    Shellshock,
    /// Known attack tools by signature.
    Scanner,
    /// Malformed requests, request smuggling, oversized heads.
    Protocol,
}

impl Family {
    /// Every family, in a stable order.
    pub const ALL: [Family; 10] = [
        Family::Sqli,
        Family::Xss,
        Family::Cmdi,
        Family::Lfi,
        Family::Rfi,
        Family::Ssrf,
        Family::Java,
        Family::Shellshock,
        Family::Scanner,
        Family::Protocol,
    ];

    /// Stable lowercase name (`sqli`), as in the policy and events.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Sqli => "sqli",
            Family::Xss => "xss",
            Family::Cmdi => "cmdi",
            Family::Lfi => "lfi",
            Family::Rfi => "rfi",
            Family::Ssrf => "ssrf",
            Family::Java => "java",
            Family::Shellshock => "shellshock",
            Family::Scanner => "scanner",
            Family::Protocol => "protocol",
        }
    }
}

/// One detection: which rule matched what, where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Rule id (`sqli-110`); stable, used in per-path exceptions.
    pub rule_id: String,
    /// The rule's family.
    pub family: Family,
    /// What the rule looks for, for people.
    pub message: String,
    /// Where the value was found.
    pub location: Location,
    /// Parameter, header or cookie name (empty for path and whole bodies).
    pub name: String,
    /// The matched text (decoded form), at most [`MAX_MATCH_BYTES`].
    pub matched: String,
}

/// A pattern rule: id, description, regex source.
pub(crate) type PatternRule = (&'static str, &'static str, &'static str);

/// Which normalisation a family's patterns see.
#[derive(Clone, Copy)]
enum View {
    /// Lowercased decoded text.
    Lower,
    /// SQL view: lowercased, `/*comments*/` removed, whitespace collapsed.
    Sql,
    /// Shell view: quotes, backslashes and carets removed, separators kept.
    Shell,
}

/// One compiled family.
struct FamilySet {
    family: Family,
    view: View,
    /// Which locations this family inspects.
    locations: &'static [Location],
    set: RegexSet,
    rules: Vec<(&'static str, &'static str, Regex)>,
}

const ALL_LOCATIONS: &[Location] = &[
    Location::Path,
    Location::Query,
    Location::QueryName,
    Location::Body,
    Location::BodyName,
    Location::Header,
    Location::Cookie,
    Location::CookieName,
];
const NOT_PATH: &[Location] = &[
    Location::Query,
    Location::QueryName,
    Location::Body,
    Location::BodyName,
    Location::Header,
    Location::Cookie,
    Location::CookieName,
];

/// The compiled detectors. Build once ([`Engine::new`]) and share: inspection takes `&self`.
pub struct Engine {
    families: Vec<FamilySet>,
    sql_comment: regex::Regex,
    whitespace: regex::Regex,
    clean: CleanMemo,
}

/// Most parts remembered as clean; when full the memo starts over.
pub const CLEAN_MEMO_ENTRIES: usize = 1024;
/// Longest value remembered as clean, bytes (so the memo holds at most ~300 KiB).
pub const CLEAN_MEMO_VALUE_BYTES: usize = 256;

/// What decides a part's inspection besides its value: the enabled families (a bit each),
/// where it was found, whether its name marks a secret, whether `+` is a space.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct PartKind {
    families: u16,
    location: Location,
    secret: bool,
    plus: bool,
}

/// Parts found clean before, by exact value: traffic repeats itself (the same User-Agent on
/// every request of a browser, the same paths), and a repeated part then costs one lookup
/// instead of decoding and every detector. Only clean results are kept, keyed by everything
/// inspection depends on, so a hit gives exactly what inspecting again would.
#[derive(Default)]
struct CleanMemo(std::sync::Mutex<MemoSets>);

#[derive(Default)]
struct MemoSets {
    by_kind: std::collections::HashMap<PartKind, std::collections::HashSet<Box<str>>>,
    len: usize,
}

impl CleanMemo {
    fn contains(&self, kind: PartKind, value: &str) -> bool {
        if value.len() > CLEAN_MEMO_VALUE_BYTES {
            return false;
        }
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.by_kind.get(&kind).is_some_and(|set| set.contains(value))
    }

    fn insert(&self, kind: PartKind, value: &str) {
        if value.len() > CLEAN_MEMO_VALUE_BYTES {
            return;
        }
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if m.len >= CLEAN_MEMO_ENTRIES {
            *m = MemoSets::default();
        }
        if m.by_kind.entry(kind).or_default().insert(value.into()) {
            m.len += 1;
        }
    }
}

impl Default for Engine {
    fn default() -> Self {
        Self::new()
    }
}

impl Engine {
    /// Compiles every family's patterns.
    ///
    /// # Panics
    /// Never with the built-in patterns: a pattern that fails to compile is a bug caught by the
    /// crate's tests (`engine_compiles`).
    pub fn new() -> Self {
        let mk = |family, view, locations, rules: &[PatternRule]| {
            // ASCII semantics (`\w`, `\b`): Unicode word boundaries would push the regex engine
            // off its DFA onto the much slower NFA simulation; the text is lowercased ASCII-wise
            // where attacks live, and non-ASCII bytes simply never match a class.
            let set = RegexSetBuilder::new(rules.iter().map(|r| r.2))
                .unicode(false)
                .size_limit(64 << 20)
                .dfa_size_limit(32 << 20)
                .build()
                .expect("built-in WAAS patterns");
            let rules = rules
                .iter()
                .map(|&(id, msg, re)| {
                    let re = RegexBuilder::new(re)
                        .unicode(false)
                        .build()
                        .expect("built-in WAAS pattern");
                    (id, msg, re)
                })
                .collect();
            FamilySet {
                family,
                view,
                locations,
                set,
                rules,
            }
        };
        Engine {
            families: vec![
                // Most specific first: a value matching several families is reported by the
                // first (SSRF before RFI, JNDI before shell substitution, files before commands).
                mk(Family::Sqli, View::Sql, ALL_LOCATIONS, sqli::RULES),
                mk(Family::Xss, View::Lower, ALL_LOCATIONS, xss::RULES),
                mk(Family::Ssrf, View::Lower, ALL_LOCATIONS, lfi::SSRF_RULES),
                mk(Family::Java, View::Lower, ALL_LOCATIONS, java::RULES),
                mk(
                    Family::Shellshock,
                    View::Lower,
                    &[Location::Header, Location::Cookie],
                    java::SHELLSHOCK_RULES,
                ),
                mk(Family::Lfi, View::Lower, NOT_PATH, lfi::LFI_RULES),
                mk(Family::Lfi, View::Lower, &[Location::Path], lfi::PATH_RULES),
                mk(Family::Rfi, View::Lower, NOT_PATH, lfi::RFI_RULES),
                mk(Family::Cmdi, View::Shell, NOT_PATH, cmdi::RULES),
                mk(
                    Family::Cmdi,
                    View::Shell,
                    &[Location::Header],
                    cmdi::HEADER_RULES,
                ),
            ],
            sql_comment: regex::Regex::new(r"/\*!?[0-9]*|\*/").expect("regex"),
            whitespace: regex::Regex::new(r"\s+").expect("regex"),
            clean: CleanMemo::default(),
        }
    }

    /// Inspects every part of `req` with every family in `enabled`; returns findings (at most
    /// [`MAX_FINDINGS`]) and whether some of the request was not inspected (parts left out or a
    /// body longer than the prefix).
    pub fn inspect(&self, req: &HttpRequest, enabled: &dyn Fn(Family) -> bool) -> Inspection {
        let (list, parts_cut) = parts(req);
        let families = Family::ALL
            .iter()
            .enumerate()
            .filter(|(_, f)| enabled(**f))
            .fold(0u16, |m, (i, _)| m | (1 << i));
        let mut findings = Vec::new();
        if enabled(Family::Protocol) {
            findings.extend(protocol_findings(req));
        }
        if enabled(Family::Scanner) {
            findings.extend(scanner::findings(req));
        }
        for part in &list {
            if findings.len() >= MAX_FINDINGS {
                break;
            }
            let kind = PartKind {
                families,
                location: part.location,
                secret: is_secret_name(&part.name),
                plus: part.plus_is_space,
            };
            if self.clean.contains(kind, &part.value) {
                continue;
            }
            let before = findings.len();
            self.inspect_part(part, enabled, &mut findings);
            if findings.len() == before {
                self.clean.insert(kind, &part.value);
            }
        }
        findings.truncate(MAX_FINDINGS);
        Inspection {
            findings,
            incomplete: parts_cut || !req.body_complete,
        }
    }

    /// Runs the enabled families over every decoded form of one part; at most one finding per
    /// family per part.
    fn inspect_part(&self, part: &Part, enabled: &dyn Fn(Family) -> bool, out: &mut Vec<Finding>) {
        // `/.well-known/` is the one dot-directory a normal site serves.
        let value = if part.location == Location::Path {
            part.value.replacen("/.well-known/", "/well-known/", 1)
        } else {
            part.value.clone()
        };
        if plain_token(&value) {
            return;
        }
        let forms = variants(&value, part.plus_is_space);
        // Password-like fields hold arbitrary symbols: only libinjection's grammar judges them.
        let secret = is_secret_name(&part.name);
        let mut found: Vec<Family> = Vec::new();
        let push = |out: &mut Vec<Finding>, family, id: &str, msg: &str, m: &str| {
            out.push(Finding {
                rule_id: id.to_owned(),
                family,
                message: msg.to_owned(),
                location: part.location,
                name: part.name.clone(),
                matched: cut(m, MAX_MATCH_BYTES).to_owned(),
            });
        };
        for form in &forms {
            if enabled(Family::Sqli)
                && !found.contains(&Family::Sqli)
                && libinjectionrs::detect_sqli(form.as_bytes()).is_injection()
            {
                found.push(Family::Sqli);
                push(out, Family::Sqli, "sqli-100", sqli::LIBINJECTION, form);
            }
            if enabled(Family::Xss)
                && !found.contains(&Family::Xss)
                && libinjectionrs::detect_xss(form.as_bytes()).is_injection()
            {
                found.push(Family::Xss);
                push(out, Family::Xss, "xss-100", xss::LIBINJECTION, form);
            }
            let lower = form.to_lowercase();
            let mut sql: Option<String> = None;
            let mut shell: Option<String> = None;
            for fs in &self.families {
                if secret
                    || found.contains(&fs.family)
                    || !enabled(fs.family)
                    || !fs.locations.contains(&part.location)
                {
                    continue;
                }
                let text: &str = match fs.view {
                    View::Lower => &lower,
                    View::Sql => sql.get_or_insert_with(|| self.sql_view(&lower)),
                    View::Shell => shell.get_or_insert_with(|| cmdi::shell_view(&lower)),
                };
                // `is_match` stops at the first match and uses the set's prefilters; the
                // overlapping search that names the rule runs only on a hit (benign traffic,
                // the common case, never pays for it).
                if !fs.set.is_match(text.as_bytes()) {
                    continue;
                }
                let Some(i) = fs.set.matches(text.as_bytes()).iter().next() else {
                    continue;
                };
                let (id, msg, re) = &fs.rules[i];
                let m = re
                    .find(text.as_bytes())
                    .map(|m| String::from_utf8_lossy(m.as_bytes()).into_owned())
                    .unwrap_or_else(|| text.to_owned());
                found.push(fs.family);
                push(out, fs.family, id, msg, &m);
            }
        }
    }

    /// Lowercased text with SQL comments replaced by spaces and whitespace collapsed.
    fn sql_view(&self, lower: &str) -> String {
        let s = self.sql_comment.replace_all(lower, " ");
        self.whitespace.replace_all(&s, " ").into_owned()
    }
}

/// True for short plain tokens (`42`, `hello`, `en-US`): letters, digits and `-` only (an
/// underscore is inspected: `xp_cmdshell`), under 12 bytes (too short to be base64 the decoder
/// would try), and not one of [`BARE_WORDS`]. They skip inspection: most parameter names and many
/// values are like this, and it is the proxy's hot path.
fn plain_token(v: &str) -> bool {
    v.len() < 12
        && v.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
        && !BARE_WORDS.iter().any(|w| v.eq_ignore_ascii_case(w))
}

/// Plain tokens that are still inspected: SQL type, catalog and operator words and Unix commands
/// that are not ordinary words, which a probe sends alone (`tempdb`, `xor`, `whoami`). The
/// patterns (`sqli-194`, `sqli-196`, `cmdi-112`) judge them; ordinary tokens skip inspection.
const BARE_WORDS: &[&str] = &[
    "tempdb",
    "msdb",
    "northwind",
    "nvarchar",
    "varchar",
    "varbinary",
    "nchar",
    "msdasql",
    "sqloledb",
    "openquery",
    "regexp",
    "rlike",
    "xor",
    "whoami",
    "ifconfig",
    "ipconfig",
    "visudo",
    "shutdown",
    "lastlog",
    "lastlogin",
    "systeminfo",
    "tasklist",
    "netstat",
    "uname",
    "printenv",
];

/// True for parameter names that hold secrets (`password`, `passwd`, `pwd`, `secret`): their
/// values are judged by libinjection only, since the pattern families flag random symbols.
fn is_secret_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    ["pass", "pwd", "secret"].iter().any(|s| n.contains(s))
}

/// The result of [`Engine::inspect`].
#[derive(Debug, Clone, Default)]
pub struct Inspection {
    /// What was found (at most [`MAX_FINDINGS`]).
    pub findings: Vec<Finding>,
    /// True when part of the request was not inspected (body beyond the prefix, too many parts).
    pub incomplete: bool,
}

/// Every rule id the engine can report with its family and description (for the Console's
/// policy help and exception validation).
pub fn rule_catalog() -> Vec<(&'static str, Family, &'static str)> {
    let mut v = vec![
        ("sqli-100", Family::Sqli, sqli::LIBINJECTION),
        ("xss-100", Family::Xss, xss::LIBINJECTION),
    ];
    let lists: [(Family, &[PatternRule]); 11] = [
        (Family::Cmdi, cmdi::HEADER_RULES),
        (Family::Sqli, sqli::RULES),
        (Family::Xss, xss::RULES),
        (Family::Cmdi, cmdi::RULES),
        (Family::Lfi, lfi::LFI_RULES),
        (Family::Lfi, lfi::PATH_RULES),
        (Family::Rfi, lfi::RFI_RULES),
        (Family::Ssrf, lfi::SSRF_RULES),
        (Family::Java, java::RULES),
        (Family::Shellshock, java::SHELLSHOCK_RULES),
        (Family::Scanner, scanner::RULES),
    ];
    for (f, rules) in lists {
        v.extend(rules.iter().map(|r| (r.0, f, r.1)));
    }
    v.extend(protocol::RULES.iter().map(|r| (r.0, Family::Protocol, r.1)));
    v.extend(
        crate::ACCESS_RULES
            .iter()
            .map(|r| (r.0, Family::Protocol, r.1)),
    );
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_probe_words_are_inspected_ordinary_tokens_are_not() {
        assert!(plain_token("hello") && plain_token("en-US") && plain_token("42"));
        assert!(!plain_token("tempdb") && !plain_token("WhoAmI") && !plain_token("xp_cmdshell"));
        let engine = Engine::new();
        let get = |q: &str| HttpRequest {
            method: "GET".into(),
            target: format!("/p?v={q}"),
            headers: Vec::new(),
            body: Vec::new(),
            body_complete: true,
        };
        let fams = |q: &str| -> Vec<Family> {
            let i = engine.inspect(&get(q), &|_| true);
            i.findings.iter().map(|f| f.family).collect()
        };
        assert_eq!(fams("whoami"), vec![Family::Cmdi]);
        assert_eq!(fams("tempdb"), vec![Family::Sqli]);
        assert!(fams("hello").is_empty());
        assert!(fams("pubs").is_empty());
    }

    #[test]
    fn the_clean_memo_gives_what_inspecting_again_would() {
        let engine = Engine::new();
        let get = |q: &str| HttpRequest {
            method: "GET".into(),
            target: format!("/p?v={q}"),
            headers: vec![(
                "User-Agent".into(),
                "Mozilla/5.0 (X11; Linux x86_64)".into(),
            )],
            body: Vec::new(),
            body_complete: true,
        };
        let sqli = "1%27%20OR%20%271%27%3D%271";
        // Clean with SQLi disabled, so remembered as clean for that set of families...
        let no_sqli = |f: Family| f != Family::Sqli;
        assert!(engine.inspect(&get(sqli), &no_sqli).findings.is_empty());
        assert!(engine.inspect(&get(sqli), &no_sqli).findings.is_empty());
        // ... and still found once SQLi is enabled, every time.
        for _ in 0..2 {
            let i = engine.inspect(&get(sqli), &|_| true);
            assert_eq!(i.findings[0].family, Family::Sqli, "{:?}", i.findings);
        }
        // A clean User-Agent is remembered; an attack never is.
        let kind = PartKind {
            families: (1 << Family::ALL.len()) - 1,
            location: Location::Header,
            secret: false,
            plus: false,
        };
        assert!(
            engine
                .clean
                .contains(kind, "Mozilla/5.0 (X11; Linux x86_64)")
        );
        let q = PartKind {
            location: Location::Query,
            plus: true,
            ..kind
        };
        assert!(!engine.clean.contains(q, sqli));
        // (It was remembered, for the families without SQLi only.)
        let q_no_sqli = PartKind {
            families: kind.families & !1,
            ..q
        };
        assert!(engine.clean.contains(q_no_sqli, sqli));
        // Bounded.
        for i in 0..(CLEAN_MEMO_ENTRIES + 10) {
            engine.clean.insert(kind, &format!("value {i}"));
        }
        assert!(engine.clean.0.lock().unwrap().len <= CLEAN_MEMO_ENTRIES);
        engine
            .clean
            .insert(kind, &"x".repeat(CLEAN_MEMO_VALUE_BYTES + 1));
        assert!(
            !engine
                .clean
                .contains(kind, &"x".repeat(CLEAN_MEMO_VALUE_BYTES + 1))
        );
    }

    #[test]
    fn engine_compiles_and_rule_ids_are_unique() {
        let _ = Engine::new();
        let cat = rule_catalog();
        let mut ids: Vec<&str> = cat.iter().map(|c| c.0).collect();
        ids.sort_unstable();
        let n = ids.len();
        ids.dedup();
        assert_eq!(ids.len(), n, "duplicate rule id");
    }
}
