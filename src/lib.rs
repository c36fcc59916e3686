//! The `weir` binary's library. By job: `config` (the file: its schema, parsing and
//! validation), `translate` (configuration to dataplane terms), `run` (start-up, control while
//! running, reports), `admin` and `ctl` (the admin API and its client), `host` and `claim`
//! (the host's readiness and the interfaces' locks), `demo`, `meshdemo` and `netns` (the demo
//! topologies, which the integration tests share).

pub mod admin;
pub mod claim;
pub mod config;
pub mod ctl;
pub mod demo;
pub mod footprint;
pub mod fuzzing;
pub mod handover;
pub mod host;
pub mod meshdemo;
pub mod netns;
pub mod run;
pub mod translate;
pub mod xds;
