//! OS command injection patterns (shell view: lowercased, quotes, backslashes and carets removed,
//! `$IFS` turned into a space), for Unix shells and Windows `cmd` / PowerShell.

use super::PatternRule;

/// The shell view of lowercased text: removes the characters shells ignore inside words
/// (`c'a't`, `c\at`, `c^at`, `c""at`), turns `${IFS}` / `$IFS` / `$@` / `$*` into nothing or a
/// space, as a shell would, so that `cat${IFS}/etc/passwd` reads `cat /etc/passwd`.
pub(crate) fn shell_view(lower: &str) -> String {
    let s = lower
        .replace("${ifs}", " ")
        .replace("$ifs", " ")
        .replace("$@", "")
        .replace("$*", "")
        .replace("$()", "")
        .replace("<()", "")
        .replace(">()", "")
        .replace("``", "")
        .replace("$!", "")
        .replace("$?", "")
        .replace("$_", "")
        .replace("$$", "")
        .replace("$-", "");
    s.chars()
        .filter(|c| !matches!(c, '\'' | '"' | '\\' | '^'))
        .map(|c| if c == '\t' { ' ' } else { c })
        .collect()
}

/// `(id, description, pattern)`.
pub(crate) const RULES: &[PatternRule] = &[
    (
        "cmdi-110",
        "command after a shell separator or substitution",
        r"(?:[;|&`\n\r]|\$\(|\$\{|\|\||&&|<\(|>\()\s*(?:[\w./-]*/)?(?:cat|tac|gdb|strace|ltrace|flock|visudo|cpulimit|chroot|unshare|nsenter|irb|jrunscript|jjs|deno|base32|basenc|uuencode|ssh-keygen|sftp|rsync|rclone|aria2c|smbclient|ansible(?:-[a-z]+)?|kubectl|docker|podman|crictl|terraform|gcloud|cmake|c89|c99|clang|vim|nano|pico|bsdtar|cpio|7z|unrar|zstd|shred|dmesg|sysctl|modprobe|insmod|losetup|fdisk|mkfs|nft|tshark|masscan|zmap|hping3|pgrep|fuser|doas|chpasswd|userdel|adduser|setfacl|getfacl|setcap|getcap|rmt(?:-tar)?|cscli|ionice|taskset|tclsh|lua5\.\d|luajit|gawk|mawk|nawk|python3\.\d+|php\d|tmux|setsid|stdbuf|xterm|run-parts|start-stop-daemon|nl|ls|dir|id|whoami|uname|hostname|ifconfig|ip|netstat|ss|ps|pwd|env|printenv|echo|printf|wget|curl|fetch|lwp-download|nc|ncat|netcat|socat|telnet|ssh|scp|ftp|tftp|bash|sh|zsh|ksh|csh|tcsh|dash|ash|busybox|python[23]?|perl|ruby|php|node|lua|java|gcc|cc|rm|rmdir|mv|cp|chmod|chown|chgrp|chattr|touch|mkdir|mkfifo|mknod|ln|kill|killall|pkill|nohup|sleep|ping|nslookup|dig|whois|traceroute|crontab|sudo|su|passwd|useradd|usermod|groupadd|base64|xxd|od|hexdump|strings|grep|egrep|awk|gawk|sed|xargs|tee|dd|tar|zip|unzip|gzip|gunzip|bzip2|openssl|whereis|timeout|exec|eval|uptime|lsof|mount|umount|systemctl|service|shutdown|reboot|iptables|nmap|tcpdump|vi|vim|nano|emacs|htop|df|du|lscpu|lsblk|unset|declare|readlink|realpath|basename|dirname|sh|cmd|powershell|pwsh|ipconfig|systeminfo|tasklist|taskkill|whoami|certutil|bitsadmin|wmic|regsvr32|rundll32|mshta|cscript|wscript|msiexec|schtasks|del|attrib|icacls|cacls|findstr|runas|quser|arp|getmac|nbtstat|netsh|forfiles|makecab|bash\.exe|cmd\.exe|powershell\.exe)(?:\s|$|[;|&<>`)\]}])",
    ),
    (
        "cmdi-111",
        "administration, package or interpreter command after a shell separator",
        r"(?:[;|&`\n\r]|\$\(|\|\||&&)\s*(?:who|w|top|at|date|lastlog|lastlogin|aptitude|apt(?:-get)?|yum|dnf|rpm|dpkg|pip[3x]?|perf|rmt-\w+|ssh-copy-id|ex|bcdboot|bcdedit|vssadmin|wevtutil|reg|sc|net|iwr|iwmi|irm|gwmi|chef(?:-[a-z]+)?|cscli|time|strace|nohup)(?:\s|$|[;|&<>`)(])|;\s*(?:n\s*)?\.(?:shell|system|sh|databases|tables|dump|import|load)\b|[;&|(]\s*\(\s*(?:sh|bash|zsh)\s*\)",
    ),
    (
        "cmdi-112",
        "value that starts with a command wrapper, an admin tool or a non-English Unix command",
        r"^\s*(?:time|nohup|strace|ltrace|nice|ionice|sudo|doas)\s*;?\s*(?:who|w|id|top|ifconfig|ip|ps|ls|cat|whoami|uname|netstat|bsdtar|tar|chef-[a-z]+|ansible(?:-[a-z]+)?|bash|sh|python[23]?|perl|nc|curl|wget)\b|^\s*(?:ansible(?:-[a-z]+)?\s+\S|ansible-[a-z]+\s*$|chef-[a-z]+\b|chef\s+(?:report|exec|generate|install|push|update|export|solo|client)\b|cscli\s+\w|visudo\s*$|shutdown\s*(?:$|[-/])|rc\s+\S+\.sh\b|aa-[a-z]+\b|lastlog(?:in)?\b|rmt(?:-\w+)?\s*$|ssh-copy-id\b|c(?:89|99)\s+-|python\d\.\d+\s+\w)|\bbcdboot\b|^\s*(?:whoami|ifconfig|ipconfig|uname|netstat|nslookup|traceroute|systeminfo|tasklist|printenv|ls(?:\s+[-/~.$*]\S*)*\s*(?:[;&|]|$)|ip\s+a|ping\s+\S*\d|curl\s+\S|wget\s+\S)(?:\s+[\w./:@-]+)*\s*(?:[;&|]|$)",
    ),
    (
        "cmdi-113",
        "shell expansion tricks: arithmetic, tilde stack, history, alias, chained variable assignments, a function definition",
        r"\$\[[^\]]*\]|\$\(\(|^\s*~[+-]?\d*\s*$|^\s*!(?:!|-?\d+)|\balias\s+(?:[-+][a-z]+\s+)*[\w.-]+=|^\s*\(\s*\)\s*\{|\w+\s*\(\s*\)\s*\{[^}]*[|&][^}]*\}\s*;|\b\w+=[^;&|\s]{0,20}(?:;|&&)\s*\w+=[^;&|]{0,20}(?:;|&&)\s*\w+=",
    ),
    (
        "cmdi-173",
        "SMTP / POP3 / IMAP command injected after CRLF",
        r"\r\n(?:[a-z]\d+\s+)?(?:quit|data|rset|noop|starttls|logout|capa|stls)\s*(?:\r|\n|$)|\r\n(?:retr|dele|top|list|uidl)\s+\d+(?:\s+\d+)?\s*(?:\r|\n|$)|\r\n(?:apop|auth)\s+\S+(?:\s+\S+)?\s*$",
    ),
    (
        "cmdi-120",
        "shell command substitution holding a command",
        r"\$\(\s*[a-z./]|`\s*(?:[\w./-]*/)?(?:cat|ls|id|whoami|uname|wget|curl|nc|bash|sh|python[23]?|perl|ruby|php|echo|rm|chmod|ps|env|ping|nslookup|dig|sleep|base64|find|grep|awk|sed|dd|tar|touch|kill|ifconfig|netstat|cmd|powershell)\b[^`]*`|\$\{[a-z_]+[:=#%/][^}]*\}|\$\{\s*[a-z_]*\s*\}|\$(?:shell|path|home|user|ifs|pwd|random)\b|\$[a-z_]\w*\s+-[a-z]+\b|[|;&]\s*\$[a-z_]\w*\s+[a-z]|<<<",
    ),
    (
        "cmdi-130",
        "Unix binary path or sensitive system file",
        r"(?:^|[\s;|&`(=<>])/(?:usr/)?(?:local/)?s?bin/[a-z]|/etc/(?:passwd|shadow|group|issue|sudoers|crontab|hostname|resolv\.conf)\b|/dev/(?:tcp|udp)/|/proc/self/",
    ),
    (
        "cmdi-140",
        "Windows command interpreter or PowerShell",
        r"\bcmd(?:\.exe)?\s*/[ckr]\b|\bpowershell(?:\.exe)?\b|\bpwsh\b|\biex\s*\(|\binvoke-(?:expression|webrequest|restmethod|command|item|wmimethod|mimikatz)\b|\bnew-object\s+(?:system\.)?net\.webclient\b|\bdownloadstring\s*\(|\bstart-process\b|\bget-(?:content|childitem|process|wmiobject|item)\b|\bfor\s+/[fdlr]\b|%comspec%|%systemroot%|%windir%|\bc:\\windows\\|\bc:/windows/|\bwscript\.shell\b",
    ),
    (
        "cmdi-141",
        "Windows batch FOR / IF construct",
        r#"\bfor\s+(?:/[a-z]\s+)?%%?\S{1,20}\s+in\s*\(|\bif\s*(?:/i\s*)?(?:not\s+)?(?:exist\b|defined\b|errorlevel\b|[^=\r\n]{0,30}==|\S+\s+(?:equ|neq|lss|leq|gtr|geq)\b)|\bgoto\s+:?\w+|%errorlevel%"#,
    ),
    (
        "cmdi-150",
        "reverse shell or dropper",
        r"\b(?:bash|sh)\s+-[ic]\b|\bnc(?:at)?\s+(?:-[a-z]*[elvnpcz][a-z]*\s*)+|\bmkfifo\b|\bsocat\s+\S*(?:exec|tcp)|\b(?:wget|curl)\s+(?:-\S+\s+)*(?:https?|ftp)://|\bpython[23]?\s+-c\b|\bperl\s+-e\b|\bruby\s+-e\b|\bphp\s+-r\b|\bnode\s+-e\b|\bchmod\s+[+0-7]|\bexec\s+\d*[<>]",
    ),
    (
        "cmdi-160",
        "brace expansion or globbing evasion of a command",
        r"\{[a-z./$]*,[^}\s]*\}|/[a-z?*\[\]]*[?*\[][a-z?*\[\]]*/[a-z?*\[\]]+|/(?:etc|bin|usr|tmp|dev|proc|var)/\S*[\[?*]|\b(?:c\?t|c\*t|l\?|w\?get)\b|\bs?bin/[a-z]",
    ),
    (
        "cmdi-171",
        "shell function definition (fork bomb), alias definition, or cd into a system path",
        r"[\w.:]+\s*\(\s*\)\s*\{[^}]*\|[^}]*&\s*\}|\balias\s+(?:-p\s+)?[\w-]+=|(?:^|[;&|\n])\s*cd\s+[/~.][^;&|]*[;&|]",
    ),
    (
        "cmdi-172",
        "IMAP / SMTP command injected after a line break",
        r"[\r\n]\s*[a-z]{0,4}\d{1,6}[a-z]?\s+(?:examine|select|copy|list|store|search|fetch|login|append|create|delete|rename|subscribe|uid|status|lsub|capability|authenticate)\s|[\r\n]\s*(?:mail\s+from|rcpt\s+to|helo|ehlo|vrfy|expn)\b",
    ),
    (
        "cmdi-170",
        "common command with options or paths",
        r"(?:^|[\s;|&])(?:cat|ls|nc|ncat|netcat|wget|curl|bash|sh|rm|chmod|find|awk|sed|grep|dd|tar|python[23]?|perl|ruby|php|nmap|telnet|ping|ps|kill|echo|id|uname|whoami|ifconfig|base64|xxd|htop|top|env|socat|ssh|scp|ftp|tftp|crontab|useradd|sudo|su|perf|flock|cpulimit|busybox|ansible(?:-[a-z]+)?|strace|gdb|nohup|timeout|nice|chroot|setsid|taskset|python3\.\d+|node|deno|lua|bsdtar|openssl|docker|kubectl|date|lastlog|lastlogin|perf)\s+(?:-{1,2}[a-z]|/|~|\.{1,2}/|\$|[a-z]+=|\w+\.\w+\s*(?:$|[|;&>]))",
    ),
];

