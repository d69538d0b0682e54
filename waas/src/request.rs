//! The request as the detectors see it, and its split into inspectable parts (path, query and
//! body parameters by name and value, cookies, the headers attacks target).

use serde::Serialize;

/// Most parts one request yields; the rest are not inspected (and the verdict says so).
pub const MAX_PARTS: usize = 512;
/// Longest part value inspected, bytes; longer values are cut (on a char boundary).
pub const MAX_PART_BYTES: usize = 8 * 1024;
/// Deepest JSON nesting walked.
const MAX_JSON_DEPTH: usize = 32;

/// One HTTP request head plus the body prefix the proxy read.
#[derive(Debug, Clone, Default)]
pub struct HttpRequest {
    /// Method as sent (`GET`).
    pub method: String,
    /// Request target as sent: path and optional `?query` (origin form).
    pub target: String,
    /// Headers in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// At most the policy's inspection prefix of the body.
    pub body: Vec<u8>,
    /// False when the body was longer than the prefix (the rest was not inspected).
    pub body_complete: bool,
}

impl HttpRequest {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The path without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// The raw query (after `?`), empty when none.
    pub fn query(&self) -> &str {
        self.target.split_once('?').map(|(_, q)| q).unwrap_or("")
    }
}

/// Where in the request a part was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Location {
    /// The URL path.
    Path,
    /// A query parameter's value.
    Query,
    /// A query parameter's name.
    QueryName,
    /// A body parameter's value (form, JSON string, XML text, or the raw body).
    Body,
    /// A body parameter's name (form field, JSON key).
    BodyName,
    /// A request header's value.
    Header,
    /// A cookie's value.
    Cookie,
    /// A cookie's name.
    CookieName,
}

impl Location {
    /// Stable lowercase name (`query`, `body`, `header`...), as stored in events.
    pub fn as_str(self) -> &'static str {
        match self {
            Location::Path => "path",
            Location::Query => "query",
            Location::QueryName => "query_name",
            Location::Body => "body",
            Location::BodyName => "body_name",
            Location::Header => "header",
            Location::Cookie => "cookie",
            Location::CookieName => "cookie_name",
        }
    }
}

/// One inspectable piece of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// Where it was found.
    pub location: Location,
    /// The parameter, header or cookie name (empty for the path and whole bodies).
    pub name: String,
    /// The raw value (not yet decoded), at most [`MAX_PART_BYTES`].
    pub value: String,
    /// Whether `+` means space in this value (query strings and forms).
    pub plus_is_space: bool,
}

/// Headers that carry structure, not user data: never inspected for injections (browsers fill
/// them with `*/*;q=0.8` and the like).
const STRUCTURAL_HEADERS: &[&str] = &[
    "host",
    "accept",
    "accept-encoding",
    "accept-language",
    "accept-charset",
    "content-type",
    "content-length",
    "content-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "upgrade",
    "cache-control",
    "pragma",
    "if-none-match",
    "if-match",
    "if-modified-since",
    "if-unmodified-since",
    "if-range",
    "range",
    "upgrade-insecure-requests",
    "authorization",
    "proxy-authorization",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-forwarded-host",
    "x-real-ip",
    "x-amzn-trace-id",
    "forwarded",
    "date",
    "dnt",
    "priority",
    "cookie",
    "origin",
];

/// Cuts `s` to at most `max` bytes on a char boundary.
pub fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Collects parts, stopping at [`MAX_PARTS`].
struct Parts {
    list: Vec<Part>,
    truncated: bool,
}

impl Parts {
    fn push(&mut self, location: Location, name: &str, value: &str, plus: bool) {
        if value.is_empty() {
            return;
        }
        if self.list.len() >= MAX_PARTS {
            self.truncated = true;
            return;
        }
        self.list.push(Part {
            location,
            name: cut(name, 256).to_owned(),
            value: cut(value, MAX_PART_BYTES).to_owned(),
            plus_is_space: plus,
        });
    }

