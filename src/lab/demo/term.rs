//! Terminal helpers for the live view: plain ANSI redraws, and sending stderr (the worker's
//! log lines) to a file while the view owns the screen.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Clear the screen and move home (first frame).
pub const CLEAR: &str = "\x1b[2J\x1b[H";
/// Move home without clearing (later frames overwrite in place, so nothing flickers).
pub const HOME: &str = "\x1b[H";
/// Clear to the end of the line.
pub const EOL: &str = "\x1b[K";
/// Clear from the cursor to the end of the screen.
pub const EOS: &str = "\x1b[J";

/// The terminal's (columns, rows) on stdout, when it is a terminal that says.
pub fn size() -> Option<(usize, usize)> {
    // SAFETY: TIOCGWINSZ fills a winsize struct we own; failure is reported by the return value.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) == 0 && ws.ws_col > 0 && ws.ws_row > 0 {
            Some((ws.ws_col as usize, ws.ws_row as usize))
        } else {
            None
        }
    }
}

/// Fits `lines` to the terminal (no wrapping, no scrolling, so redrawing in place works) and
/// joins them into one frame that clears what an earlier, longer frame left behind.
pub fn frame(lines: &[String], first: bool) -> String {
    let (cols, rows) = size().unwrap_or((200, 100));
    let mut out = String::from(if first { CLEAR } else { HOME });
    for line in lines.iter().take(rows.saturating_sub(1).max(1)) {
        out.extend(line.chars().take(cols.saturating_sub(1).max(1)));
        out += EOL;
        out += "\n";
    }
    out += EOS;
    out
}

/// Writes one frame to stdout in a single write.
pub fn draw(frame: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(frame.as_bytes());
    let _ = out.flush();
}

/// While alive, file descriptor 2 points at a log file; dropping it restores the terminal.
pub struct StderrToFile {
    saved: i32,
    path: PathBuf,
    _file: std::fs::File,
}

impl StderrToFile {
    /// Redirects stderr to `trace-summarizer-demo-<pid>.log` in the temp directory. `None`
    /// when that fails (the log lines then stay on the terminal).
    pub fn start() -> Option<Self> {
        let path =
            std::env::temp_dir().join(format!("trace-summarizer-demo-{}.log", std::process::id()));
        let file = std::fs::File::create(&path).ok()?;
        let _ = std::io::stderr().flush();
        // SAFETY: dup and dup2 on valid descriptors (2 is stderr, `file` is open for the whole
        // life of the guard); failures are checked and leave stderr as it was.
        unsafe {
            let saved = libc::dup(2);
            if saved < 0 {
                return None;
            }
            if libc::dup2(file.as_raw_fd(), 2) < 0 {
                libc::close(saved);
                return None;
            }
            Some(StderrToFile {
                saved,
                path,
                _file: file,
            })
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for StderrToFile {
    fn drop(&mut self) {
        let _ = std::io::stderr().flush();
        // SAFETY: `saved` is the descriptor dup'ed in `start`, still open; it is closed once.
        unsafe {
            libc::dup2(self.saved, 2);
            libc::close(self.saved);
        }
    }
}
