//! Whole imports: start, chunks, complete, dock status.

use super::*;
use crate::ImportStatus;

#[tokio::test]
async fn imports_a_valid_tar_end_to_end() {
    let emu = emulator(EmulatorOptions {
        import_polls: 2,
        ..EmulatorOptions::default()
    })
    .await;
    let api = Api::new(&emu);
    let data = model_tar(100_000);
    let chunk = 40_000;
    let chunks = data.len().div_ceil(chunk);

    let res = api.start(&start_body("m1.tar", data.len(), chunks)).await;
    assert_eq!(res.status(), StatusCode::OK);
    let v: Value = res.json().await.unwrap();
    let sid = v["sessionId"].as_str().unwrap().to_owned();
    let model_id = v["modelId"].as_str().unwrap().to_owned();
    assert!(
        sid.starts_with("sess-") && model_id.starts_with("cm-"),
        "{v}"
    );
    let expiry = v["expirationDate"].as_str().unwrap();
    assert!(
        expiry.ends_with('Z') && expiry.len() == "2025-02-05T11:58:03.638Z".len(),
        "{expiry}"
    );
    let expiry = humantime::parse_rfc3339(expiry).expect("RFC 3339 date");
    let ttl = expiry.duration_since(std::time::SystemTime::now()).unwrap();
    assert!(ttl > Duration::from_secs(9 * 60) && ttl <= Duration::from_secs(10 * 60));

    api.upload_all(&sid, &data, chunk).await;
    let res = api.complete(&sid).await;
    assert_eq!(res.status(), StatusCode::OK);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["modelId"], model_id.as_str());
    assert_eq!(v["jobType"], "MODELS");
    assert_eq!(v["action"], "IMPORT");
    assert_eq!(v["status"], "IN_PROGRESS");
    let dock_id = v["dock-statusId"].as_str().unwrap().to_owned();
    assert!(dock_id.starts_with("ds-"));

    // Once assembly is over, exactly import_polls IN_PROGRESS answers remain.
    let s = wait_import_end(&emu, &sid).await;
    assert_eq!(s.status, Some(ImportStatus::Success));
    let (in_progress, last) = api.poll_final(&dock_id).await;
    assert_eq!(in_progress, 2);
    assert_eq!(
        last,
        json!({"_id": dock_id, "jobType": "MODELS", "action": "IMPORT",
               "status": "SUCCESS", "modelId": model_id})
    );

    let r = emu.report();
    let s = session(&r, &sid);
    assert_eq!(s.model_id, model_id);
    assert_eq!(s.start.file_context, "model");
    assert_eq!(s.start.file_name, "m1.tar");
    assert_eq!(s.start.file_extension, "tar");
    assert_eq!(s.start.total_chunks, chunks as u64);
    assert_eq!(s.start.file_size, data.len() as u64);
    assert_eq!(s.start.is_adapter, Some(false));
    assert!(s.completed && !s.expired);
    assert_eq!(s.complete_calls, 1);
    assert_eq!(s.chunk_posts_stored, chunks as u64);
    assert_eq!(s.duplicates, 0);
    assert_eq!(s.dock_status_id.as_deref(), Some(dock_id.as_str()));
    assert_eq!(s.dock_status_polls, 3);
    assert_eq!(s.assembled_size, Some(data.len() as u64));
    assert_eq!(s.assembled_sha256.as_deref(), Some(sha_hex(&data).as_str()));
    for (n, c) in data.chunks(chunk).enumerate() {
        let held = &s.chunks[&(n as u64)];
        assert_eq!((held.size, held.times_received), (c.len() as u64, 1));
        assert_eq!(held.sha256, sha_hex(c));
    }
    assert_eq!(r.requests.start, 1);
    assert_eq!(r.requests.chunk, chunks as u64);
    assert_eq!(r.requests.complete, 1);
    assert_eq!(r.requests.dock_status, 3);
    assert_eq!(r.sessions_for_file("m1.tar").len(), 1);
    assert_eq!(r.session_for_dock_status(&dock_id).unwrap().session_id, sid);

    let dir = emu.data_dir().expect("a private data dir");
    let model = std::fs::read(dir.join("models").join(format!("{model_id}.tar"))).unwrap();
    assert_eq!(model, data);
    emu.shutdown().await;
    assert!(!dir.exists(), "the private data dir is removed on shutdown");
}

#[tokio::test]
async fn invalid_tar_ends_failed_with_a_message() {
    let emu = emulator(EmulatorOptions {
        import_polls: 0,
        ..EmulatorOptions::default()
    })
    .await;
    let api = Api::new(&emu);
    let data: Vec<u8> = (0..5000u32).map(|i| (i % 7) as u8 + 1).collect();
    let sid = api.start_ok(&start_body("broken.tar", data.len(), 2)).await;
    api.upload_all(&sid, &data, 2500).await;
    let dock = api.complete_ok(&sid).await;
    let (_, last) = api.poll_final(&dock).await;
    assert_eq!(last["status"], "FAILED");
    let msg = last["message"].as_str().expect("FAILED carries a message");
    assert!(msg.contains("invalid model archive"), "{msg}");
    let s = session(&emu.report(), &sid);
    assert_eq!(s.status, Some(ImportStatus::Failed));
    assert!(s.message.unwrap().contains("invalid model archive"));
    assert_eq!(s.assembled_sha256.as_deref(), Some(sha_hex(&data).as_str()));
}

