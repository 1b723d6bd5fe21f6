//! `installation.mattermost.com/v1beta1`: the `Mattermost` custom resource.
mod effective;
mod size;
mod spec;
mod status;

pub use effective::*;
pub use size::*;
pub use spec::*;
pub use status::*;
