//! Custom resource types of the Mattermost operator. No client code lives here.
#![warn(missing_docs)]

pub mod v1alpha1;
pub mod v1beta1;
