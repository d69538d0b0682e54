//! Shells, and the programs whose children are expected to be shells (so a shell under them is
//! not "started by a non-shell application").

/// Executable basenames that are shells.
pub const SHELLS: &[&str] = &[
    "sh", "bash", "rbash", "dash", "ash", "zsh", "ksh", "mksh", "pdksh", "yash", "csh", "tcsh",
    "fish",
];

/// Parents that start shells as a matter of course: shells' relatives, init systems and
/// launchers (the Defender among them), privilege and scheduling wrappers, cron, sshd.
/// `busybox` is here because its applets (sh, crond, xargs…) share one executable.
pub const SHELL_LAUNCHERS: &[&str] = &[
    "busybox",
    "defender",
    "tini",
    "tini-static",
    "dumb-init",
    "catatonit",
    "docker-init",
    "init",
    "systemd",
    "s6-supervise",
    "runsv",
    "runsvdir",
    "supervise",
    "su-exec",
    "gosu",
    "sudo",
    "su",
    "runuser",
    "doas",
    "env",
    "nohup",
    "timeout",
    "setsid",
    "nice",
    "ionice",
    "chroot",
    "flock",
    "stdbuf",
    "time",
    "xargs",
    "make",
    "script",
    "watch",
    "tmux",
    "screen",
    "login",
    "sshd",
    "sshd-session",
    "cron",
    "crond",
];

/// Whether `name` (a basename) is a shell.
pub(crate) fn is_shell_name(name: &[u8]) -> bool {
    SHELLS.iter().any(|s| s.as_bytes() == name)
}

/// Whether a process with executable basename `exe` and `argv[0]` basename `argv0` is a shell;
/// `busybox` counts when invoked as a shell applet.
pub(crate) fn is_shell(exe: &[u8], argv0: &[u8]) -> bool {
    if exe.is_empty() {
        return is_shell_name(argv0);
    }
    is_shell_name(exe) || (exe == b"busybox" && is_shell_name(argv0))
}

/// Whether a parent with executable basename `exe` may start shells without notice.
pub(crate) fn is_shell_like_parent(exe: &[u8]) -> bool {
    is_shell_name(exe) || SHELL_LAUNCHERS.iter().any(|s| s.as_bytes() == exe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shells_and_busybox() {
        assert!(is_shell(b"bash", b"bash"));
        assert!(is_shell(b"dash", b"sh"));
        assert!(is_shell(b"busybox", b"sh"));
        assert!(!is_shell(b"busybox", b"wget"));
        assert!(!is_shell(b"python3", b"sh"));
        assert!(is_shell(b"", b"sh"));
        assert!(!is_shell(b"bash5", b"bash5"));
    }

    #[test]
    fn parents() {
        assert!(is_shell_like_parent(b"bash"));
        assert!(is_shell_like_parent(b"tini"));
        assert!(is_shell_like_parent(b"defender"));
        assert!(!is_shell_like_parent(b"python3.11"));
        assert!(!is_shell_like_parent(b"node"));
        assert!(!is_shell_like_parent(b"java"));
    }
}