#[tokio::test]
async fn complete_is_idempotent() {
    let emu = emulator(EmulatorOptions {
        import_polls: 1,
        ..EmulatorOptions::default()
    })
    .await;
    let api = Api::new(&emu);
    let data = model_tar(2000);
    let sid = api.start_ok(&start_body("twice.tar", data.len(), 1)).await;
    api.upload_all(&sid, &data, data.len()).await;
    let first = api.complete_ok(&sid).await;
    let second = api.complete_ok(&sid).await;
    assert_eq!(first, second);
    wait_import_end(&emu, &sid).await;
    let (_, last) = api.poll_final(&first).await;
    assert_eq!(last["status"], "SUCCESS");
    // After the outcome showed, a repeated complete answers it.
    let v: Value = api.complete(&sid).await.json().await.unwrap();
    assert_eq!(v["dock-statusId"], first.as_str());
    assert_eq!(v["status"], "SUCCESS");
    let s = session(&emu.report(), &sid);
    assert_eq!(s.complete_calls, 3);
    assert_eq!(emu.report().sessions.len(), 1);
}

#[tokio::test]
async fn accepts_chunks_larger_than_two_megabytes() {
    let emu = emulator(EmulatorOptions::default()).await;
    let api = Api::new(&emu);
    let data = model_tar(3 * 1024 * 1024);
    let sid = api.start_ok(&start_body("big.tar", data.len(), 1)).await;
    api.chunk_ok(&sid, 0, &data).await;
    let s = session(&emu.report(), &sid);
    assert_eq!(s.chunks[&0].sha256, sha_hex(&data));
    api.complete_ok(&sid).await;
    let s = wait_import_end(&emu, &sid).await;
    assert_eq!(s.status, Some(ImportStatus::Success));
    assert_eq!(s.assembled_sha256, Some(sha_hex(&data)));
}

#[tokio::test]
async fn refuses_a_chunk_over_the_maximum_with_413() {
    let emu = emulator(EmulatorOptions {
        max_chunk_size: 1000,
        ..EmulatorOptions::default()
    })
    .await;
    let api = Api::new(&emu);
    let sid = api.start_ok(&start_body("m.tar", 3000, 3)).await;
    let res = api.chunk(&sid, "0", &[1u8; 1001]).await.unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(message(res).await.contains("1000"));
    api.chunk_ok(&sid, 0, &[1u8; 1000]).await;
    let s = session(&emu.report(), &sid);
    assert_eq!(s.chunks.len(), 1);
    assert_eq!(s.chunk_posts_stored, 1);
}

#[tokio::test]
async fn discard_mode_hashes_and_keeps_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let emu = emulator(EmulatorOptions {
        discard: true,
        data_dir: Some(dir.path().to_path_buf()),
        import_polls: 1,
        ..EmulatorOptions::default()
    })
    .await;
    assert_eq!(emu.data_dir(), None);
    let api = Api::new(&emu);
    // Not even a tar: discard mode does not look inside.
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let sid = api.start_ok(&start_body("bench.bin", data.len(), 3)).await;
    api.upload_all(&sid, &data, 100_000).await;
    let dock = api.complete_ok(&sid).await;
    let (in_progress, last) = api.poll_final(&dock).await;
    assert_eq!((in_progress, last["status"].as_str()), (1, Some("SUCCESS")));
    let s = session(&emu.report(), &sid);
    assert_eq!(s.assembled_sha256, None);
    assert_eq!(s.bytes_held(), data.len() as u64);
    assert_eq!(s.chunks[&2].sha256, sha_hex(&data[200_000..]));
    emu.shutdown().await;
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "discard mode wrote {left:?}");
}

#[tokio::test]
async fn chunk_hashing_can_be_switched_off_for_benchmarks() {
    let emu = emulator(EmulatorOptions {
        discard: true,
        hash_chunks: false,
        import_polls: 0,
        ..EmulatorOptions::default()
    })
    .await;
    let api = Api::new(&emu);
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let sid = api.start_ok(&start_body("bench.bin", data.len(), 2)).await;
    api.upload_all(&sid, &data, 100_000).await;
    let s = session(&emu.report(), &sid);
    assert_eq!(s.bytes_held(), data.len() as u64, "chunks still counted");
    assert!(s.chunks.values().all(|c| c.sha256.is_empty()), "not hashed");
    emu.shutdown().await;
}
