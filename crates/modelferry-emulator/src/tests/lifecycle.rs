//! Restarts on the same data directory, and the report over HTTP.

use super::*;
use crate::ImportStatus;

fn on(dir: &std::path::Path) -> EmulatorOptions {
    EmulatorOptions {
        data_dir: Some(dir.to_path_buf()),
        import_polls: 1,
        ..EmulatorOptions::default()
    }
}

#[tokio::test]
async fn sessions_survive_a_restart_on_the_same_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let data = model_tar(50_000);
    let half = data.len().div_ceil(2);

    let emu = emulator(on(dir.path())).await;
    let api = Api::new(&emu);
    let sid = api.start_ok(&start_body("keep.tar", data.len(), 2)).await;
    api.chunk_ok(&sid, 0, &data[..half]).await;
    api.chunk_ok(&sid, 0, &data[..half]).await;
    let expired = api.start_ok(&start_body("gone.tar", 10, 1)).await;
    let done_sid = api.start_ok(&start_body("done.tar", data.len(), 1)).await;
    api.chunk_ok(&done_sid, 0, &data).await;
    let done_dock = api.complete_ok(&done_sid).await;
    wait_import_end(&emu, &done_sid).await;
    let (_, last) = api.poll_final(&done_dock).await;
    assert_eq!(last["status"], "SUCCESS");
    // Only sessions not yet completed expire.
    emu.expire_sessions();
    let before = emu.report();
    emu.shutdown().await;
    assert!(dir
        .path()
        .join("sessions")
        .join(&sid)
        .join("chunk-0")
        .exists());

    let emu = emulator(on(dir.path())).await;
    let api = Api::new(&emu);
    let after = emu.report();
    assert_eq!(after.sessions.len(), 3);
    for (a, b) in before.sessions.iter().zip(&after.sessions) {
        assert_eq!(a.session_id, b.session_id, "same order");
        assert_eq!(a.start, b.start);
        assert_eq!(a.chunks, b.chunks);
        assert_eq!(
            (a.chunk_posts_stored, a.duplicates),
            (b.chunk_posts_stored, b.duplicates)
        );
        assert_eq!(a.expired, b.expired);
        assert_eq!(a.expires_at, b.expires_at);
        assert_eq!(a.status, b.status);
    }
    assert!(session(&after, &expired).expired);
    // The finished import keeps answering its outcome at once.
    assert_eq!(api.dock_json(&done_dock).await["status"], "SUCCESS");
    let s = session(&after, &done_sid);
    assert_eq!(s.assembled_sha256, Some(sha_hex(&data)));
    emu.shutdown().await;
}

#[tokio::test]
async fn an_open_session_resumes_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = model_tar(50_000);
    let half = data.len().div_ceil(2);

    let emu = emulator(on(dir.path())).await;
    let sid = Api::new(&emu)
        .start_ok(&start_body("resume.tar", data.len(), 2))
        .await;
    Api::new(&emu).chunk_ok(&sid, 0, &data[..half]).await;
    drop(emu); // not a graceful stop
               // The old server may take a moment to let go; a new port is fine.
    let emu = emulator(on(dir.path())).await;
    let api = Api::new(&emu);
    api.chunk_ok(&sid, 1, &data[half..]).await;
    let dock = api.complete_ok(&sid).await;
    let s = wait_import_end(&emu, &sid).await;
    assert_eq!(s.status, Some(ImportStatus::Success));
    assert_eq!(s.assembled_sha256, Some(sha_hex(&data)));
    let (_, last) = api.poll_final(&dock).await;
    assert_eq!(last["status"], "SUCCESS");
    let s = session(&emu.report(), &sid);
    assert_eq!(s.chunk_posts_stored, 2);
    emu.shutdown().await;
}

#[tokio::test]
async fn the_report_is_served_as_json() {
    let emu = emulator(EmulatorOptions::default()).await;
    let api = Api::new(&emu);
    let sid = api.start_ok(&start_body("r.tar", 10, 1)).await;
    api.chunk_ok(&sid, 0, &[5u8; 10]).await;
    let res = api
        .http
        .get(format!("{}/_emulator/report", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let over_http: Report = res.json().await.unwrap();
    let local = emu.report();
    assert_eq!(
        serde_json::to_value(&over_http).unwrap(),
        serde_json::to_value(&local).unwrap()
    );
    assert_eq!(over_http.session(&sid).unwrap().chunks[&0].size, 10);
    assert_eq!(over_http.chunk_posts_stored(), 1);
}
