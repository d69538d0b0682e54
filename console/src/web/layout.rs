//! The shared page frame: head with inline CSS (under the response's CSP nonce), the product's
//! navigation, the operator's logout button, and the small live-refresh script.
//!
//! To add a page to the navigation, add a [`NavItem`] to [`NAV`].

use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::auth::{CSRF_FIELD, Operator};
use super::security::CspNonce;

/// One entry of the navigation: `section > label`.
pub struct NavItem {
    pub section: &'static str,
    pub label: &'static str,
    pub href: &'static str,
}

/// The navigation, in product order (Manage, Monitor, Defend, Deploy). Only pages that exist.
///
/// One name per page everywhere: the page at `href` has `label` as its `<h1>`, its `<title>` is
/// `section › label`, and the README calls it **section › label**.
pub const NAV: &[NavItem] = &[
    NavItem {
        section: "Manage",
        label: "Defenders",
        href: "/manage/defenders",
    },
    NavItem {
        section: "Manage",
        label: "Tokens",
        href: "/manage/tokens",
    },
    NavItem {
        section: "Monitor",
        label: "Audits",
        href: "/monitor/events/app-embedded",
    },
    NavItem {
        section: "Monitor",
        label: "WAAS",
        href: "/monitor/events/waas",
    },
    NavItem {
        section: "Monitor",
        label: "Vulnerabilities",
        href: "/monitor/vulnerabilities/images",
    },
    NavItem {
        section: "Monitor",
        label: "Compliance",
        href: "/monitor/compliance",
    },
    NavItem {
        section: "Defend",
        label: "Runtime",
        href: "/defend/runtime/app-embedded",
    },
    NavItem {
        section: "Defend",
        label: "WAAS",
        href: "/defend/waas",
    },
    NavItem {
        section: "Defend",
        label: "Compliance",
        href: "/defend/compliance",
    },
    NavItem {
        section: "Deploy",
        label: "Defenders",
        href: "/deploy/defenders",
    },
];

