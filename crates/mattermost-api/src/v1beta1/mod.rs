//! `Mattermost` (`installation.mattermost.com/v1beta1`).
