//! The console sink: each finished run drawn as a waterfall
//! ([`crate::encode::waterfall`]) and written, from the exporter's thread,
//! to standard output or appended to a file (`console_output`).
//!
//! Output from several processes (a forking server's workers sharing a
//! terminal, a pipe or a file) never interleaves inside a line: a run's
//! drawing goes out in one `write(2)` when it is at most [`PIPE_BUF`] bytes
//! (which POSIX makes atomic on a pipe; a file is opened with `O_APPEND`, so
//! each write lands whole at its end), else one `write(2)` per line.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;

use crate::encode::waterfall::{self, Style};
use crate::model::lifecycle::Run;

/// Writes up to this many bytes in one `write(2)` (Linux's pipe atomicity
/// bound).
pub const PIPE_BUF: usize = 4096;

/// Where the console exporter writes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ConsoleOutput {
    /// Standard output (file descriptor 1), colored when it is a terminal.
    #[default]
    Stdout,
    /// A file, created if missing, appended to.
    Path(String),
}

/// Writes all of `bytes` to `fd` (a short write goes on where it stopped;
/// an interrupted one is retried).
fn write_fd(fd: i32, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is a live slice; write(2) reads at most its length.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        bytes = &bytes[n as usize..];
    }
    Ok(())
}

/// Writes one drawing in whole lines: at once when it fits [`PIPE_BUF`],
/// else line by line.
fn write_drawing(fd: i32, text: &str) -> std::io::Result<()> {
    if text.len() <= PIPE_BUF {
        return write_fd(fd, text.as_bytes());
    }
    for line in text.split_inclusive('\n') {
        write_fd(fd, line.as_bytes())?;
    }
    Ok(())
}

/// Draws the runs not drawn yet and writes them to `out`, marking them
/// drawn (a run put back after a failed OTLP delivery is not drawn again).
/// Returns how many were written. Touches no foreign runtime.
pub fn print_runs(runs: &mut [Run], out: &ConsoleOutput) -> Result<usize, String> {
    if runs.iter().all(|r| r.printed) {
        return Ok(0);
    }
    let file;
    let (fd, color) = match out {
        ConsoleOutput::Stdout => {
            // SAFETY: isatty only inspects the descriptor.
            let tty = unsafe { libc::isatty(1) } == 1;
            (1, tty)
        }
        ConsoleOutput::Path(path) => {
            file = OpenOptions::new()
                .append(true)
                .create(true)
                .open(path)
                .map_err(|e| format!("console_output {path}: {e}"))?;
            (file.as_raw_fd(), false)
        }
    };
    let style = Style {
        color,
        ..Style::default()
    };
    let mut written = 0;
    for run in runs.iter_mut().filter(|r| !r.printed) {
        let text = waterfall::draw(run, style);
        write_drawing(fd, &text).map_err(|e| format!("console output: {e}"))?;
        run.printed = true;
        written += 1;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::lifecycle::attributes::AttrValue;
    use crate::input::lifecycle::AttrKey;
    use crate::model::lifecycle::{RunEnd, Span, SpanStatus, TASK_SPAN_NAME};
    use crate::support::clock::Stamp;

    fn run(n: usize) -> Run {
        let at = |ms: u64| Stamp {
            wall_ns: 0,
            mono_ns: ms * 1_000_000,
        };
        let root = Span {
            span_id: [1; 8],
            parent_span_id: None,
            name: TASK_SPAN_NAME,
            start: at(0),
            end: Some(at(10)),
            status: SpanStatus::OK,
            attributes: vec![(AttrKey::TaskName, AttrValue::Str("t".into()))],
            events: Vec::new(),
            links: Vec::new(),
        };
        let mut spans = vec![root.clone()];
        for _ in 0..n {
            spans.push(Span {
                parent_span_id: Some([1; 8]),
                ..root.clone()
            });
        }
        Run {
            task_id: None,
            trace_id: [2; 16],
            end: RunEnd::Completed,
            spans,
            sampled: true,
            printed: false,
        }
    }

    #[test]
    fn appends_each_run_once_in_whole_lines() {
        let dir = std::env::temp_dir().join(format!("tasker-console-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let out = ConsoleOutput::Path(dir.to_string_lossy().into_owned());
        // One small run (one write) and one over PIPE_BUF (line by line).
        let mut runs = vec![run(1), run(100)];
        assert_eq!(print_runs(&mut runs, &out), Ok(2));
        assert_eq!(print_runs(&mut runs, &out), Ok(0), "not drawn twice");
        let text = std::fs::read_to_string(&dir).unwrap();
        let expected: String = runs
            .iter()
            .map(|r| waterfall::draw(r, Style::default()))
            .collect();
        assert!(expected.len() > PIPE_BUF);
        assert_eq!(text, expected);
        let _ = std::fs::remove_file(&dir);
        let bad = ConsoleOutput::Path("/nonexistent-dir/x.log".into());
        let mut runs = vec![run(0)];
        assert!(print_runs(&mut runs, &bad)
            .unwrap_err()
            .starts_with("console_output"));
        assert!(!runs[0].printed);
    }
}
