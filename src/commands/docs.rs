//! `modelferry completions SHELL` and the hidden `modelferry manpages DIR`:
//! what a package installs beside the binary, made from the same clap
//! definitions the binary parses with, so they cannot drift from it.

use std::path::Path;

use anyhow::Context;
use clap::CommandFactory;

use crate::cli::{Cli, Shell};
use crate::exit;

/// Writes the completion script for `shell` to stdout.
pub fn completions(shell: Shell) -> anyhow::Result<u8> {
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "modelferry", &mut std::io::stdout());
    Ok(exit::SUCCESS)
}

/// Writes `modelferry.1` and `modelferry-COMMAND.1` for each visible command
/// into `dir`.
pub fn manpages(dir: &Path) -> anyhow::Result<u8> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir)
        .with_context(|| format!("cannot write man pages into {}", dir.display()))?;
    Ok(exit::SUCCESS)
}
