//! The `modelferry` binary: parse the command line, run the command, map the
//! result to an exit code.

// `main` prints the error chain that ends the process.
#![allow(clippy::print_stderr)]

use std::process::ExitCode;

use clap::Parser;
use modelferry::escaped::Escaped;
use modelferry::{cli::Cli, commands, exit, telemetry};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("modelferry: error: cannot start the async runtime: {e}");
            return exit::code(exit::LOCAL_ERROR);
        }
    };
    let result = runtime.block_on(commands::dispatch(cli, commands::shutdown_signal()));
    // Blocking tasks (a database write, a chunk read) finish on their own;
    // do not wait long for them on the way out.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(code) => exit::code(code),
        Err(e) => {
            // An error may quote a file name: escaped, it cannot break the line.
            let shown = format!("{e:#}");
            telemetry::eprint_error(&format!("modelferry: error: {}", Escaped::str(&shown)));
            exit::code(commands::exit_code_for(&e))
        }
    }
}
