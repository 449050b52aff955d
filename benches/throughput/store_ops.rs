//! The store's two hot operations on each backend: claiming a job (taking
//! it for this process: SQLite's per-job lock file, PostgreSQL's lease
//! `UPDATE ... FOR UPDATE SKIP LOCKED`) and acknowledging a chunk (one
//! transaction with a hash checkpoint). PostgreSQL rows run on a throwaway
//! cluster on 127.0.0.1 with fsync on, as SQLite runs with
//! `synchronous=FULL`; without its server binaries the row fails under
//! `CI=true` and is skipped (saying so) elsewhere.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use modelferry::job::{ChunkAck, ChunkChecksum, HashCheckpoint, NewJob, SessionRecord};
use modelferry::secret::Secret;
use modelferry::source::FileIdentity;
use modelferry::store::{FleetOptions, Store};
use modelferry_pg_cluster::{Cluster, PASSWORD};

/// Median and 99th percentile of one operation.
pub struct OpTiming {
    pub median: Duration,
    pub p99: Duration,
}

fn timing(mut v: Vec<Duration>) -> OpTiming {
    v.sort();
    OpTiming {
        median: v[v.len() / 2],
        p99: v[(v.len() * 99 / 100).min(v.len() - 1)],
    }
}

/// Claim and chunk acknowledgement on one store, `n` of each.
async fn measure_store(store: &Store, n: u64) -> anyhow::Result<(OpTiming, OpTiming)> {
    let mut ids = Vec::new();
    for i in 0..n {
        let new = NewJob {
            path: PathBuf::from(format!("/drop/bench-{i}.tar")),
            identity: FileIdentity {
                dev: 1,
                ino: 1000 + i,
                size: 1 << 30,
                mtime_ns: i as i64,
            },
            file_context: "model".into(),
            is_adapter: false,
            chunk_size: 8 << 20,
            watch_dir: Some(PathBuf::from("/drop")),
        };
        ids.push(store.admit(&new).await?);
    }
    let mut claims = Vec::new();
    let mut holds = Vec::new();
    for &id in &ids {
        let t = Instant::now();
        holds.push(store.hold(id).await?);
        claims.push(t.elapsed());
    }
    // Only the job acknowledged stays held: in PostgreSQL every held job
    // has its lease renewed, which would load the acknowledgements.
    let hold = holds.swap_remove(0);
    for h in holds {
        store.release(h).await;
    }
    let id = ids[0];
    let session = SessionRecord {
        session_id: "bench".into(),
        started_at: SystemTime::now(),
        expires_at: None,
    };
    store.start_session(id, &hold, &session, "m").await?;
    // A saved SHA-256 state is about this size.
    let state = vec![7u8; 112];
    let mut acks = Vec::new();
    for i in 0..n {
        let ack = ChunkAck {
            index: i,
            size: 8 << 20,
            checksum: ChunkChecksum::Xxh3(i),
        };
        let cp = HashCheckpoint {
            chunks: i + 1,
            state: state.clone(),
        };
        let t = Instant::now();
        store.ack_chunk(id, &hold, "bench", &ack, Some(&cp)).await?;
        acks.push(t.elapsed());
    }
    store.release(hold).await;
    Ok((timing(claims), timing(acks)))
}

/// Lines for the report: SQLite, then PostgreSQL (or why it was skipped).
pub async fn measure(dir: &Path, n: u64) -> anyhow::Result<Vec<String>> {
    let mut lines = Vec::new();
    let fmt = |name: &str, (claim, ack): (OpTiming, OpTiming)| {
        format!(
            "  {name:<34} claim median {:>7.0} µs, p99 {:>7.0} µs; chunk ack median {:>7.0} µs, p99 {:>7.0} µs",
            claim.median.as_secs_f64() * 1e6,
            claim.p99.as_secs_f64() * 1e6,
            ack.median.as_secs_f64() * 1e6,
            ack.p99.as_secs_f64() * 1e6,
        )
    };
    let sqlite = Store::open(dir.join("store-ops")).await?;
    lines.push(fmt(
        "SQLite (synchronous=FULL)",
        measure_store(&sqlite, n).await?,
    ));
    // Cluster::start decides: under CI=true missing server binaries fail
    // the run, elsewhere the row is skipped (and says so).
    let Some(cluster) = Cluster::start("store operations benchmark") else {
        lines.push(
            "  PostgreSQL                         skipped: server binaries not installed".into(),
        );
        return Ok(lines);
    };
    let store = Store::connect(FleetOptions {
        url: cluster.database(),
        password: Some(Secret::new(PASSWORD)),
        instance: "bench".into(),
        lease: Duration::from_secs(30),
    })
    .await?;
    lines.push(fmt(
        "PostgreSQL 127.0.0.1 (fsync on)",
        measure_store(&store, n).await?,
    ));
    Ok(lines)
}