/// Header values (User-Agent, Referer, custom headers) that are a command line: a browser or
/// API client never sends one.
pub(crate) const HEADER_RULES: &[PatternRule] = &[(
    "cmdi-180",
    "header value that is a shell command line",
    r"^\s*(?:[\w./-]*/)?(?:set|time|env|export|alias|history|source|exec|eval|nohup|sudo|su|cat|ls|id|whoami|uname|ifconfig|ip|netstat|ps|kill|echo|printf|wget|curl|nc|ncat|netcat|socat|telnet|ssh|scp|bash|sh|zsh|ksh|dash|busybox|python[23]?(?:\.\d+)?|perl|ruby|php|node|lua|gcc|cc|make|rm|mv|cp|chmod|chown|chattr|touch|mkdir|mkfifo|ln|find|grep|awk|sed|xargs|tee|dd|tar|zip|unzip|base64|xxd|openssl|crontab|at|ping|nslookup|dig|whois|mount|systemctl|service|iptables|nmap|tcpdump|vi|ed|top|htop|free|df|du|lsof|who|w|last|head|tail|more|less|sort|uniq|wc|cut|tr|diff|file|stat|which|type|strings|od|hexdump|cmd|powershell|pwsh|net|ipconfig|systeminfo|tasklist|certutil|bitsadmin|wmic|reg|gdb|strace|ltrace|flock|visudo|cpulimit|chroot|unshare|nsenter|irb|jrunscript|jjs|deno|base32|basenc|uuencode|ssh-keygen|sftp|rsync|rclone|aria2c|smbclient|ansible(?:-[a-z]+)?|kubectl|docker|podman|crictl|helm|terraform|gcloud|cmake|c89|c99|clang|vim|nano|pico|bsdtar|cpio|7z|unrar|zstd|shred|dmesg|sysctl|modprobe|insmod|losetup|fdisk|mkfs|nft|tshark|masscan|zmap|hping3|pgrep|fuser|doas|chpasswd|userdel|adduser|setfacl|getfacl|setcap|getcap|rmt(?:-tar)?|cscli|perf|nice|ionice|taskset|script|expect|tclsh|wish|luajit|gawk|mawk|nawk|pip3?|npm|gem|screen|tmux|setsid|stdbuf|xterm)\s+[-\w./$\x22'~*]",
)];
