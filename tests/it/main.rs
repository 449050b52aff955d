//! modelferry's integration tests: one binary, a shared support module, the
//! emulator on 127.0.0.1:0 and the real `modelferry` binary.

mod daemon;
mod operations;
mod support;
mod systemd;
mod upload;
