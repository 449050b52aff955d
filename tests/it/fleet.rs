//! Fleet mode against a real PostgreSQL: several `modelferry run`
//! processes (instances) share one drop folder and one database. A file is
//! imported once however many instances see it; an instance killed
//! mid-upload has its job finished by another after the lease, in the same
//! session; an instance frozen past its lease sends nothing more for the
//! job it lost and files nothing. The database password appears nowhere.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use modelferry::secret::Secret;
use modelferry::store::{FleetOptions, Store};
use modelferry_emulator::EmulatorOptions;
use modelferry_pg_cluster::{Cluster, PASSWORD};
use serde_json::Value;
use tokio::process::Command;

use crate::support::{file_name, make_tar, run, Env, Proc, Run, Settings};

/// Short, so takeovers happen within a test's patience.
const LEASE: &str = "3s";

struct Fleet {
    env: Env,
    cluster: Cluster,
    url: url::Url,
    password_file: PathBuf,
}

impl Fleet {
    async fn start(test: &str, latency_ms: u64, parallel_chunks: usize) -> Option<Fleet> {
        let cluster = Cluster::start(test)?;
        let url = cluster.database();
        let opts = EmulatorOptions {
            latency: Duration::from_millis(latency_ms),
            ..Default::default()
        };
        let settings = Settings {
            chunk_size: 64 * 1024,
            parallel_chunks,
            parallel_files: 1,
            extra: String::new(),
        };
        let env = Env::daemon_env(opts, settings, "").await;
        let password_file = cluster.password_file(env.dir.path());
        let fleet = Fleet {
            env,
            cluster,
            url,
            password_file,
        };
        // The schema first, as `run` would make it (read-only commands
        // never migrate): the test's own queries then never meet a missing
        // table, so an SQL error is a real one.
        let opts = FleetOptions {
            url: fleet.url.clone(),
            password: Some(Secret::new(PASSWORD)),
            instance: "test-setup".into(),
            lease: Duration::from_secs(30),
        };
        drop(Store::connect(opts).await.expect("the fleet's schema"));
        Some(fleet)
    }

    /// The binary, pointed at the fleet's database through the environment.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = self.env.command(args);
        cmd.env("MODELFERRY__STATE__URL", self.url.as_str())
            .env("MODELFERRY__STATE__PASSWORD_FILE", &self.password_file);
        cmd
    }

    /// `modelferry run` as instance `name`, with its own state folder.
    fn instance(&self, name: &str) -> Proc {
        let cfg = self.env.config.to_str().unwrap().to_string();
        let mut cmd = self.command(&["run", "-c", &cfg]);
        cmd.env("MODELFERRY__FLEET__INSTANCE", name)
            .env("MODELFERRY__FLEET__LEASE", LEASE)
            .env(
                "MODELFERRY__STATE__DIR",
                self.env.path(&format!("state-{name}")),
            );
        Proc::spawn(cmd)
    }

    async fn status(&self) -> Vec<Value> {
        let cfg = self.env.config.to_str().unwrap().to_string();
        let r = run(self.command(&["status", "-c", &cfg, "--json"])).await;
        assert_eq!(r.code, 0, "status failed: {}", r.stderr);
        no_password(&r);
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout))
    }

    /// One value of SQL run on the fleet's database (the test's own eyes):
    /// `None` when there is no row; an SQL error fails the test (`start`
    /// made the schema, so none is expected).
    fn query(&self, sql: &str) -> Option<String> {
        let out = self.cluster.sql_in(&self.url, sql);
        let out = out.trim();
        (!out.is_empty()).then(|| out.to_string())
    }

    /// The job some instance is uploading right now, past its first chunk:
    /// (job id, instance).
    fn uploading(&self, min_chunks: u32) -> Option<(i64, String)> {
        let row = self.query(&format!(
            "SELECT j.id || ' ' || j.instance FROM jobs j WHERE j.state = 'uploading' \
             AND j.lease_expires_at > now() AND j.chunks_total > {min_chunks} + 2 \
             AND (SELECT count(*) FROM chunks c WHERE c.job_id = j.id) >= {min_chunks} \
             ORDER BY j.id LIMIT 1"
        ))?;
        let (id, instance) = row.split_once(' ').expect("id and instance");
        Some((id.parse().expect("a job id"), instance.to_string()))
    }

    fn receipts(&self) -> usize {
        Env::names(&self.env.done_dir())
            .iter()
            .filter(|n| n.ends_with(".receipt.json"))
            .count()
    }
}

