//! modelferry's integration tests: one binary, a shared support module, the
//! emulator on 127.0.0.1:0 and the real `modelferry` binary.
#![allow(clippy::print_stdout, clippy::print_stderr, clippy::disallowed_methods)]

// Pre-flight's tar corpus builder, shared with its unit tests.
#[path = "../../src/preflight/corpus.rs"]
mod corpus;
mod daemon;
mod engine;
mod fleet;
mod hardening_config;
mod hardening_engine;
mod hardening_files;
mod hardening_platform;
mod mend_contract;
mod operable_check;
mod operable_jobs;
mod operable_upload;
mod operations;
mod preflight;
mod support;
mod systemd;
mod upload;
