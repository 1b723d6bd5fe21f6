//! Tables, JSON and YAML, and small formatting helpers.

use comfy_table::presets::NOTHING;
use comfy_table::{ContentArrangement, Table};
use serde::Serialize;

use crate::cli::Output;
use crate::error::Error;

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
            println!("{text}");
            Ok(true)
        }
        Output::Yaml => {
            let text = serde_saphyr::to_string(value).map_err(|e| Error::Encode(e.to_string()))?;
            print!("{text}");
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