/// Constant CSS (no data in it).
const CSS: &str = r#"
:root { --fg:#1d2330; --muted:#667085; --line:#e4e7ec; --bg:#f7f8fa; --accent:#1f5fbf;
        --ok:#137a3a; --ok-bg:#e3f4e9; --off:#6b7280; --off-bg:#eef0f3; --err:#b42318; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif; color:var(--fg); background:var(--bg); }
header.top { display:flex; align-items:center; gap:24px; padding:0 20px; height:48px; background:#141a26; color:#fff; }
header.top .brand { font-weight:600; letter-spacing:.02em; }
header.top nav { display:flex; gap:4px; flex:1; }
header.top nav a { color:#c9d1de; text-decoration:none; padding:6px 10px; border-radius:6px; }
header.top nav a .section { color:#8b95a7; }
header.top nav a.active, header.top nav a:hover { background:#25304a; color:#fff; }
header.top .who { color:#c9d1de; display:flex; gap:10px; align-items:center; }
header.top form { margin:0; }
header.top button { background:transparent; color:#c9d1de; border:1px solid #3a4660; border-radius:6px; padding:4px 10px; cursor:pointer; }
main { padding:20px 24px; max-width:1400px; }
h1 { font-size:20px; margin:0 0 12px; }
h2 { font-size:16px; margin:24px 0 8px; }
.muted { color:var(--muted); }
p.crumbs { color:var(--muted); margin:0 0 4px; font-size:12.5px; }
#stale-banner { background:#fef3f2; border:1px solid #fecdca; color:var(--err); border-radius:6px; padding:8px 14px; font-weight:600; }
.stale { opacity:.55; }
p.crumbs a { color:inherit; }
.page-head { display:flex; align-items:baseline; gap:16px; }
table.grid { border-collapse:collapse; width:100%; background:#fff; border:1px solid var(--line); }
table.grid th, table.grid td { text-align:left; padding:7px 10px; border-bottom:1px solid var(--line); vertical-align:top; }
table.grid th { background:#fbfbfc; font-weight:600; color:#344054; white-space:nowrap; }
table.grid td.num { text-align:right; font-variant-numeric:tabular-nums; }
table.grid td.wrap { word-break:break-all; font-family:ui-monospace,SFMono-Regular,Menlo,monospace; font-size:12.5px; }
a { color:var(--accent); }
.status { display:inline-block; padding:1px 8px; border-radius:10px; white-space:nowrap; font-size:12.5px; }
.status.connected { color:var(--ok); background:var(--ok-bg); }
.status.disconnected { color:var(--off); background:var(--off-bg); }
dl.meta { display:grid; grid-template-columns:max-content 1fr; gap:4px 18px; background:#fff; border:1px solid var(--line); padding:12px 16px; margin:0; }
dl.meta dt { color:var(--muted); }
dl.meta dd { margin:0; word-break:break-all; }
.empty { background:#fff; border:1px dashed var(--line); padding:18px; }
pre { background:#141a26; color:#e6e9ef; padding:10px 12px; border-radius:6px; overflow:auto; }
main.login { max-width:340px; margin:12vh auto; background:#fff; border:1px solid var(--line); padding:24px; border-radius:8px; }
main.login form { display:grid; gap:12px; }
main.login label { display:grid; gap:4px; color:#344054; }
main.login input { padding:8px; border:1px solid #d0d5dd; border-radius:6px; font:inherit; }
main.login button { padding:8px; border:0; border-radius:6px; background:var(--accent); color:#fff; font:inherit; cursor:pointer; }
.error { color:var(--err); }
form.deploy { display:grid; gap:16px; background:#fff; border:1px solid var(--line); border-radius:8px; padding:16px 18px; }
form.deploy .field { display:grid; gap:4px; align-content:start; min-width:0; }
form.deploy fieldset { border:0; margin:0; padding:0; }
form.deploy label, form.deploy legend { font-weight:600; color:#344054; }
form.deploy legend { padding:0; margin-bottom:4px; }
form.deploy label.choice { font-weight:normal; display:flex; gap:6px; align-items:baseline; }
form.deploy .options { display:grid; grid-template-columns:repeat(auto-fit, minmax(340px, 1fr)); gap:16px 28px; }
form.deploy input[type=text], textarea.code { width:100%; padding:7px 8px; border:1px solid #d0d5dd; border-radius:6px; font:inherit; }
textarea.code { font-family:ui-monospace,SFMono-Regular,Menlo,monospace; font-size:12.5px; resize:vertical; }
textarea.output { background:#fbfbfc; }
[aria-invalid=true] { border-color:var(--err) !important; outline:1px solid var(--err); }
.hint { color:var(--muted); font-size:12.5px; }
.field-error { border-left:3px solid var(--err); padding:2px 10px; background:#fef3f2; }
.field-error p { margin:4px 0; }
button.primary { justify-self:start; padding:8px 16px; border:0; border-radius:6px; background:var(--accent); color:#fff; font:inherit; cursor:pointer; }
section.result { background:#fff; border:1px solid var(--line); border-radius:8px; padding:4px 18px 16px; margin-bottom:20px; }
.warnings, .notice { background:#fffaeb; border:1px solid #fedf89; border-radius:6px; padding:8px 14px; }
.warnings ul { margin:4px 0 0; padding-left:20px; }
.copy-row { display:flex; gap:12px; align-items:center; margin:10px 0 8px; }
.copy-row button { padding:6px 14px; border:1px solid #d0d5dd; border-radius:6px; background:#fff; font:inherit; cursor:pointer; }
section.steps pre { white-space:pre-wrap; word-break:break-all; }
form.inline { display:inline; margin:0; }
"#;

/// Constant script (no data in it): every element with `data-refresh="URL"` has its children
/// replaced every `data-interval` ms (default 5000) by those of the element the URL returns
/// (server-rendered, escaped HTML). An element with `data-refresh-status` shows the outcome.
/// A lost session sends the browser to the login page. While the Console cannot be reached,
/// the `#stale-banner` says since when, and refreshed elements are greyed (`.stale`), so that
/// a list never keeps claiming "Connected" on old data.
const REFRESH_JS: &str = r#"
(function () {
  "use strict";
  var status = document.querySelector("[data-refresh-status]");
  var banner = document.getElementById("stale-banner");
  var failingSince = null;
  function say(text) { if (status) { status.textContent = text; } }
  function stale(el, failed) {
    el.classList.toggle("stale", failed);
    if (!banner) { return; }
    if (failed) {
      if (failingSince === null) { failingSince = new Date(); }
      banner.textContent = "The Console cannot be reached since " + failingSince.toLocaleTimeString() +
        ": what this page shows may be out of date (statuses included). Retrying every few seconds.";
      banner.hidden = false;
    } else {
      failingSince = null;
      banner.hidden = true;
    }
  }
  function watch(el) {
    var url = el.getAttribute("data-refresh");
    var every = parseInt(el.getAttribute("data-interval") || "5000", 10);
    function again() { window.setTimeout(tick, every); }
    function tick() {
      if (document.hidden) { again(); return; }
      fetch(url, { credentials: "same-origin", cache: "no-store", headers: { "Accept": "text/html" } })
        .then(function (r) {
          if (r.redirected || r.status === 401) { window.location.assign("/login"); return null; }
          if (!r.ok) { throw new Error("HTTP " + r.status); }
          return r.text();
        })
        .then(function (text) {
          if (text === null) { return; }
          var t = document.createElement("template");
          t.innerHTML = text;
          var fresh = t.content.firstElementChild;
          if (!fresh || fresh.tagName !== el.tagName) { throw new Error("unexpected fragment"); }
          el.replaceChildren.apply(el, Array.prototype.slice.call(fresh.childNodes));
          stale(el, false);
          say("Updated " + new Date().toLocaleTimeString());
          again();
        })
        .catch(function (e) { stale(el, true); say("Refresh failed (" + e.message + "), retrying"); again(); });
    }
    again();
  }
  document.querySelectorAll("[data-refresh]").forEach(watch);
})();
"#;

fn head(nonce: &CspNonce, title: &str, csrf_token: Option<&str>) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="referrer" content="no-referrer";
            @if let Some(token) = csrf_token {
                // For scripts that send X-CSRF-Token.
                meta name="csrf-token" content=(token);
            }
            title { (title) " · Defender Console" }
            style nonce=(nonce.0) { (PreEscaped(CSS)) }
        }
    }
}

/// The navigation entry at `href`, if any.
pub fn nav_item(href: &str) -> Option<&'static NavItem> {
    NAV.iter().find(|item| item.href == href)
}

/// The `<title>` of a page under the navigation entry `item`: `Section › Label` for the entry's
/// own page, `Section › Label › title` for pages below it (a Defender, an image).
pub fn full_title(item: Option<&NavItem>, title: &str) -> String {
    match item {
        Some(item) if item.label == title => format!("{} › {}", item.section, item.label),
        Some(item) => format!("{} › {} › {title}", item.section, item.label),
        None => title.to_owned(),
    }
}

/// A page of the logged-in UI: navigation with `active_href` highlighted, a breadcrumb
/// (`Section › Label`, linked) when `active_href` is a navigation entry, then `body`.
pub fn page(
    nonce: &CspNonce,
    op: &Operator,
    active_href: &str,
    title: &str,
    body: Markup,
) -> Markup {
    let item = nav_item(active_href);
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(nonce, &full_title(item, title), Some(&op.csrf_token)))
            body {
                header.top {
                    span.brand { "Defender Console" }
                    nav {
                        @for item in NAV {
                            a href=(item.href) class=[(item.href == active_href).then_some("active")] {
                                span.section { (item.section) " › " } (item.label)
                            }
                        }
                    }
                    div.who {
                        span { (op.username) }
                        form method="post" action="/logout" {
                            input type="hidden" name=(CSRF_FIELD) value=(op.csrf_token);
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main {
                    p #stale-banner role="alert" hidden {}
                    @if let Some(item) = item {
                        p.crumbs { (item.section) " › " a href=(item.href) { (item.label) } }
                    }
                    (body)
                }
                script nonce=(nonce.0) { (PreEscaped(REFRESH_JS)) }
            }
        }
    }
}

/// A page without navigation (login).
pub fn bare_page(nonce: &CspNonce, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(nonce, title, None))
            body { (body) }
        }
    }
}
