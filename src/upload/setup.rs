//! Building the platform client from the configuration, for every command
//! that talks to the platform (`upload` and the daemon).
//!
//! [`platform_setup`] owns the choice between the real platform and the
//! built-in emulator (`platform.emulate`), and reads the API key once for
//! the start; the daemon re-reads it on SIGHUP itself.

use anyhow::Context;

use crate::config::Config;
use crate::platform::{ClientSettings, PlatformClient};
use modelferry_emulator::{EmulatorHandle, EmulatorOptions};

/// The platform client for `config`, with the API key it names. With
/// `platform.emulate = true`, the built-in emulator is started on a free
/// loopback port (its sessions kept under the state folder, so they survive a
/// restart) and the client points at it; the handle keeps it running.
pub async fn platform_setup(
    config: &Config,
) -> anyhow::Result<(PlatformClient, Option<EmulatorHandle>)> {
    let settings = |base_url| ClientSettings {
        base_url,
        connect_timeout: config.platform.connect_timeout,
        request_timeout: config.platform.request_timeout,
    };
    if !config.platform.emulate {
        let key = config.load_api_key()?;
        let client = PlatformClient::new(&settings(config.base_url()?), key)
            .context("cannot set up the HTTP client")?;
        client.set_max_rate(config.upload.max_rate);
        return Ok((client, None));
    }
    let opts = EmulatorOptions {
        data_dir: Some(config.state.dir.join("emulator")),
        import_polls: 1,
        ..EmulatorOptions::default()
    };
    let handle = modelferry_emulator::start(([127, 0, 0, 1], 0).into(), opts)
        .await
        .context("platform.emulate: cannot start the built-in emulator")?;
    tracing::warn!(
        url = %handle.base_url(),
        "platform.emulate = true: uploads go to the built-in emulator; nothing reaches a real platform"
    );
    let key = config
        .load_api_key()
        .unwrap_or_else(|_| crate::secret::Secret::new("emulator"));
    let url = reqwest::Url::parse(&handle.base_url()).context("emulator address")?;
    let client =
        PlatformClient::new(&settings(url), key).context("cannot set up the HTTP client")?;
    client.set_max_rate(config.upload.max_rate);
    Ok((client, Some(handle)))
}
