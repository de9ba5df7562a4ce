//! A run drawn as text: the one waterfall drawing, used by the console
//! exporter and by `bin/demo` (through `Native.lifecycle_waterfall`).
//!
//! ```text
//! process_order (task 101)  trace 4bf92f35…4736  completed OK  42.3 ms
//!                                         │0                      42.3 ms
//! ✓ process_order (task 101)      42.3 ms │███████████████████████████████
//! ✓   validate_cart #1             4.1 ms │▍
//! ✗   charge_payment #1           12.0 ms │   ██▌
//!       charge_payment: Net::OpenTimeout after 5s
//! ```
//!
//! A header line (task name, task id, trace id, how the run ended, the root's
//! status, duration), an axis, then one row per span: its status mark, name
//! (attempts indented under the root), duration, and a bar placed and scaled
//! on the run's time axis in eighths of a cell. Under a failed span, its
//! error message. Every line ends with `\n`; no line holds a control
//! character (a message's own line breaks and control characters become
//! spaces), so each line can be written whole.

use std::fmt::Write as _;

use crate::input::lifecycle::attributes::AttrValue;
use crate::model::lifecycle::{Run, Span, StatusCode};

/// How wide the drawing is, and whether it is colored (ANSI, for a terminal).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Style {
    /// Characters per line (at least 60).
    pub width: usize,
    pub color: bool,
}

impl Default for Style {
    fn default() -> Self {
        Style {
            width: 100,
            color: false,
        }
    }
}

const NAME_WIDTH: usize = 30;
const DURATION_WIDTH: usize = 10;
const EIGHTHS: [char; 9] = [' ', '▏', '▎', '▍', '▌', '▋', '▊', '▉', '█'];
/// The longest error message shown under a span, in characters.
const MAX_MESSAGE: usize = 500;

fn mark(code: StatusCode) -> char {
    match code {
        StatusCode::Ok => '✓',
        StatusCode::Error => '✗',
        StatusCode::Unset => '·',
    }
}

fn color_code(code: StatusCode) -> u8 {
    match code {
        StatusCode::Ok => 32,
        StatusCode::Error => 31,
        StatusCode::Unset => 90,
    }
}

fn painted(text: &str, code: StatusCode, style: Style) -> String {
    if style.color && !text.is_empty() {
        format!("\x1b[{}m{text}\x1b[0m", color_code(code))
    } else {
        text.to_string()
    }
}

/// One line of text: control characters (line breaks included), Unicode's
/// line and paragraph separators and its bidirectional controls (which
/// would reorder what a terminal shows) as spaces.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() || breaks_or_reorders(c) {
                ' '
            } else {
                c
            }
        })
        .collect()
}

