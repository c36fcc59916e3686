//! The `weir` binary's library: configuration, start-up and the demo topology. Integration tests
//! use the same namespace helpers the demo does.

pub mod admin;
pub mod claim;
pub mod config;
pub mod ctl;
pub mod demo;
pub mod footprint;
pub mod fuzzing;
pub mod host;
pub mod meshdemo;
pub mod netns;
pub mod run;
