//! One module per command.
pub mod migrate;
pub mod preflight;
pub mod report;
pub mod status;
pub mod upgrade;
