//! Requests the platform refuses: each answer is 400/404 with a message that
//! names what is wrong.

use super::*;

#[tokio::test]
async fn start_names_each_invalid_field() {
    let emu = emulator(EmulatorOptions::default()).await;
    let api = Api::new(&emu);
    let good = start_body("m.tar", 100, 2);
    let cases: Vec<(&str, Value)> = vec![
        ("fileContext", json!("weights")),
        ("fileContext", json!(null)),
        ("totalChunks", json!(0)),
        ("totalChunks", json!("2")),
        ("fileExtension", json!("")),
        ("fileName", json!("dir/m.tar")),
        ("fileName", json!("..")),
        ("fileName", json!(7)),
        ("fileSize", json!(0)),
        ("fileSize", json!(1.5)),
        ("isAdapter", json!("false")),
    ];
    for (field, value) in cases {
        let mut body = good.clone();
        body[field] = value.clone();
        let res = api.start(&body).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{field}={value}");
        let msg = message(res).await;
        assert!(msg.contains(field), "{field}={value}: {msg}");
    }
    let mut body = good.clone();
    body.as_object_mut().unwrap().remove("fileSize");
    let res = api.start(&body).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(message(res).await.contains("fileSize"));

    // Not JSON at all.
    let res = api
        .http
        .post(format!("{}/api/public/files/session/start", api.base))
        .header("x-api-key", KEY)
        .header("content-type", "text/plain")
        .body("fileContext=model")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(message(res).await.contains("Content-Type"));
    assert!(emu.report().sessions.is_empty());
}

#[tokio::test]
async fn chunk_upload_names_what_is_wrong() {
    let emu = emulator(EmulatorOptions::default()).await;
    let api = Api::new(&emu);
    let sid = api.start_ok(&start_body("m.tar", 100, 2)).await;

    let res = api.chunk("sess-unknown", "0", b"abc").await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);

    let bad_numbers = [
        ("2", "out of range"),
        ("-1", "chunkNumber"),
        ("one", "chunkNumber"),
    ];
    for (number, expect) in bad_numbers {
        let res = api.chunk(&sid, number, b"abc").await.unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{number}");
        let msg = message(res).await;
        assert!(msg.contains(expect), "{number}: {msg}");
    }

    let no_number = Form::new().part("file", Part::bytes(b"abc".to_vec()).file_name("m.tar"));
    let res = api.send_form(&sid, no_number).await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(message(res).await.contains("chunkNumber"));

    let no_file = Form::new().text("chunkNumber", "0");
    let res = api.send_form(&sid, no_file).await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(message(res).await.contains("file"));

    let file_as_text = Form::new().text("file", "abc").text("chunkNumber", "0");
    let res = api.send_form(&sid, file_as_text).await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(message(res).await.contains("file part"));

    let res = api.chunk(&sid, "0", b"").await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(message(res).await.contains("empty"));

    let res = api
        .http
        .post(format!("{}/api/public/files/session/{sid}", api.base))
        .header("x-api-key", KEY)
        .json(&json!({"chunkNumber": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(message(res).await.contains("multipart"));

    // chunkNumber first, file second, is just as good.
    let reversed = Form::new()
        .text("chunkNumber", "1")
        .part("file", Part::bytes(vec![9u8; 40]).file_name("m.tar"));
    let res = api.send_form(&sid, reversed).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    let s = session(&emu.report(), &sid);
    assert_eq!(s.chunk_posts_stored, 1);
    assert_eq!(s.chunks.keys().copied().collect::<Vec<_>>(), vec![1]);
    let leftovers = std::fs::read_dir(emu.data_dir().unwrap().join("sessions").join(&sid))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(".upload-"))
        .count();
    assert_eq!(leftovers, 0, "refused uploads leave no temporary files");
}

#[tokio::test]
async fn complete_names_missing_chunks_and_size_mismatch() {
    let emu = emulator(EmulatorOptions::default()).await;
    let api = Api::new(&emu);
    let sid = api.start_ok(&start_body("m.tar", 30, 3)).await;
    api.chunk_ok(&sid, 0, &[1u8; 10]).await;
    api.chunk_ok(&sid, 2, &[1u8; 10]).await;
    let res = api.complete(&sid).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let msg = message(res).await;
    assert!(msg.contains("missing chunks: 1 "), "{msg}");

    api.chunk_ok(&sid, 1, &[1u8; 9]).await;
    let res = api.complete(&sid).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let msg = message(res).await;
    assert!(msg.contains("size mismatch") && msg.contains("29"), "{msg}");

    // The last copy wins: re-sending chunk 1 whole fixes it.
    api.chunk_ok(&sid, 1, &[1u8; 10]).await;
    api.complete_ok(&sid).await;
    let s = session(&emu.report(), &sid);
    assert_eq!(s.complete_calls, 3);
    assert_eq!(s.duplicates, 1);
    assert_eq!(s.chunks[&1].times_received, 2);

    let res = api.chunk(&sid, "0", &[1u8; 10]).await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(message(res).await.contains("completed"));
}

#[tokio::test]
async fn unknown_ids_answer_404_json() {
    let emu = emulator(EmulatorOptions::default()).await;
    let api = Api::new(&emu);
    let res = api.complete("sess-nope").await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert!(!message(res).await.is_empty());
    let res = api.dock("ds-nope").await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert!(!message(res).await.is_empty());
    let res = api
        .http
        .get(format!("{}/api/public/nothing-here", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}
