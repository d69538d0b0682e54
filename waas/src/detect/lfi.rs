//! Path traversal / local file inclusion, remote file inclusion and SSRF to cloud metadata
//! (lowercased decoded text).

use super::PatternRule;

/// Traversal and sensitive files, in parameters, cookies and headers.
pub(crate) const LFI_RULES: &[PatternRule] = &[
    (
        "lfi-110",
        "path traversal sequence",
        r"(?:^|[\\/=\s:;'\x22])\.{2,}[\\/]|\.\.;|[\\/]\.{2,}(?:[\\/]|$|;)|\.{2,};[\\/]|\.\.(?:0x2f|0x5c|%2f|%5c)|(?:0x2e|%2e){2}|0x5c0x2e|\.\.%c0%af|%c0%ae",
    ),
    (
        "lfi-120",
        "sensitive operating-system file",
        r"(?:^|[\\/])(?:etc[\\/](?:passwd|shadow|group|gshadow|hostname|issue|motd|sudoers|crontab|fstab|mtab|profile|bashrc|environment|resolv\.conf|ssh[\\/]|apache2?[\\/]|httpd[\\/]|nginx[\\/]|mysql[\\/]|php[\\/]|security[\\/]|ssl[\\/]|pam\.d|init\.d|cron)|proc[\\/](?:self|\d+|[a-z]+)(?:[\\/]|$)|sys[\\/](?:class|kernel|devices|block|bus|firmware|module|power|fs)\b|tmp[\\/]|var[\\/](?:log|run|lib|mail|www|spool)[\\/]|root[\\/]|home[\\/][^\\/]+[\\/]\.|boot\.ini|win\.ini|system\.ini|windows[\\/](?:system32|win\.ini|repair)|winnt[\\/]|inetpub[\\/]|system32[\\/])|\bc:[\\/]+(?:windows|winnt|boot\.ini|inetpub|program|documents and settings|users[\\/]+[^\\/]+[\\/]+(?:appdata|ntuser)|[^\\/\s]+\.(?:ini|sys|log|bat|cmd|exe|dll|config|txt)\b)|\.(?:htaccess|htpasswd|bash_history|bashrc|profile|ssh[\\/]|aws[\\/]|git[\\/]|svn[\\/]|env\b|npmrc|netrc|pgpass|my\.cnf|docker[\\/]|kube[\\/])|\b(?:id_rsa|id_dsa|id_ecdsa|id_ed25519|authorized_keys|known_hosts|web\.config|wp-config\.php|config\.php|localsettings\.php|applicationhost\.config)\b|%00|\x00|\.(?:sql|bak|old|backup|dump)(?:\.(?:zip|gz|tgz|tar|7z|rar|bz2|xz))?$",
    ),
];

/// Restricted files and traversal in the URL path (the path of a normal app has neither).
pub(crate) const PATH_RULES: &[PatternRule] = &[
    (
        "lfi-130",
        "traversal in the URL path",
        r"[\\/]\.{2,}(?:[\\/]|$|;)|\.{2,}[\\/]|%2e%2e|%252e|0x2e|%c0%ae|\.\.%00|%00",
    ),
    (
        "lfi-140",
        "restricted file or directory requested",
        r"(?:^|/)(?:proc|sys)/[a-z]|/\.[a-z0-9_][a-z0-9_.-]*(?:/|$)|(?:^|/)(?:\.(?:git|svn|hg|bzr|env|htaccess|htpasswd|aws|ssh|docker|kube|npmrc|bash_history|ds_store|idea|vscode|cursor|kiro|claude|windsurf|config|gnupg|composer|yarnrc|pypirc|boto|terraform|vagrant)\b|(?:web|app|wp-config|config|settings|database|secrets?|credentials?)\.(?:config|bak|old|orig|save|swp|sql|php~|inc)\b|[^/]*\.(?:bak|old|orig|save|swp|swo|tmp|sql|sqlite|db|mdb|log|ini|conf|cfg|pem|key|crt|p12|pfx|jks|keystore)(?:\.(?:zip|gz|tgz|tar|7z|rar|bz2|xz))?$|@id/|__x00__|(?:wp-content|wp-admin)/.*\.(?:log|sql|bak|zip)$|server-status|phpinfo\.php|etc/passwd|win\.ini)",
    ),
];

/// Remote file inclusion.
pub(crate) const RFI_RULES: &[PatternRule] = &[
    (
        "rfi-110",
        "URL whose host is an IP address",
        r"^\s*(?:https?|ftps?)://(?:\d{1,3}\.){3}\d{1,3}|^\s*(?:https?|ftps?)://\[[0-9a-f:]+\]",
    ),
    (
        "rfi-120",
        "inclusion wrapper scheme",
        r"^\s*(?:url:)?(?:file|php|expect|phar|zip|zlib|compress\.\w+|glob|data|gopher|dict|jar|netdoc|ldap|ogg|ssh2\.\w+|rar):",
    ),
    (
        "rfi-130",
        "URL ending in ? or a null byte (include with a suffix cut off)",
        r"^\s*(?:https?|ftps?)://[^\s]+(?:\?+|%00|\x00)$",
    ),
    (
        "rfi-140",
        "URL in a parameter commonly used for inclusion",
        r"(?:mosconfig_absolute_path|_conf\[|includedir|include_path|inc_dir|root_path|base_dir|abspath|gallery_basedir|phpbb_root_path|path_to_root)[^=]*=\s*(?:https?|ftps?)://",
    ),
];

/// Requests towards cloud metadata endpoints (EC2 IMDS, the ECS task credentials endpoint, GCP,
/// Azure, Alibaba), including numeric encodings of 169.254.169.254.
pub(crate) const SSRF_RULES: &[PatternRule] = &[(
    "ssrf-110",
    "cloud metadata or ECS credentials endpoint",
    r"169\.254\.169\.254|169\.254\.170\.2\b|\bfd00:ec2::254\b|\b2852039166\b|\b0xa9fea9fe\b|\b0251\.0376\.0251\.0376\b|\bmetadata\.google\.internal\b|\bmetadata\.azure\.com\b|100\.100\.100\.200|\binstance-data\b|::ffff:a9fe:a9fe|aws_container_credentials_relative_uri|/latest/meta-data\b|/latest/api/token\b|/computemetadata/v1\b",
)];
