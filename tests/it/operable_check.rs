//! `modelferry check [--online]`.

use modelferry_emulator::EmulatorOptions;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_config_checks_ok_online_too() {
    let env = Env::daemon_env(
        EmulatorOptions {
            api_key: Some(API_KEY.into()),
            ..EmulatorOptions::default()
        },
        Settings::default(),
        "",
    )
    .await;
    let r = cli(&env, "check", &[]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("ok"), "{}", r.stdout);
    let r = cli(&env, "check", &["--online"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("accepted"), "{}", r.stdout);
    assert_eq!(env.report().requests.dock_status, 1, "one read");
    assert!(!env.path("state").exists(), "check changes nothing");

    // A key the platform does not take: exit 3.
    env.emu.set_api_key(Some("another-key".into()));
    let r = cli(&env, "check", &["--online"]).await;
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("rejected"), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_answer_from_the_platform_is_exit_6() {
    let env = Env::daemon_env(EmulatorOptions::default(), Settings::default(), "").await;
    // A port nothing listens on: bind one, then let it go.
    let port = free_port();
    let mut cmd = env.command(&["check", "-c", env.config.to_str().unwrap(), "--online"]);
    cmd.env(
        "MODELFERRY__PLATFORM__BASE_URL",
        format!("http://127.0.0.1:{port}"),
    );
    let r = run(cmd).await;
    assert_eq!(r.code, 6, "{}{}", r.stdout, r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_problem_is_reported_at_once() {
    let env = Env::start(EmulatorOptions::default()).await;
    let d = env.dir.path();
    std::fs::write(d.join("blocker"), b"").unwrap();
    let config = d.join("bad.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[platform]
base_url = "{base}"
[state]
dir = "{d}/blocker/state"
[upload]
parallel_chunks = "four"
[[watch]]
dir = "{d}/no-such-drop"
done_dir = "{d}/done"
failed_dir = "{d}/failed"
"#,
            base = env.emu.base_url(),
            d = d.display()
        ),
    )
    .unwrap();
    let mut cmd = env.command(&["check", "-c", config.to_str().unwrap(), "--online"]);
    cmd.env_remove("MODELFERRY_API_KEY");
    let r = run(cmd).await;
    assert_eq!(r.code, 2, "{}", r.stderr);
    for what in [
        "upload.parallel_chunks",
        "watch[0].dir",
        "state.dir",
        "no API key",
    ] {
        assert!(r.stderr.contains(what), "{what} in:\n{}", r.stderr);
    }
    assert_eq!(env.report().requests.dock_status, 0);
    // An unreadable file is one problem, exit 2.
    let r = run(env.command(&["check", "-c", d.join("nope.toml").to_str().unwrap()])).await;
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("nope.toml"), "{}", r.stderr);
}
