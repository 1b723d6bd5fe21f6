//! `sites`: upgrade an active/active deployment (several Mattermost sites in different clusters,
//! sharing or replicating the database) one site at a time, with its traffic drained, writes
//! guarded and replication checked; described by a site plan file. See docs/active-active.md.

pub mod gate;
pub mod hook;
pub mod plan;
pub mod progress;
pub mod run;
pub mod steps;
pub mod switch;
