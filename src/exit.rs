//! Exit codes, in one place.

use std::process::ExitCode;

/// The import succeeded (or the file was already imported).
pub const SUCCESS: u8 = 0;
/// The import failed: the platform said FAILED or refused the request.
pub const IMPORT_FAILED: u8 = 1;
/// Usage or configuration error.
pub const USAGE: u8 = 2;
/// The platform rejected the API key; the job is kept and a rerun resumes it.
pub const KEY_REJECTED: u8 = 3;
/// Stopped by SIGINT/SIGTERM before the import finished; a rerun resumes it.
pub const INTERRUPTED: u8 = 130;

/// `c` as the process's exit code.
pub fn code(c: u8) -> ExitCode {
    ExitCode::from(c)
}
/// Could not run: the state database or local I/O failed (nothing is lost;
/// rerun once the cause is fixed).
pub const LOCAL_ERROR: u8 = 4;
/// Another modelferry process is running this file's job right now.
pub const BUSY: u8 = 5;
/// Gave up at `upload --timeout`, or the platform did not answer
/// (`check --online`); the job is kept and a rerun resumes it.
pub const GAVE_UP: u8 = 6;
