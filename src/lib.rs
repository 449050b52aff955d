//! modelferry: resumable bulk uploads of model tarballs into the Agent
//! Platform's model-import API.
//!
//! Modules:
//! - [`cli`]: command-line definitions; [`commands`]: what each command does;
//!   [`exit`]: exit codes.
//! - [`config`]: the TOML file and environment, validated; [`secret`]: the API key.
//! - [`platform`]: the platform client (all HTTP to the platform).
//! - [`job`]: the domain model (jobs, states, filing, the rules for each);
//!   [`store`]: where jobs are kept (the one store interface; SQLite, or
//!   PostgreSQL in fleet mode).
//! - [`source`]: the source file's identity and positioned reads;
//!   [`preflight`]: the archive's structure, checked before it is sent.
//! - [`upload`]: the engine that carries a job from start to final answer.
//! - [`progress`]: progress bar and lines; [`telemetry`]: logging;
//!   [`metrics`]: Prometheus metrics; [`escaped`]: file names and paths as
//!   shown in logs and messages; [`shown`]: times and rates as shown.
//! - [`daemon`]: the drop-folder daemon; [`watch`]: drop folders;
//!   [`filing`]: receipts and moves; [`systemd`]: sd_notify.
//! - [`emulator`]: a local emulator of the platform, for tests and demos (the
//!   `modelferry-emulator` crate, re-exported).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cli;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod escaped;
pub mod exit;
pub mod filing;
pub mod job;
pub mod metrics;
pub mod platform;
pub mod preflight;
pub mod progress;
pub mod secret;
pub mod shown;
pub mod source;
pub mod store;
pub mod systemd;
pub mod telemetry;
pub mod upload;
pub mod watch;

/// The platform emulator, a crate of its own (it must not depend on this one);
/// re-exported so `modelferry::emulator` names it too.
pub use modelferry_emulator as emulator;