fn no_password(r: &Run) {
    assert!(
        !r.all().contains(PASSWORD),
        "the database password appeared in the output:\n{}",
        r.all()
    );
}

/// Sends `signal` (STOP, CONT) to `pid` with kill(1).
async fn signal(pid: u32, signal: &str) {
    let st = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .await
        .unwrap();
    assert!(st.success(), "kill -{signal} {pid}");
}

async fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `n` receipts are in the done folder; on timeout prints the
/// jobs table and what every instance in `procs` said, then fails.
async fn await_receipts(f: &Fleet, n: usize, limit: Duration, procs: &mut Vec<Proc>) {
    let start = Instant::now();
    while f.receipts() != n {
        if start.elapsed() > limit {
            println!(
                "DB: {:?}",
                f.query("SELECT id, state, instance, lease_token, lease_expires_at, filing, now() FROM jobs ORDER BY id")
            );
            for p in procs.drain(..) {
                p.sigterm();
                println!("--- an instance said:\n{}", p.finish().await.all());
            }
            panic!("{} receipts of {n}", f.receipts());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn job_by_id(jobs: &[Value], id: i64) -> &Value {
    jobs.iter()
        .find(|j| j["id"] == id)
        .unwrap_or_else(|| panic!("job {id} in status"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_import_each_file_once_and_finish_a_killed_ones_jobs() {
    let Some(f) = Fleet::start(
        "three_instances_import_each_file_once_and_finish_a_killed_ones_jobs",
        60,
        2,
    )
    .await
    else {
        return;
    };
    let mut names = Vec::new();
    for i in 0..12 {
        let p = f.env.drop_dir().join(format!("model-{i:02}.tar"));
        make_tar(&p, 1 << 20, i);
        names.push(file_name(&p));
    }
    let a = f.instance("a");
    let b = f.instance("b");
    let c = f.instance("c");

    // Kill whichever instance is mid-upload first.
    let (killed_job, holder) = wait_for(Duration::from_secs(60), "an upload under way", || {
        f.uploading(1)
    })
    .await;
    let (victim, others) = match holder.as_str() {
        "a" => (a, [b, c]),
        "b" => (b, [a, c]),
        _ => (c, [a, b]),
    };
    let killed = victim.kill9().await;
    no_password(&killed);

    let mut others = Vec::from(others);
    await_receipts(&f, 12, Duration::from_secs(90), &mut others).await;
    let jobs = f.status().await;
    assert_eq!(jobs.len(), 12, "one job per file: {jobs:#?}");
    for j in &jobs {
        assert_eq!(j["state"], "succeeded", "{j:#}");
        assert!(
            j["instance"].is_string(),
            "status names the instance: {j:#}"
        );
    }
    let taken = job_by_id(&jobs, killed_job);
    assert_ne!(
        taken["instance"],
        holder.as_str(),
        "finished by another instance"
    );

    // The platform imported every file exactly once; the killed job's
    // session was resumed, not replaced.
    let report = f.env.report();
    for name in &names {
        let completed = report
            .sessions_for_file(name)
            .iter()
            .filter(|s| s.completed)
            .count();
        assert_eq!(completed, 1, "{name} imported once");
    }
    let killed_name = taken["file_name"].as_str().unwrap();
    let sessions = report.sessions_for_file(killed_name);
    assert_eq!(sessions.len(), 1, "{killed_name}: the same session resumed");
    assert_eq!(
        Some(sessions[0].session_id.as_str()),
        taken["session_id"].as_str()
    );
    assert!(Env::names(&f.env.drop_dir()).is_empty());

    for p in others {
        p.sigterm();
        let r = p.finish().await;
        assert_eq!(r.code, 0, "{}", r.all());
        no_password(&r);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_frozen_past_its_lease_sends_nothing_more_and_files_nothing() {
    let Some(f) = Fleet::start(
        "an_instance_frozen_past_its_lease_sends_nothing_more_and_files_nothing",
        80,
        1,
    )
    .await
    else {
        return;
    };
    let p = f.env.drop_dir().join("big.tar");
    make_tar(&p, 4 << 20, 7);
    let a = f.instance("a");
    let b = f.instance("b");
    let (id, holder) = wait_for(Duration::from_secs(60), "the upload under way", || {
        f.uploading(2)
    })
    .await;
    let (frozen, other) = if holder == "a" { (a, b) } else { (b, a) };
    signal(frozen.pid(), "STOP").await;

    // The other instance takes the job over after the lease and finishes it.
    let mut procs = vec![other];
    await_receipts(&f, 1, Duration::from_secs(90), &mut procs).await;
    let other = procs.pop().unwrap();
    let jobs = f.status().await;
    let job = job_by_id(&jobs, id);
    assert_eq!(job["state"], "succeeded");
    assert_ne!(job["instance"], holder.as_str());
    let before = f.env.report().requests.chunk;

    // Resumed, the frozen instance must not send for the job it lost. A
    // request it had on the wire when frozen may still complete (one:
    // parallel_chunks = 1); nothing new may start.
    signal(frozen.pid(), "CONT").await;
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_secs(3) {
        let sent = f.env.report().requests.chunk - before;
        assert!(
            sent <= 1,
            "the frozen instance sent {sent} chunks after resuming"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let report = f.env.report();
    let sessions = report.sessions_for_file("big.tar");
    assert_eq!(sessions.len(), 1, "the same session, taken over");
    assert_eq!(sessions[0].complete_calls, 1);
    assert_eq!(f.receipts(), 1);

    frozen.sigterm();
    let r = frozen.finish().await;
    no_password(&r);
    assert!(
        !r.stderr.contains("filed"),
        "the frozen instance filed:\n{}",
        r.stderr
    );
    assert!(!r.stderr.contains("import succeeded"), "{}", r.stderr);
    assert!(
        r.stderr.contains("lease"),
        "the frozen instance says it lost the lease:\n{}",
        r.stderr
    );
    other.sigterm();
    let r = other.finish().await;
    assert!(r.stderr.contains("filed"), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_seeing_one_new_file_make_one_job() {
    let Some(f) = Fleet::start("two_instances_seeing_one_new_file_make_one_job", 0, 4).await else {
        return;
    };
    let a = f.instance("a");
    let b = f.instance("b");
    // Both running and watching; the file appears at once (a rename).
    wait_for(Duration::from_secs(30), "both instances connected", || {
        let n: u32 = f
            .query(
                "SELECT count(DISTINCT application_name) FROM pg_stat_activity \
                 WHERE application_name IN ('modelferry a', 'modelferry b')",
            )
            .expect("a count is one row")
            .parse()
            .expect("a count");
        (n >= 2).then_some(())
    })
    .await;
    let tmp = f.env.drop_dir().join("new.tar.part");
    make_tar(&tmp, 256 << 10, 3);
    std::fs::rename(&tmp, f.env.drop_dir().join("new.tar")).unwrap();
    let mut procs = vec![a, b];
    await_receipts(&f, 1, Duration::from_secs(60), &mut procs).await;
    let jobs = f.status().await;
    assert_eq!(jobs.len(), 1, "{jobs:#?}");
    assert_eq!(f.env.report().sessions_for_file("new.tar").len(), 1);
    for p in procs {
        p.sigterm();
        no_password(&p.finish().await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reaches_the_fleet_database_and_reports_its_schema_version() {
    let Some(f) = Fleet::start("check_reaches_the_fleet_database", 0, 2).await else {
        return;
    };
    let cfg = f.env.config.to_str().unwrap().to_string();
    let r = run(f.command(&["check", "-c", &cfg])).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("schema version"), "{}", r.stdout);
    no_password(&r);

    // A database that does not answer is a problem, named without the password.
    let mut cmd = f.command(&["check", "-c", &cfg]);
    cmd.env(
        "MODELFERRY__STATE__URL",
        "postgresql://modelferry@127.0.0.1:1/modelferry",
    );
    let r = run(cmd).await;
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("database"), "{}", r.stderr);
    no_password(&r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_in_fleet_mode_consults_the_shared_database() {
    let Some(f) = Fleet::start("dry_run_in_fleet_mode", 0, 2).await else {
        return;
    };
    let cfg = f.env.config.to_str().unwrap().to_string();
    let first = f.env.path("first.tar");
    make_tar(&first, 150_000, 21);
    let r = run(f.command(&["upload", "-c", &cfg, first.to_str().unwrap(), "--quiet"])).await;
    assert_eq!(r.code, 0, "{}", r.all());
    no_password(&r);
    // The same bytes under another name: the plan says it is imported.
    let copy = f.env.path("copy.tar");
    std::fs::copy(&first, &copy).unwrap();
    let r = run(f.command(&[
        "upload",
        "-c",
        &cfg,
        copy.to_str().unwrap(),
        "--dry-run",
        "--json",
    ]))
    .await;
    assert_eq!(r.code, 0, "{}", r.all());
    no_password(&r);
    let plan: Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert_eq!(plan["already_imported"], true, "{plan}");
    assert_eq!(plan["would_upload"], false, "{plan}");
}
