//! End-to-end tests of the emulator over real HTTP on loopback, with a
//! plain reqwest client (not the project's platform client: the emulator is
//! checked against the contract, not against the code it will judge).

mod faults;
mod imports;
mod lifecycle;
mod validation;

use std::time::{Duration, Instant};

use reqwest::multipart::{Form, Part};
use reqwest::{Client, Response, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{start, EmulatorHandle, EmulatorOptions, Report, SessionReport};

pub(super) const KEY: &str = "test-key-123";

/// Upper bound for every wait in these tests.
const DEADLINE: Duration = Duration::from_secs(15);

async fn emulator(opts: EmulatorOptions) -> EmulatorHandle {
    start("127.0.0.1:0".parse().expect("literal address"), opts)
        .await
        .expect("emulator starts on loopback")
}

/// A tar archive holding `files`, built in memory.
fn tar_bytes(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, *data).expect("in-memory tar");
    }
    b.into_inner().expect("in-memory tar")
}

/// A model-like tar of roughly `payload` bytes of non-repeating data.
fn model_tar(payload: usize) -> Vec<u8> {
    let weights: Vec<u8> = (0..payload).map(|i| (i * 31 % 251) as u8).collect();
    tar_bytes(&[
        ("config.json", b"{\"arch\":\"test\"}"),
        ("weights.bin", &weights),
    ])
}

fn sha_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn start_body(name: &str, size: usize, chunks: usize) -> Value {
    json!({
        "fileContext": "model",
        "totalChunks": chunks,
        "fileExtension": "tar",
        "fileName": name,
        "fileSize": size,
        "isAdapter": false,
    })
}

/// A client of the emulator's platform endpoints with a fixed key.
struct Api {
    base: String,
    key: String,
    http: Client,
}

impl Api {
    fn new(emu: &EmulatorHandle) -> Self {
        Self {
            base: emu.base_url(),
            key: KEY.to_owned(),
            http: Client::builder()
                .timeout(DEADLINE)
                .build()
                .expect("reqwest client"),
        }
    }

    fn with_key(mut self, key: &str) -> Self {
        self.key = key.to_owned();
        self
    }

    async fn start(&self, body: &Value) -> Response {
        self.http
            .post(format!("{}/api/public/files/session/start", self.base))
            .header("x-api-key", &self.key)
            .json(body)
            .send()
            .await
            .expect("start request is answered")
    }

    /// Starts a session and answers its id.
    async fn start_ok(&self, body: &Value) -> String {
        let res = self.start(body).await;
        assert_eq!(res.status(), StatusCode::OK);
        let v: Value = res.json().await.expect("JSON answer");
        v["sessionId"].as_str().expect("sessionId").to_owned()
    }

    /// Sends one chunk as the contract's form; a transport error is returned
    /// as such.
    async fn chunk(&self, sid: &str, number: &str, data: &[u8]) -> reqwest::Result<Response> {
        let part = Part::bytes(data.to_vec())
            .file_name("model.tar")
            .mime_str("application/octet-stream")?;
        let form = Form::new()
            .part("file", part)
            .text("chunkNumber", number.to_owned());
        self.send_form(sid, form).await
    }

    async fn send_form(&self, sid: &str, form: Form) -> reqwest::Result<Response> {
        self.http
            .post(format!("{}/api/public/files/session/{sid}", self.base))
            .header("x-api-key", &self.key)
            .multipart(form)
            .send()
            .await
    }

    async fn chunk_ok(&self, sid: &str, n: usize, data: &[u8]) {
        let res = self
            .chunk(sid, &n.to_string(), data)
            .await
            .expect("chunk request is answered");
        assert_eq!(res.status(), StatusCode::OK, "chunk {n}");
        let v: Value = res.json().await.expect("JSON answer");
        assert_eq!(v, json!({"chunkNumber": n.to_string(), "sessionId": sid}));
    }

    /// Uploads `data` in chunks of `size` bytes, last chunk first.
    async fn upload_all(&self, sid: &str, data: &[u8], size: usize) {
        let chunks: Vec<&[u8]> = data.chunks(size).collect();
        for (n, c) in chunks.iter().enumerate().rev() {
            self.chunk_ok(sid, n, c).await;
        }
    }

    async fn complete(&self, sid: &str) -> Response {
        self.http
            .post(format!(
                "{}/api/public/files/session/{sid}/complete",
                self.base
            ))
            .header("x-api-key", &self.key)
            .send()
            .await
            .expect("complete request is answered")
    }

    /// Completes and answers the dock status id.
    async fn complete_ok(&self, sid: &str) -> String {
        let res = self.complete(sid).await;
        assert_eq!(res.status(), StatusCode::OK);
        let v: Value = res.json().await.expect("JSON answer");
        assert_eq!(v["status"], "IN_PROGRESS");
        v["dock-statusId"]
            .as_str()
            .expect("dock-statusId")
            .to_owned()
    }

    async fn dock(&self, id: &str) -> Response {
        self.http
            .get(format!("{}/api/public/dock-status/{id}", self.base))
            .header("x-api-key", &self.key)
            .send()
            .await
            .expect("dock status request is answered")
    }

    async fn dock_json(&self, id: &str) -> Value {
        let res = self.dock(id).await;
        assert_eq!(res.status(), StatusCode::OK);
        res.json().await.expect("JSON answer")
    }

    /// Polls until SUCCESS or FAILED; answers the IN_PROGRESS answers seen
    /// and the final answer.
    async fn poll_final(&self, id: &str) -> (usize, Value) {
        let started = Instant::now();
        for seen in 0..200 {
            let v = self.dock_json(id).await;
            if v["status"] != "IN_PROGRESS" {
                return (seen, v);
            }
            assert!(started.elapsed() < DEADLINE, "import never ended");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("import never ended");
    }
}

/// The message of a JSON error answer.
async fn message(res: Response) -> String {
    let v: Value = res.json().await.expect("JSON error body");
    v["message"].as_str().expect("message field").to_owned()
}

/// Waits until the session's import has ended (assembly done) by the report.
async fn wait_import_end(emu: &EmulatorHandle, sid: &str) -> SessionReport {
    let started = Instant::now();
    loop {
        let r = emu.report();
        let s = r.session(sid).expect("session in report").clone();
        if matches!(
            s.status,
            Some(super::ImportStatus::Success | super::ImportStatus::Failed)
        ) {
            return s;
        }
        assert!(started.elapsed() < DEADLINE, "assembly never ended");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn handle_and_futures_can_cross_tasks() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: &T) {}
    let opts = EmulatorOptions::default;
    let addr: std::net::SocketAddr = "127.0.0.1:0".parse().expect("literal address");
    send(&start(addr, opts()));
    send(&super::serve_until(addr, opts(), async {}));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let emu = emulator(opts()).await;
        send_sync(&emu);
        send(&emu.shutdown());
    });
}

fn session(report: &Report, sid: &str) -> SessionReport {
    report.session(sid).expect("session in report").clone()
}
