//! Output: JSON documents, column fitting and UTC times shared by the commands.

use std::io::IsTerminal as _;

use saga_core::ExecutionStatus;
use saga_core::store::{ExecutionRecord, ExecutionSummary};
use serde::Serialize;

/// How text output looks: coloured statuses or plain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Style {
    /// Whether to write colour (SGR) sequences.
    pub(crate) colour: bool,
}

impl Style {
    /// Colour when stdout is a terminal and `NO_COLOR` is unset or empty
    /// (<https://no-color.org>), and `TERM` is not `dumb`.
    pub(crate) fn for_stdout() -> Style {
        let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
        let dumb = std::env::var_os("TERM").is_some_and(|t| t == "dumb");
        Style {
            colour: std::io::stdout().is_terminal() && !set("NO_COLOR") && !dumb,
        }
    }

    /// The SGR style of a status: red for stuck, yellow for compensating
    /// and compensated, green for completed, cyan for running, dim for
    /// cancelled and abandoned.
    pub(crate) fn status(status: ExecutionStatus) -> Option<&'static str> {
        Some(match status {
            ExecutionStatus::Stuck => "1;31",
            ExecutionStatus::Compensating | ExecutionStatus::Compensated => "33",
            ExecutionStatus::Completed => "32",
            ExecutionStatus::Running => "36",
            _ => "2",
        })
    }

    /// `text` in the style of `status`, when colouring.
    pub(crate) fn paint(self, status: ExecutionStatus, text: &str) -> String {
        match Style::status(status).filter(|_| self.colour) {
            Some(sgr) => format!("\x1b[{sgr}m{text}\x1b[0m"),
            None => text.to_owned(),
        }
    }
}

/// Now, in milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// An execution, as `--json` prints it.
#[derive(Serialize)]
pub(crate) struct ExecutionJson<'a> {
    id: &'a str,
    saga: &'a str,
    fingerprint: &'a str,
    status: &'a str,
    created_at_ms: i64,
    updated_at_ms: i64,
    owner: Option<&'a str>,
    lease_expires_at_ms: Option<i64>,
    cancel_requested: bool,
    resume_requested: bool,
}

pub(crate) fn execution_json<'a>(
    record: &'a ExecutionRecord,
    resume_requested: bool,
) -> ExecutionJson<'a> {
    ExecutionJson {
        id: record.id.as_str(),
        saga: &record.saga,
        fingerprint: &record.fingerprint,
        status: record.status.label(),
        created_at_ms: record.created_at_ms,
        updated_at_ms: record.updated_at_ms,
        owner: record.owner.as_deref(),
        lease_expires_at_ms: record.lease_expires_at_ms,
        cancel_requested: record.cancel_requested,
        resume_requested,
    }
}

/// The JSON of a listed execution (a summary: no context is read).
pub(crate) fn summary_json(summary: &ExecutionSummary) -> ExecutionJson<'_> {
    ExecutionJson {
        id: summary.id.as_str(),
        saga: &summary.saga,
        fingerprint: &summary.fingerprint,
        status: summary.status.label(),
        created_at_ms: summary.created_at_ms,
        updated_at_ms: summary.updated_at_ms,
        owner: summary.owner.as_deref(),
        lease_expires_at_ms: summary.lease_expires_at_ms,
        cancel_requested: summary.cancel_requested,
        resume_requested: false,
    }
}

pub(crate) fn to_json(value: &impl Serialize) -> String {
    // Serializing strings, numbers and booleans cannot fail.
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}

/// Cuts `text` to `width` characters, ending in `…` when cut.
pub(crate) fn fit(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

pub(crate) fn seconds(ms: Option<i64>) -> String {
    ms.map_or_else(
        || "-".to_owned(),
        |ms| format!("{:.3}s", ms as f64 / 1000.0),
    )
}

/// `ms` since the Unix epoch as `YYYY-MM-DD HH:MM` (UTC), with seconds and
/// milliseconds when `precise`.
pub(crate) fn utc(ms: i64, precise: bool) -> String {
    let (days, rest) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s, milli) = (
        rest / 3_600_000,
        rest / 60_000 % 60,
        rest / 1000 % 60,
        rest % 1000,
    );
    if precise {
        format!("{year:04}-{month:02}-{day:02} {h:02}:{m:02}:{s:02}.{milli:03} UTC")
    } else {
        format!("{year:04}-{month:02}-{day:02} {h:02}:{m:02}")
    }
}

