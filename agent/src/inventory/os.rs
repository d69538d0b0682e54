//! `/etc/os-release` (os-release(5)): the distribution's `ID`, `VERSION_ID` and `PRETTY_NAME`,
//! falling back to `/usr/lib/os-release`.

use std::path::Path;

use defender_proto::v1::OsRelease;

use super::fsroot::FsRoot;

/// Parses os-release text (shell-like `KEY=value`, values optionally quoted).
pub fn parse(text: &str) -> OsRelease {
    let mut os = OsRelease::default();
    for line in text.lines() {
        let Some((k, v)) = line.trim().split_once('=') else {
            continue;
        };
        let v = v.trim().trim_matches(|c| c == '"' || c == '\'').to_string();
        match k.trim() {
            "ID" => os.id = v,
            "VERSION_ID" => os.version_id = v,
            "PRETTY_NAME" => os.pretty_name = v,
            _ => {}
        }
    }
    os
}

/// The OS of the image at `fs`, `None` when it has no os-release (scratch images).
pub fn read(fs: &FsRoot) -> Option<OsRelease> {
    ["etc/os-release", "usr/lib/os-release"]
        .iter()
        .find_map(|p| fs.read(Path::new(p), 64 * 1024).ok())
        .map(|b| parse(&String::from_utf8_lossy(&b)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_debian_and_alpine() {
        let d = super::parse(
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nID=debian\n",
        );
        assert_eq!((d.id.as_str(), d.version_id.as_str()), ("debian", "12"));
        assert_eq!(d.pretty_name, "Debian GNU/Linux 12 (bookworm)");
        let a = super::parse("NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.18.4\n");
        assert_eq!((a.id.as_str(), a.version_id.as_str()), ("alpine", "3.18.4"));
    }
}
