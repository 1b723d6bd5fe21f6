//! Tables, JSON and YAML, small formatting helpers, and stdout that survives a closed pipe.

use comfy_table::presets::NOTHING;
use comfy_table::{ContentArrangement, Table};
use serde::Serialize;

use crate::cli::Output;
use crate::error::Error;

/// Exit code when stdout is a closed pipe (`... | head`): 128 + SIGPIPE, what a shell reports for
/// kubectl itself, which the signal ends.
pub const BROKEN_PIPE_EXIT: i32 = 141;

/// `outln!` that ends the process quietly when stdout is a closed pipe instead of panicking.
macro_rules! outln {
    () => {
        $crate::output::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` with the same care as [`outln!`].
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!($($arg)*))
    };
}

/// Writes to stdout; see [`stdout_failed`] for errors.
pub fn write_stdout(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    if let Err(e) = std::io::stdout().lock().write_fmt(args) {
        stdout_failed(&e);
    }
}

/// Writes bytes to stdout and flushes; see [`stdout_failed`] for errors.
pub fn write_stdout_bytes(bytes: &[u8]) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(bytes).and_then(|()| out.flush()) {
        stdout_failed(&e);
    }
}

/// Ends the process: quietly with [`BROKEN_PIPE_EXIT`] when the reader went away (nobody is left
/// to read the rest), else with exit code 2 and the reason on stderr. This is what SIGPIPE does
/// to kubectl: a run ended here is like a killed one (between two atomic patches; `upgrade` and
/// `sites` resume where it stopped, a sites lock expires after its TTL).
pub fn stdout_failed(e: &std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(BROKEN_PIPE_EXIT);
    }
    eprintln!("error: writing to stdout: {e}");
    std::process::exit(2)
}

/// A borderless table like kubectl's.
pub fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.to_vec());
    t
}

/// Prints `value` as JSON or YAML; `false` for `Output::Table` (the caller prints a table).
pub fn structured<T: Serialize>(format: Output, value: &T) -> Result<bool, Error> {
    match format {
        Output::Table => Ok(false),
        Output::Json => {
            let text = serde_json::to_string_pretty(value).map_err(|e| Error::Encode(e.to_string()))?;
            outln!("{text}");
            Ok(true)
        }
        Output::Yaml => {
            let text = serde_saphyr::to_string(value).map_err(|e| Error::Encode(e.to_string()))?;
            out!("{text}");
            Ok(true)
        }
    }
}

/// `5s`, `3m`, `2h`, `4d` since an RFC 3339 time.
pub fn age(since: Option<&str>) -> String {
    let Some(ts) = since.and_then(|s| s.parse::<jiff::Timestamp>().ok()) else {
        return "-".into();
    };
    let secs = (jiff::Timestamp::now().as_second() - ts.as_second()).max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// Shortens one-line text for a table cell.
pub fn cell(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or_default();
    if line.chars().count() <= max {
        line.to_owned()
    } else {
        let cut: String = line.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}