/// `YYYY-MM-DD`, optionally followed (after a space or `T`) by `HH:MM` or
/// `HH:MM:SS`, read as UTC: milliseconds since the Unix epoch.
pub(crate) fn parse_utc(text: &str) -> Option<i64> {
    let (date, time) = match text.split_once([' ', 'T']) {
        Some((date, time)) => (date, Some(time.trim_end_matches('Z'))),
        None => (text, None),
    };
    let mut ymd = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (ymd.next()??, ymd.next()??, ymd.next()??);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let seconds = match time {
        None => 0,
        Some(time) => {
            let parts: Vec<i64> = time
                .split(':')
                .map(|p| p.parse().ok())
                .collect::<Option<_>>()?;
            match parts[..] {
                [h, m] if h < 24 && m < 60 => h * 3600 + m * 60,
                [h, m, s] if h < 24 && m < 60 && s < 60 => h * 3600 + m * 60 + s,
                _ => return None,
            }
        }
    };
    // Howard Hinnant's days-from-civil algorithm.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + seconds) * 1000)
}

/// The widest a column is padded to: a longer cell (a 5 MB execution id)
/// is written whole, but does not pad every other row to its width.
const MAX_COLUMN: usize = 80;

/// A text table: columns as wide as their widest cell up to
/// [`MAX_COLUMN`] (user text escaped beforehand, so its width is what a
/// terminal shows), two spaces apart, the last column unpadded. A cell may carry a style, applied after the
/// padding so the columns still line up.
pub(crate) struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<(String, Option<&'static str>)>>,
}

impl Table {
    pub(crate) fn new(header: Vec<&'static str>) -> Table {
        Table {
            header,
            rows: Vec::new(),
        }
    }

    /// Adds a row of cells, each with an optional SGR style (`"1;31"`).
    pub(crate) fn row(&mut self, cells: Vec<(String, Option<&'static str>)>) {
        self.rows.push(cells);
    }

    /// The table, header first; styles only when `colour`.
    pub(crate) fn render(&self, colour: bool) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, (cell, _)) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count().min(MAX_COLUMN));
            }
        }
        let mut out = String::new();
        let header = self.header.iter().map(|h| ((*h).to_owned(), None));
        let lines = std::iter::once(header.collect::<Vec<_>>()).chain(self.rows.iter().cloned());
        for cells in lines {
            let last = cells.len().saturating_sub(1);
            for (i, (cell, style)) in cells.iter().enumerate() {
                let pad = if i == last {
                    0
                } else {
                    widths[i].saturating_sub(cell.chars().count()) + 2
                };
                match style.filter(|_| colour) {
                    Some(style) => out.push_str(&format!("\x1b[{style}m{cell}\x1b[0m")),
                    None => out.push_str(cell),
                }
                out.extend(std::iter::repeat_n(' ', pad));
            }
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_cell_pads_no_other_row_to_its_width() {
        let mut table = Table::new(vec!["ID", "SAGA"]);
        let huge = "x".repeat(100_000);
        table.row(vec![(huge.clone(), None), ("order".into(), None)]);
        table.row(vec![("order-1".into(), None), ("order".into(), None)]);
        let text = table.render(false);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], format!("ID{}SAGA", " ".repeat(MAX_COLUMN)));
        assert_eq!(lines[1], format!("{huge}  order"));
        assert_eq!(
            lines[2],
            format!("order-1{}order", " ".repeat(MAX_COLUMN - 5))
        );
    }

    #[test]
    fn parse_utc_reads_what_utc_writes() {
        assert_eq!(parse_utc("1970-01-01"), Some(0));
        assert_eq!(parse_utc("2024-02-29 23:59:59"), Some(1_709_251_199_000));
        assert_eq!(parse_utc("2025-11-26T12:22"), Some(1_764_159_720_000));
        assert_eq!(parse_utc("2025-13-01"), None);
        assert_eq!(parse_utc("2025-11-26 25:00"), None);
        assert_eq!(parse_utc("tuesday"), None);
    }

    #[test]
    fn table_columns_line_up_with_and_without_colour() {
        let mut table = Table::new(vec!["ID", "STATUS", "WHEN"]);
        table.row(vec![
            ("a-long-id".to_owned(), None),
            ("stuck".to_owned(), Some("31")),
            ("now".to_owned(), None),
        ]);
        assert_eq!(
            table.render(false),
            "ID         STATUS  WHEN\na-long-id  stuck   now\n"
        );
        assert_eq!(
            table.render(true).lines().nth(1),
            Some("a-long-id  \x1b[31mstuck\x1b[0m   now")
        );
    }

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0, true), "1970-01-01 00:00:00.000 UTC");
        // 2024-02-29 23:59:59.999, a leap day.
        assert_eq!(utc(1_709_251_199_999, true), "2024-02-29 23:59:59.999 UTC");
        assert_eq!(utc(1_764_159_720_000, false), "2025-11-26 12:22");
    }

    #[test]
    fn fit_cuts_with_an_ellipsis() {
        assert_eq!(fit("order", 13), "order");
        assert_eq!(fit("a-very-long-saga-name", 13), "a-very-long-…");
        assert_eq!(fit("a-very-long-…", 13).chars().count(), 13);
    }
}
