//! `mmtrace daemon`: the always-on recorder (issue 10). This first step is
//! its configuration: the TOML file, its defaults and its checks.

pub mod config;
pub mod files;
