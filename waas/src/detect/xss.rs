//! Cross-site scripting patterns (lowercased decoded text). libinjection (`xss-100`) runs first.

use super::PatternRule;

/// Description of the libinjection rule.
pub(crate) const LIBINJECTION: &str = "cross-site scripting (libinjection HTML5 tokenizer)";

/// `(id, description, pattern)`.
pub(crate) const RULES: &[PatternRule] = &[
    (
        "xss-110",
        "script tag",
        r"<\s*/?\s*script\b|<\s*script[\s>/]",
    ),
    (
        "xss-120",
        "event handler attribute",
        r#"(?:<[^>]*|["'`/\s;]|^)on(?:[a-z]{3,60})\s*=\s*(?:[^\s=]|$)"#,
    ),
    (
        "xss-130",
        "script URL scheme",
        r#"(?:j\s*a\s*v\s*a|v\s*b|l\s*i\s*v\s*e)\s*s\s*c\s*r\s*i\s*p\s*t\s*:|\bdata\s*:\s*(?:text/html|image/svg|application/(?:x-)?(?:javascript|xhtml))|\bmocha\s*:|\bjar\s*:"#,
    ),
    (
        "xss-140",
        "active or dangerous HTML element",
        r"<\s*/?\s*(?:iframe|frame|frameset|object|embed|applet|svg|math|img|image|body|style|link|meta|base|form|input|button|textarea|select|option|keygen|video|audio|source|track|marquee|isindex|details|dialog|template|xss|xml|xmp|plaintext|noscript|noembed|layer|ilayer|bgsound|html|head|title|animate|set|handler|listener|vmlframe|import|param|picture|portal|noscript|x\s*:\s*script|\w+\s*:\s*script)(?:[\s/>#]|$)|<\s*importimplementation|\+adw-|\+ad4-|!!\[\]|!\+\[\]|\(!\[\]\+\[\]\)|\[\]\[\(",
    ),
    (
        "xss-150",
        "CSS expression or script in a style",
        r#"expression\s*\(|url\s*\(\s*['"]?\s*(?:javascript|vbscript|data)\s*:|@import\b|-moz-binding\s*:|\bbehavior\s*:|\bbinding\s*:\s*url"#,
    ),
    (
        "xss-160",
        "JavaScript sink or dialog call",
        r#"\b(?:alert|prompt|confirm|eval|settimeout|setinterval|execscript|msgbox)\s*(?:\(|`|&lpar;)|\b(?:alert|prompt|confirm)\s*\.\s*(?:call|apply|bind)\b|string\s*\.\s*fromcharcode\b|\bdocument\s*\.\s*(?:cookie|write|writeln|domain|location|body|forms|images|createelement)\b|\bwindow\s*\.\s*(?:location|open|name|onerror)\b|\blocation\s*\.\s*(?:href|hash|replace|assign)\b|\.\s*(?:innerhtml|outerhtml)\s*=|\b(?:atob|unescape|decodeuricomponent)\s*\(|\btop\s*\[|\bself\s*\[|\bconstructor\s*\(|\bimport\s*\(\s*['"`]|\bdocument\W{0,40}cookie\b|\(\s*document\s*\)|\b(?:window|document|self|top|parent|globalthis|this|frames)\s*\[\s*['"`]|\bbtoa\s*\(|\breflect\s*\.\s*\w+|\.\s*call\s*`|\bdocument\s*\.\s*queryselector|\.\s*textcontent\s*="#,
    ),
    (
        "xss-170",
        "attribute carrying a script URL or source",
        r#"\b(?:src|href|lowsrc|dynsrc|formaction|action|background|data|xlink:href|poster|codebase|srcdoc|style)\s*=\s*['"`]?\s*(?:javascript|vbscript|data|livescript)\s*:|\bsrcdoc\s*="#,
    ),
    (
        "xss-180",
        "markup breaking out of an attribute or comment",
        r#"['"`]\s*/?\s*>\s*<\s*[a-z!/?]|-->\s*<\s*[a-z!/?]|<!\[cdata\[|<\s*!\s*--|<\s*\?\s*(?:xml|import)|<\s*%|\{\{.*(?:constructor|\$eval|\$on|alert).*\}\}|\]\]>\s*<"#,
    ),
    (
        "xss-191",
        "obfuscated markup: spaced tag letters, 7-bit-stripped brackets, comment closers, DOM access through comments",
        r#"<(?:\s*[a-z]\s){3,}|\xbc\s*/?\s*[a-z]+\s*[\xc2\xd0]?\xbe|\bnew\s+function\s*\(|\bformaction\s*=|url\s*\(\s*['"]?\s*(?:javascript|vbscript)\b|\b(?:window|document|self|top|parent|this)(?:\s|/\*[^*]*\*/)*\[(?:\s|/\*[^*]*\*/)*["'`]|-->|\bdocument(?:\s|/\*[^*]*\*/|[.\[\]"'()])*cookie\b|\b(?:window|document|self|top|parent|this)\s*\[\s*["'`]\w+["'`]\s*\]"#,
    ),
    (
        "xss-190",
        "tag opened with a letter followed by an attribute",
        r#"<\s*[a-z][a-z0-9:-]*\s+[^>]*(?:\b(?:src|href|style|on[a-z]+|formaction|action|xmlns)\s*=)"#,
    ),
];