    /// `a=b&c=d` pairs: names and values as separate parts.
    fn form(&mut self, s: &str, value_loc: Location, name_loc: Location) {
        for pair in s.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some((n, v)) => {
                    self.push(name_loc, "", n, true);
                    self.push(value_loc, n, v, true);
                }
                // A bare token (`?<script>`) is a name without value: inspect it as a value.
                None => self.push(value_loc, "", pair, true),
            }
        }
    }

    /// JSON strings (keys and values) and numbers, walked depth-first.
    fn json(&mut self, v: &serde_json::Value, key: &str, depth: usize) {
        if depth > MAX_JSON_DEPTH {
            self.truncated = true;
            return;
        }
        match v {
            serde_json::Value::String(s) => self.push(Location::Body, key, s, false),
            serde_json::Value::Array(a) => a.iter().for_each(|x| self.json(x, key, depth + 1)),
            serde_json::Value::Object(o) => {
                for (k, x) in o {
                    self.push(Location::BodyName, "", k, false);
                    self.json(x, k, depth + 1);
                }
            }
            _ => {}
        }
    }
}

/// Splits `req` into the parts the detectors inspect. The second value is true when some parts
/// were left out (more than [`MAX_PARTS`], or JSON nested deeper than the walk goes).
pub fn parts(req: &HttpRequest) -> (Vec<Part>, bool) {
    let mut p = Parts {
        list: Vec::with_capacity(16),
        truncated: false,
    };
    p.push(Location::Path, "", req.path(), false);
    p.form(req.query(), Location::Query, Location::QueryName);
    for (name, value) in &req.headers {
        let lname = name.to_ascii_lowercase();
        if lname == "cookie" {
            for c in value.split(';') {
                let c = c.trim();
                match c.split_once('=') {
                    Some((n, v)) => {
                        p.push(Location::CookieName, "", n, false);
                        p.push(Location::Cookie, n, v, false);
                    }
                    None => p.push(Location::Cookie, "", c, false),
                }
            }
        } else if !STRUCTURAL_HEADERS.contains(&lname.as_str()) && !lname.starts_with("sec-") {
            p.push(Location::Header, name, value, false);
            // A Referer's query carries parameters of the page before: inspect them as well.
            if lname == "referer"
                && let Some((_, q)) = value.split_once('?')
            {
                p.form(
                    q.split('#').next().unwrap_or(""),
                    Location::Header,
                    Location::Header,
                );
            }
        }
    }
    body_parts(req, &mut p);
    (p.list, p.truncated)
}

/// Splits the body by content type: forms into fields, JSON into strings, XML into text and
/// attribute values, multipart into its parts' values; anything else as one value.
fn body_parts(req: &HttpRequest, p: &mut Parts) {
    if req.body.is_empty() {
        return;
    }
    let body = String::from_utf8_lossy(&req.body);
    let ctype = req
        .header("content-type")
        .unwrap_or("")
        .to_ascii_lowercase();
    if ctype.contains("json") {
        // A cut body is not valid JSON; fall through to the raw text then.
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) {
            p.json(&v, "", 0);
            return;
        }
        p.push(Location::Body, "", &body, false);
    } else if ctype.contains("xml") {
        xml_parts(&body, p);
    } else if ctype.starts_with("multipart/") {
        multipart_parts(&body, req.header("content-type").unwrap_or(""), p);
    } else if ctype.starts_with("application/x-www-form-urlencoded") {
        p.form(&body, Location::Body, Location::BodyName);
    } else if ctype.is_empty() {
        // No declared type (browsers and API clients always declare one): read it as a form,
        // and as one raw value too, since splitting at `=` and `&` may cut a payload apart.
        p.form(&body, Location::Body, Location::BodyName);
        if body.contains(['=', '&']) {
            p.push(Location::Body, "", &body, false);
        }
    } else {
        p.push(Location::Body, "", &body, false);
    }
}

/// XML: attribute values and text nodes (markup itself is not user data).
fn xml_parts(body: &str, p: &mut Parts) {
    let mut rest = body;
    while let Some(open) = rest.find('<') {
        let text = rest[..open].trim();
        if !text.is_empty() {
            p.push(Location::Body, "", text, false);
        }
        let Some(close) = rest[open..].find('>') else {
            rest = &rest[open + 1..];
            continue;
        };
        let tag = &rest[open + 1..open + close];
        let mut t = tag;
        while let Some(q) = t.find(['"', '\'']) {
            let quote = &t[q..q + 1];
            let after = &t[q + 1..];
            let Some(end) = after.find(quote) else { break };
            p.push(Location::Body, "", &after[..end], false);
            t = &after[end + 1..];
        }
        rest = &rest[open + close + 1..];
    }
    let text = rest.trim();
    if !text.is_empty() {
        p.push(Location::Body, "", text, false);
    }
}