/// U+2028 and U+2029 (line and paragraph separators), and the bidirectional
/// marks, embeddings, overrides and isolates.
fn breaks_or_reorders(c: char) -> bool {
    matches!(
        c,
        '\u{2028}' | '\u{2029}' | '\u{200E}' | '\u{200F}' | '\u{061C}'
    ) || ('\u{202A}'..='\u{202E}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

fn value_text(v: &AttrValue) -> Option<String> {
    match v {
        AttrValue::Int(n) => Some(n.to_string()),
        AttrValue::Float(x) => Some(x.to_string()),
        AttrValue::Bool(b) => Some(b.to_string()),
        AttrValue::Str(t) => Some(one_line(t.as_str())),
        _ => None,
    }
}

fn attr_text(span: &Span, key: &str) -> Option<String> {
    span.attr(key).and_then(value_text)
}

/// Milliseconds with one decimal.
fn ms(ns: u64) -> String {
    format!("{:.1} ms", ns as f64 / 1e6)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The first `n` characters of `s`, padded to `n` with spaces.
fn fit(s: &str, n: usize) -> String {
    let mut out: String = s.chars().take(n).collect();
    let len = out.chars().count();
    out.extend(std::iter::repeat_n(' ', n - len));
    out
}

/// A bar from `from` to `to` (fractions of the run) in `width` cells, in
/// eighths of a cell, at least one eighth; trailing spaces trimmed.
fn bar(from: f64, to: f64, width: usize) -> String {
    let w = width as f64;
    let start = ((from * w).floor() as usize).min(width.saturating_sub(1));
    let stop = ((to * w * 8.0).round() as usize).max(start * 8 + 1);
    let (full, part) = ((stop - start * 8) / 8, (stop - start * 8) % 8);
    let mut cells: String = " ".repeat(start);
    cells.extend(std::iter::repeat_n('█', full));
    if part > 0 {
        cells.push(EIGHTHS[part]);
    }
    let cells: String = cells.chars().take(width).collect();
    cells.trim_end().to_string()
}

/// The span's label: the root's task name and id, an attempt's step name
/// and attempt number, indented.
fn label(run: &Run, span: &Span) -> String {
    if span.parent_span_id.is_some() {
        let step = attr_text(span, "step_name").unwrap_or_else(|| "step".to_string());
        match attr_text(span, "attempt_number") {
            Some(n) => format!("  {step} #{n}"),
            None => format!("  {step}"),
        }
    } else {
        task_label(run, span)
    }
}

fn task_label(run: &Run, root: &Span) -> String {
    let name = attr_text(root, "task_name").unwrap_or_else(|| root.name.to_string());
    match &run.task_id {
        Some(id) => format!("{name} (task {})", one_line(&id.to_string())),
        None => name,
    }
}

/// Draws `run` (an open span is drawn to the run's latest time and shown
/// as `open`).
pub fn draw(run: &Run, style: Style) -> String {
    let Some(root) = run.root() else {
        return String::new();
    };
    let width = style.width.max(60);
    let t0 = run.spans.iter().map(|s| s.start.mono_ns).min().unwrap_or(0);
    let t1 = run
        .spans
        .iter()
        .map(|s| s.end.unwrap_or(s.start).mono_ns)
        .max()
        .unwrap_or(t0);
    let total = t1.saturating_sub(t0).max(1);
    let root_ns = root
        .end
        .map(|e| e.mono_ns.saturating_sub(root.start.mono_ns));
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}  trace {}  {} {}  {}",
        task_label(run, root),
        hex(&run.trace_id),
        run.end.as_str(),
        root.status.code.as_str().to_ascii_uppercase(),
        root_ns.map_or_else(|| "open".to_string(), ms),
    );
    let bar_width = width - NAME_WIDTH - 2 - DURATION_WIDTH - 2;
    let total_text = ms(total);
    let axis_pad = bar_width.saturating_sub(total_text.chars().count() + 1);
    let _ = writeln!(
        out,
        "{}│0{}{}",
        " ".repeat(NAME_WIDTH + 2 + DURATION_WIDTH + 1),
        " ".repeat(axis_pad),
        total_text
    );
    for span in &run.spans {
        let code = span.status.code;
        let start = span.start.mono_ns.saturating_sub(t0);
        let end = span.end.map_or(t1, |e| e.mono_ns).saturating_sub(t0);
        let duration = span.end.map_or_else(
            || "open".to_string(),
            |e| ms(e.mono_ns.saturating_sub(span.start.mono_ns)),
        );
        let cells = bar(
            start as f64 / total as f64,
            end as f64 / total as f64,
            bar_width,
        );
        let _ = writeln!(
            out,
            "{} {}{:>dw$} │{}",
            painted(&mark(code).to_string(), code, style),
            fit(&label(run, span), NAME_WIDTH),
            duration,
            painted(&cells, code, style),
            dw = DURATION_WIDTH
        );
        if code == StatusCode::Error {
            if let Some(message) = &span.status.message {
                let indent = if span.parent_span_id.is_some() { 6 } else { 4 };
                let text: String = one_line(message.as_str())
                    .chars()
                    .take(MAX_MESSAGE)
                    .collect();
                let _ = writeln!(out, "{}{}", " ".repeat(indent), text);
            }
        }
    }
    out
}

/// The legend of the marks, one line.
pub fn legend() -> String {
    format!(
        "{}│✓ OK   ✗ ERROR   · UNSET (open, or ended with its run)\n",
        " ".repeat(NAME_WIDTH + 2 + DURATION_WIDTH + 1)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_holds_no_separator_nor_bidirectional_control() {
        let text = "declined\u{2028}FAKE\u{2029}x\u{202E}evil\u{2066}y\nz\u{85}w";
        assert_eq!(one_line(text), "declined FAKE x evil y z w");
    }
    use crate::input::lifecycle::attributes::{AttrKey, Text};
    use crate::input::lifecycle::event::Id;
    use crate::model::lifecycle::{RunEnd, SpanStatus, STEP_SPAN_NAME, TASK_SPAN_NAME};
    use crate::support::clock::Stamp;

    fn at(ms: u64) -> Stamp {
        Stamp {
            wall_ns: ms as i64 * 1_000_000,
            mono_ns: ms * 1_000_000,
        }
    }

    fn span(parent: bool, from: u64, to: Option<u64>, status: SpanStatus) -> Span {
        let attributes = if parent {
            vec![
                (AttrKey::StepName, AttrValue::Str("charge\npayment".into())),
                (AttrKey::AttemptNumber, AttrValue::Int(2)),
            ]
        } else {
            vec![(AttrKey::TaskName, AttrValue::Str("process_order".into()))]
        };
        Span {
            span_id: [1; 8],
            parent_span_id: parent.then_some([2; 8]),
            name: if parent {
                STEP_SPAN_NAME
            } else {
                TASK_SPAN_NAME
            },
            start: at(from),
            end: to.map(at),
            status,
            attributes,
            events: Vec::new(),
            links: Vec::new(),
        }
    }

    #[test]
    fn header_rows_bars_and_the_error_message() {
        let run = Run {
            task_id: Some(Id::Int(7)),
            trace_id: [0xab; 16],
            end: RunEnd::Failed,
            spans: vec![
                span(false, 0, Some(80), SpanStatus::error(Some("boom".into()))),
                span(
                    true,
                    40,
                    Some(80),
                    SpanStatus::error(Some(Text::from("bad\ncard"))),
                ),
            ],
            sampled: true,
            printed: false,
        };
        let text = draw(&run, Style::default());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            format!(
                "process_order (task 7)  trace {}  failed ERROR  80.0 ms",
                "ab".repeat(16)
            )
        );
        assert!(lines[1].trim_start().starts_with("│0") && lines[1].ends_with(" 80.0 ms"));
        assert!(lines[2].starts_with("✗ process_order (task 7)"));
        assert_eq!(lines[3], "    boom");
        assert!(
            lines[4].starts_with("✗   charge payment #2"),
            "{}",
            lines[4]
        );
        assert_eq!(lines[5], "      bad card");
        // The root's bar fills the axis, the attempt's starts halfway.
        let bar_of = |l: &str| l.split('│').nth(1).unwrap().to_string();
        let bar_width = 100 - NAME_WIDTH - 2 - DURATION_WIDTH - 2;
        assert_eq!(bar_of(lines[2]).chars().count(), bar_width);
        assert_eq!(
            bar_of(lines[4]).chars().take_while(|&c| c == ' ').count(),
            bar_width / 2
        );
        assert!(text.lines().all(|l| l.chars().count() <= 100 + 1));
        assert!(text.ends_with('\n'));
        assert!(!text.contains('\x1b'));
        assert!(draw(
            &run,
            Style {
                color: true,
                ..Style::default()
            }
        )
        .contains("\x1b[31m"));
    }

    #[test]
    fn an_open_span_is_drawn_to_the_latest_time() {
        let run = Run {
            task_id: None,
            trace_id: [1; 16],
            end: RunEnd::Open,
            spans: vec![
                span(false, 0, None, SpanStatus::UNSET),
                span(true, 10, Some(30), SpanStatus::OK),
            ],
            sampled: true,
            printed: false,
        };
        let text = draw(&run, Style::default());
        assert!(text.lines().next().unwrap().ends_with("open UNSET  open"));
        assert!(text.contains("· process_order"));
        assert!(text.contains("open │"));
    }

    #[test]
    fn bars_are_at_least_an_eighth() {
        assert_eq!(bar(0.0, 0.0, 10), "▏");
        assert_eq!(bar(0.5, 1.0, 10), "     █████");
        assert_eq!(bar(0.0, 0.0625, 10), "▋");
    }
}
