//! `modelferry check`: everything `run` would need, every problem at once
//! (exit 2), and with `--online` one authenticated read of the platform:
//! dock status of an id that cannot exist, where 404 means the key was
//! accepted (exit 0), 401/403 that it was not (exit 3), and no answer (or
//! an unexpected one) exit 6.

use std::path::Path;
use std::time::Duration;

use crate::config::Config;
use crate::escaped::Escaped;
use crate::exit;
use crate::platform::{ClientSettings, ErrorKind, PlatformClient};

/// The longest the online read may take, whatever `request_timeout` says.
const ONLINE_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `modelferry check`, returning the exit status.
pub async fn run(file: &Path, online: bool) -> anyhow::Result<u8> {
    let f = file.to_path_buf();
    let (config, problems) = tokio::task::spawn_blocking(move || Config::check(&f)).await?;
    let shown = Escaped::path(file);
    if problems.is_empty() {
        if let Some(c) = &config {
            println!(
                "config {shown}: ok ({} drop folder{}, state in {})",
                c.watch.len(),
                if c.watch.len() == 1 { "" } else { "s" },
                Escaped::path(&c.state.dir)
            );
        }
    } else {
        eprintln!(
            "config {shown}: {} problem{}:",
            problems.len(),
            if problems.len() == 1 { "" } else { "s" }
        );
        for p in &problems {
            eprintln!("  {}", Escaped::str(p));
        }
    }
    let mut code = if problems.is_empty() {
        exit::SUCCESS
    } else {
        exit::USAGE
    };
    // Fleet mode: the shared database, reached, and its schema version;
    // tried whenever state.url is usable, so its problem is among the rest.
    if let Some(config) = config.as_ref().filter(|c| c.state.url.is_some()) {
        code = merged(code, check_database(config).await);
    }
    if let (true, Some(config)) = (online, &config) {
        code = merged(code, check_online(config).await);
    }
    Ok(code)
}

/// The first problem's exit code stands; a later check only fills in one
/// that was success.
fn merged(code: u8, next: u8) -> u8 {
    if code == exit::SUCCESS {
        next
    } else {
        code
    }
}

/// Connects to the fleet's database and reports its schema version, writing
/// nothing (an older schema is reported as what `run` would migrate); a
/// newer schema than this binary knows, or a database that cannot be
/// reached, is a problem (exit 2).
async fn check_database(config: &Config) -> u8 {
    let known = crate::store::PG_SCHEMA_VERSION;
    let db = config
        .state
        .url
        .as_ref()
        .map(|u| u.to_string())
        .unwrap_or_default();
    let found = match crate::store::Store::from_config_without_migrating(config).await {
        Ok(Some(store)) => store.schema_version().await.map_err(anyhow::Error::from),
        Ok(None) => Ok(0),
        Err(e) => match e.downcast_ref() {
            Some(crate::store::StoreError::SchemaTooOld { found, .. }) => Ok(*found),
            _ => Err(e),
        },
    };
    match found {
        Ok(v) if v < known => {
            println!("database {db}: ok (schema version {v}; run would migrate {v}→{known})");
            exit::SUCCESS
        }
        Ok(v) => {
            println!("database {db}: ok (schema version {v})");
            exit::SUCCESS
        }
        Err(e) => {
            eprintln!("database: {e:#}");
            exit::USAGE
        }
    }
}

/// One authenticated read; prints what it found and returns the exit code.
async fn check_online(config: &Config) -> u8 {
    if config.platform.emulate {
        println!("platform: platform.emulate = true; nothing to check online");
        return exit::SUCCESS;
    }
    let (Ok(base_url), Ok(key)) = (config.base_url(), config.load_api_key()) else {
        eprintln!("platform: not checked online (fix the problems above first)");
        return exit::USAGE;
    };
    let settings = ClientSettings {
        base_url: base_url.clone(),
        connect_timeout: config.platform.connect_timeout.min(ONLINE_TIMEOUT),
        request_timeout: config.platform.request_timeout.min(ONLINE_TIMEOUT),
    };
    let client = match PlatformClient::new(&settings, key) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("platform: cannot set up the HTTP client: {e}");
            return exit::LOCAL_ERROR;
        }
    };
    // An id no import can have: only the answer's status matters.
    let probe = format!("modelferry-check-{:016x}", fastrand::u64(..));
    match client.dock_status(&probe).await {
        Ok(_) => {
            println!("platform {base_url}: answered; the API key was accepted");
            exit::SUCCESS
        }
        Err(e) if e.status == Some(404) => {
            println!("platform {base_url}: answered; the API key was accepted");
            exit::SUCCESS
        }
        Err(e) if e.kind == ErrorKind::Auth => {
            eprintln!("platform {base_url}: the API key was rejected ({e})");
            exit::KEY_REJECTED
        }
        Err(e) => {
            eprintln!("platform {base_url}: no usable answer: {e}");
            exit::GAVE_UP
        }
    }
}