/// multipart/form-data: each part's body as a value named by its `name=`.
fn multipart_parts(body: &str, ctype: &str, p: &mut Parts) {
    let Some(boundary) = ctype
        .split(';')
        .find_map(|x| {
            let x = x.trim();
            x.get(..9)
                .filter(|k| k.eq_ignore_ascii_case("boundary="))
                .map(|_| &x[9..])
        })
        .map(|b| b.trim_matches('"'))
    else {
        p.push(Location::Body, "", body, false);
        return;
    };
    let delim = format!("--{boundary}");
    for section in body.split(delim.as_str()).skip(1) {
        let Some((head, value)) = section
            .split_once("\r\n\r\n")
            .or_else(|| section.split_once("\n\n"))
        else {
            continue;
        };
        let name = head
            .split(';')
            .find_map(|x| x.trim().strip_prefix("name="))
            .map(|n| n.trim_matches('"').lines().next().unwrap_or(""))
            .unwrap_or("");
        let value = value.trim_end_matches(['\r', '\n', '-']);
        if let Some(file) = head
            .split(';')
            .find_map(|x| x.trim().strip_prefix("filename="))
            .map(|n| n.trim_matches('"').lines().next().unwrap_or(""))
        {
            p.push(Location::BodyName, "filename", file, false);
        }
        p.push(Location::BodyName, "", name, false);
        p.push(Location::Body, name, value, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(target: &str, headers: &[(&str, &str)], body: &str) -> HttpRequest {
        HttpRequest {
            method: "POST".into(),
            target: target.into(),
            headers: headers
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            body: body.as_bytes().to_vec(),
            body_complete: true,
        }
    }

    #[test]
    fn splits_query_cookies_headers_and_json() {
        let r = req(
            "/a/b?x=1&y=%27",
            &[
                ("Accept", "*/*"),
                ("Cookie", "sid=abc; t=z"),
                ("User-Agent", "curl"),
                ("Content-Type", "application/json"),
            ],
            r#"{"q":"O'Brien","n":[{"k":"v"}]}"#,
        );
        let (ps, cut) = parts(&r);
        assert!(!cut);
        let has = |l: Location, n: &str, v: &str| {
            ps.iter()
                .any(|p| p.location == l && p.name == n && p.value == v)
        };
        assert!(has(Location::Path, "", "/a/b"));
        assert!(has(Location::Query, "y", "%27"));
        assert!(has(Location::Cookie, "sid", "abc"));
        assert!(has(Location::Header, "User-Agent", "curl"));
        assert!(has(Location::Body, "q", "O'Brien"));
        assert!(has(Location::Body, "k", "v"));
        assert!(has(Location::BodyName, "", "n"));
        assert!(!ps.iter().any(|p| p.value == "*/*"), "Accept is structural");
    }

    #[test]
    fn xml_and_multipart_bodies() {
        let r = req(
            "/",
            &[("Content-Type", "application/xml")],
            r#"<?xml version="1.0"?><a p="&lt;b&gt;">text</a>"#,
        );
        let (ps, _) = parts(&r);
        assert!(ps.iter().any(|p| p.value == "&lt;b&gt;"));
        assert!(ps.iter().any(|p| p.value == "text"));
        let r = req(
            "/",
            &[("Content-Type", "multipart/form-data; boundary=XX")],
            "--XX\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\nhello\r\n--XX--\r\n",
        );
        let (ps, _) = parts(&r);
        assert!(
            ps.iter().any(|p| p.name == "f" && p.value == "hello"),
            "{ps:?}"
        );
    }

    #[test]
    fn part_count_is_bounded() {
        let q: Vec<String> = (0..2000).map(|i| format!("a{i}=b")).collect();
        let r = req(&format!("/?{}", q.join("&")), &[], "");
        let (ps, cut) = parts(&r);
        assert_eq!(ps.len(), MAX_PARTS);
        assert!(cut);
    }
}
