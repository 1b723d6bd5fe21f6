//! Pure status computation: observed children in, `MattermostStatus` out.
pub mod conditions;
