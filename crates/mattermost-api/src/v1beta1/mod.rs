//! `installation.mattermost.com/v1beta1`: the `Mattermost` custom resource.
mod effective;
mod size;
mod spec;
mod status;
mod upgrade;

pub use effective::*;
pub use size::*;
pub use spec::*;
pub use status::*;
pub use upgrade::*;
