//! The shipped systemd unit: what SPEC.md promises of it, and its sandboxing.

use std::path::Path;

fn unit() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/modelferry.service"),
    )
    .expect("systemd/modelferry.service")
}

#[test]
fn the_unit_is_type_notify_with_credential_state_and_watchdog() {
    let u = unit();
    for line in [
        "Type=notify",
        "ExecStart=/usr/bin/modelferry run -c /etc/modelferry/modelferry.toml",
        "Restart=on-failure",
        // A bad configuration (exit 2) is not restarted.
        "RestartPreventExitStatus=2",
        "StateDirectory=modelferry",
        "ConfigurationDirectory=modelferry",
        "User=modelferry",
    ] {
        assert!(u.lines().any(|l| l.trim() == line), "{line} in the unit");
    }
    for prefix in ["LoadCredential=api-key:", "WatchdogSec="] {
        assert!(
            u.lines().any(|l| l.starts_with(prefix)),
            "{prefix} in the unit"
        );
    }
    assert!(
        !u.contains("MODELFERRY_API_KEY="),
        "no key in the environment"
    );
}

#[test]
fn systemd_analyze_rates_the_sandbox_1_5_or_lower() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/modelferry.service");
    let out = match std::process::Command::new("systemd-analyze")
        .args(["security", "--offline=yes"])
        .arg(&path)
        .output()
    {
        Ok(o) => o,
        // CI must rate the unit (as the fleet tests must find PostgreSQL);
        // elsewhere a missing tool skips the rating, saying so.
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("systemd-analyze is needed under CI=true to rate the unit: {e}")
        }
        Err(e) => {
            eprintln!(
                "\n*** SKIPPED the sandbox rating: systemd-analyze is not installed ({e}) ***\n"
            );
            return;
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| {
            panic!(
                "no rating in: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let score: f64 = line
        .split(':')
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unreadable rating: {line}"));
    assert!(score <= 1.5, "exposure {score} (want <= 1.5): {line}");
}
