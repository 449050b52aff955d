//! Auth and injected faults.

use super::*;
use crate::FaultRates;

#[tokio::test]
async fn wrong_or_missing_key_is_401_and_the_key_can_be_flipped() {
    let emu = emulator(EmulatorOptions {
        api_key: Some(KEY.to_owned()),
        ..EmulatorOptions::default()
    })
    .await;
    let body = start_body("m.tar", 10, 1);
    let good = Api::new(&emu);
    let wrong = Api::new(&emu).with_key("not-the-key");
    let empty = Api::new(&emu).with_key("");

    let res = wrong.start(&body).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(message(res).await, "invalid API key");
    assert_eq!(empty.start(&body).await.status(), StatusCode::UNAUTHORIZED);
    let res = good
        .http
        .post(format!("{}/api/public/files/session/start", good.base))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "no key at all");
    // Header names are case-insensitive.
    let res = good
        .http
        .post(format!("{}/api/public/files/session/start", good.base))
        .header("X-Api-Key", KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(wrong.dock("ds-x").await.status(), StatusCode::UNAUTHORIZED);

    // Any key while none is configured.
    emu.set_api_key(None);
    assert_eq!(wrong.start(&body).await.status(), StatusCode::OK);
    assert_eq!(empty.start(&body).await.status(), StatusCode::UNAUTHORIZED);

    // Over the admin endpoint, as a separate process would.
    let res = good
        .http
        .post(format!("{}/_emulator/api-key", good.base))
        .json(&json!({"api_key": "rotated"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        !res.text().await.unwrap().contains("rotated"),
        "never echoes the key"
    );
    assert_eq!(good.start(&body).await.status(), StatusCode::UNAUTHORIZED);
    let rotated = Api::new(&emu).with_key("rotated");
    assert_eq!(rotated.start(&body).await.status(), StatusCode::OK);

    let r = emu.report();
    assert_eq!(r.auth_rejections, 6);
    assert_eq!(r.sessions.len(), 3);
    assert_eq!(r.requests.start, 8);
}

#[tokio::test]
async fn expired_sessions_answer_410() {
    let emu = emulator(EmulatorOptions::default()).await;
    let api = Api::new(&emu);
    let sid = api.start_ok(&start_body("m.tar", 20, 2)).await;
    api.chunk_ok(&sid, 0, &[1u8; 10]).await;
    emu.expire_sessions();
    let res = api.chunk(&sid, "1", &[1u8; 10]).await.unwrap();
    assert_eq!(res.status(), StatusCode::GONE);
    assert_eq!(message(res).await, "session expired");
    let res = api.complete(&sid).await;
    assert_eq!(res.status(), StatusCode::GONE);
    let s = session(&emu.report(), &sid);
    assert!(s.expired);
    assert_eq!(s.chunk_posts_stored, 1);

    // Over the admin endpoint, on a fresh session.
    let sid2 = api.start_ok(&start_body("m.tar", 20, 2)).await;
    let res = api
        .http
        .post(format!("{}/_emulator/expire-sessions", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = api.chunk(&sid2, "0", &[1u8; 10]).await.unwrap();
    assert_eq!(res.status(), StatusCode::GONE);
}

#[tokio::test]
async fn sessions_expire_after_their_ttl() {
    let emu = emulator(EmulatorOptions {
        session_ttl: Duration::from_millis(300),
        ..EmulatorOptions::default()
    })
    .await;
    let api = Api::new(&emu);
    let sid = api.start_ok(&start_body("m.tar", 20, 2)).await;
    api.chunk_ok(&sid, 0, &[1u8; 10]).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let res = api.chunk(&sid, "1", &[1u8; 10]).await.unwrap();
    assert_eq!(res.status(), StatusCode::GONE);
    assert!(session(&emu.report(), &sid).expired);
}

#[tokio::test]
async fn a_clock_behind_answers_past_expiration_dates_but_takes_chunks() {
    let emu = emulator(EmulatorOptions {
        clock_behind: Duration::from_secs(3600),
        ..EmulatorOptions::default()
    })
    .await;
    let api = Api::new(&emu);
    let res = api.start(&start_body("m.tar", 10, 1)).await;
    assert_eq!(res.status(), StatusCode::OK);
    let v: Value = res.json().await.unwrap();
    let expiry = humantime::parse_rfc3339(v["expirationDate"].as_str().unwrap()).unwrap();
    assert!(expiry < std::time::SystemTime::now(), "{v}");
    let sid = v["sessionId"].as_str().unwrap();
    api.chunk_ok(sid, 0, &[1u8; 10]).await;
    assert!(!session(&emu.report(), sid).expired);
}

#[tokio::test]
async fn lost_ack_stores_the_chunk_then_answers_502() {
    let emu = emulator(EmulatorOptions {
        lost_ack_rate: 1.0,
        ..EmulatorOptions::default()
    })
    .await;
    let api = Api::new(&emu);
    let sid = api.start_ok(&start_body("m.tar", 10, 1)).await;
    let res = api.chunk(&sid, "0", &[3u8; 10]).await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
    assert!(!message(res).await.is_empty());
    let s = session(&emu.report(), &sid);
    assert_eq!(s.chunks[&0].times_received, 1);
    assert_eq!(s.chunks[&0].sha256, sha_hex(&[3u8; 10]));

    emu.set_faults(FaultRates::default());
    api.chunk_ok(&sid, 0, &[3u8; 10]).await;
    let r = emu.report();
    let s = session(&r, &sid);
    assert_eq!((s.chunk_posts_stored, s.duplicates), (2, 1));
    assert_eq!(r.faults.lost_ack, 1);
    api.complete_ok(&sid).await;
}

#[tokio::test]
async fn reset_is_a_transport_error_and_stores_nothing() {
    let emu = emulator(EmulatorOptions {
        reset_rate: 1.0,
        ..EmulatorOptions::default()
    })
    .await;
    let api = Api::new(&emu);
    let big = model_tar(1024 * 1024);
    let sid = api.start_ok(&start_body("m.tar", big.len(), 2)).await;
    for data in [&big[..100], &big[..]] {
        match api.chunk(&sid, "0", data).await {
            Ok(res) => panic!("expected a transport error, got {}", res.status()),
            Err(err) => assert!(err.status().is_none(), "{err}"),
        }
    }
    let r = emu.report();
    assert_eq!(r.faults.reset, 2);
    let s = session(&r, &sid);
    assert!(s.chunks.is_empty());
    assert_eq!(s.chunk_posts_stored, 0);

    // The emulator itself is unharmed.
    emu.set_faults(FaultRates::default());
    api.chunk_ok(&sid, 0, &big[..100]).await;
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let emu = emulator(EmulatorOptions {
        rate_limit_rate: 1.0,
        retry_after: Duration::from_secs(3),
        ..EmulatorOptions::default()
    })
    .await;
    let api = Api::new(&emu);
    let res = api.start(&start_body("m.tar", 10, 1)).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(res.headers()["retry-after"], "3");
    assert!(!message(res).await.is_empty());
    let res = api.dock("ds-x").await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(emu.report().faults.rate_limit, 2);
}

#[tokio::test]
async fn fail_rate_answers_500_on_every_endpoint() {
    let emu = emulator(EmulatorOptions::default()).await;
    let api = Api::new(&emu);
    let sid = api.start_ok(&start_body("m.tar", 10, 1)).await;
    // Set over HTTP, as a separate process would.
    let res = api
        .http
        .post(format!("{}/_emulator/faults", api.base))
        .json(&json!({"fail_rate": 1.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        api.start(&start_body("m.tar", 10, 1)).await.status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    let res = api.chunk(&sid, "0", &[1u8; 10]).await.unwrap();
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!message(res).await.is_empty());
    assert_eq!(
        api.complete(&sid).await.status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(
        api.dock("ds-x").await.status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    let r = emu.report();
    assert_eq!(r.faults.fail, 4);
    assert!(session(&r, &sid).chunks.is_empty());
}

#[tokio::test]
async fn latency_delays_every_answer() {
    let emu = emulator(EmulatorOptions {
        latency: Duration::from_millis(150),
        ..EmulatorOptions::default()
    })
    .await;
    let api = Api::new(&emu);
    let started = Instant::now();
    api.start_ok(&start_body("m.tar", 10, 1)).await;
    assert!(started.elapsed() >= Duration::from_millis(150));
}
