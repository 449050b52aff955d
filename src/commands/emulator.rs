//! `modelferry emulator`: the platform emulator as a foreground server.

use std::future::Future;

use modelferry_emulator::EmulatorOptions;

use crate::cli::EmulatorArgs;
use crate::exit;

/// The emulator's options, from the command line.
pub fn options(args: &EmulatorArgs) -> EmulatorOptions {
    EmulatorOptions {
        api_key: args.api_key.clone(),
        data_dir: args.data_dir.clone(),
        fail_rate: args.fail_rate,
        lost_ack_rate: args.lost_ack_rate,
        reset_rate: args.reset_rate,
        rate_limit_rate: args.rate_limit_rate,
        retry_after: args.retry_after,
        latency: args.latency,
        session_ttl: args.session_ttl,
        clock_behind: args.clock_behind,
        import_polls: args.import_polls,
        discard: args.discard,
        max_chunk_size: args.max_chunk_size,
        hash_chunks: !args.no_hash,
    }
}

/// Serves the emulator on `--listen` until `shutdown`, returning the exit
/// status.
pub async fn run(
    args: EmulatorArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<u8> {
    modelferry_emulator::serve_until(args.listen, options(&args), shutdown).await?;
    Ok(exit::SUCCESS)
}
