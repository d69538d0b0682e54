//! Reading a secret for a CLI command: from the terminal without echo, or from stdin when it
//! is not a terminal (a pipe, a file, a here-string), never from argv.

use std::io::{BufRead, IsTerminal, Write};

/// Longest secret read, in bytes (a line longer than this is refused rather than cut).
pub const MAX_SECRET_BYTES: usize = 4096;

/// Why no secret was read.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error("reading the password: {0}")]
    Io(#[from] std::io::Error),
    #[error("no password given (stdin was empty)")]
    Empty,
    #[error("the two passwords differ")]
    Mismatch,
    #[error("the password is longer than {MAX_SECRET_BYTES} bytes")]
    TooLong,
}

/// Reads a new password: on a terminal, asks twice (`prompt`, then "Again: ") with echo off;
/// otherwise takes the first line of stdin (without its line ending).
pub fn read_new_secret(prompt: &str) -> Result<String, PromptError> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        let first = read_hidden(prompt)?;
        let second = read_hidden("Again: ")?;
        if first != second {
            return Err(PromptError::Mismatch);
        }
        non_empty(first)
    } else {
        non_empty(read_line(&mut stdin.lock())?)
    }
}

fn non_empty(s: String) -> Result<String, PromptError> {
    if s.is_empty() {
        Err(PromptError::Empty)
    } else {
        Ok(s)
    }
}

/// One line, without `\n` or `\r\n`, bounded by [`MAX_SECRET_BYTES`].
fn read_line<R: BufRead>(input: &mut R) -> Result<String, PromptError> {
    let mut buf = Vec::new();
    std::io::Read::take(input, MAX_SECRET_BYTES as u64 + 2).read_until(b'\n', &mut buf)?;
    while matches!(buf.last(), Some(b'\n' | b'\r')) {
        buf.pop();
    }
    if buf.len() > MAX_SECRET_BYTES {
        return Err(PromptError::TooLong);
    }
    String::from_utf8(buf)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e).into())
}

/// Prompts on stderr and reads a line from the terminal on stdin with echo turned off; echo is
/// restored even when reading fails.
fn read_hidden(prompt: &str) -> Result<String, PromptError> {
    let mut err = std::io::stderr();
    write!(err, "{prompt}")?;
    err.flush()?;
    let fd = libc::STDIN_FILENO;
    // SAFETY: termios is plain data; tcgetattr fills it for a valid descriptor.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: fd is stdin, `saved` is a valid termios to write to.
    if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    let mut quiet = saved;
    quiet.c_lflag &= !libc::ECHO;
    quiet.c_lflag |= libc::ECHONL;
    // SAFETY: as above, with a termios derived from the terminal's own.
    if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    let line = read_line(&mut std::io::stdin().lock());
    // SAFETY: restores the settings read above.
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_lose_their_ending_and_are_bounded() {
        assert_eq!(read_line(&mut &b"s3cret\r\nnext\n"[..]).unwrap(), "s3cret");
        assert_eq!(read_line(&mut &b"no newline"[..]).unwrap(), "no newline");
        assert_eq!(read_line(&mut &b"\n"[..]).unwrap(), "");
        let long = vec![b'x'; MAX_SECRET_BYTES + 1];
        assert!(matches!(
            read_line(&mut &long[..]),
            Err(PromptError::TooLong)
        ));
        let exact = vec![b'x'; MAX_SECRET_BYTES];
        assert_eq!(read_line(&mut &exact[..]).unwrap().len(), MAX_SECRET_BYTES);
    }
}
