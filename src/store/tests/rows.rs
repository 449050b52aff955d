use crate::job::{Filing, FilingState, Job};

use super::*;
use crate::store::rows::{from_ms, job_columns, job_from_row, job_select_reversed};

/// A row with every column set, each to a value no other column has, and
/// the job it must read as: a field read from the wrong column shows.
const FULL_ROW: &str = "INSERT INTO jobs (id, path, file_name, dev, ino, size, mtime_ns, \
    file_context, is_adapter, chunk_size, chunks_total, state, session_id, session_started_at, \
    session_expires_at, sessions_started, model_id, dock_status_id, sha256, hashed_chunks, \
    hash_state, error, error_stage, http_status, platform_message, attempts, next_retry_at, \
    watch_dir, created_at, updated_at, started_at, finished_at, filing, filing_dest, \
    filing_error, filed_at, pruned, duplicate_of) VALUES (7, '/drop/a.tar', 'a.tar', 11, 12, 5000, 13, 'adapter-ctx', \
    1, 2048, 3, 'failed', 'sess-1', 1001, 1002, 4, 'cm-9', 'ds-9', 'sha-9', 2, X'0a0b', \
    'boom', 'complete', 503, 'platform says no', 6, 1003, '/drop', 1004, 1005, 1006, 1007, \
    'pending', '/failed/a.tar', 'disk full', 1008, 1, 3)";

fn full_job() -> Job {
    Job {
        id: 7,
        path: "/drop/a.tar".into(),
        file_name: "a.tar".into(),
        identity: FileIdentity {
            dev: 11,
            ino: 12,
            size: 5000,
            mtime_ns: 13,
        },
        file_context: "adapter-ctx".into(),
        is_adapter: true,
        chunk_size: 2048,
        chunks_total: 3,
        state: JobState::Failed,
        session: Some(SessionRecord {
            session_id: "sess-1".into(),
            started_at: from_ms(1001),
            expires_at: Some(from_ms(1002)),
        }),
        sessions_started: 4,
        model_id: Some("cm-9".into()),
        dock_status_id: Some("ds-9".into()),
        sha256: Some("sha-9".into()),
        hash_checkpoint: Some(HashCheckpoint {
            chunks: 2,
            state: vec![0x0a, 0x0b],
        }),
        error: Some("boom".into()),
        error_stage: Some(Stage::Complete),
        http_status: Some(503),
        platform_message: Some("platform says no".into()),
        attempts: 6,
        next_retry_at: Some(from_ms(1003)),
        watch_dir: Some("/drop".into()),
        created_at: from_ms(1004),
        updated_at: from_ms(1005),
        started_at: Some(from_ms(1006)),
        finished_at: Some(from_ms(1007)),
        chunks_done: 2,
        bytes_done: 2048 + 952,
        filing: Some(Filing {
            state: FilingState::Pending,
            dest: Some("/failed/a.tar".into()),
            filed_at: Some(from_ms(1008)),
        }),
        filing_error: Some("disk full".into()),
        pruned: true,
        duplicate_of: Some(3),
        instance: None,
    }
}

async fn with_full_row(s: &Store) {
    s.with_sqlite(|db| {
        db.conn.execute_batch(FULL_ROW)?;
        db.conn.execute_batch(
            "INSERT INTO chunks (job_id, idx, size, sha256, acked_at) VALUES \
             (7, 0, 2048, 'c0', 1), (7, 2, 952, 'c2', 1)",
        )?;
        Ok(())
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_job_reads_back_field_by_field_by_column_name() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path()).await;
    with_full_row(&s).await;
    assert_eq!(s.job(7).await.unwrap(), full_job());
    assert_eq!(
        s.acked_chunks(7).await.unwrap(),
        [
            ChunkAck {
                index: 0,
                size: 2048,
                checksum: ChunkChecksum::Sha256("c0".into())
            },
            ChunkAck {
                index: 2,
                size: 952,
                checksum: ChunkChecksum::Sha256("c2".into())
            }
        ]
    );
    // The same row with its columns in reverse order reads the same.
    let reversed = s
        .with_sqlite(|db| {
            let sql = format!(
                "SELECT {} FROM jobs j WHERE j.id = 7",
                job_select_reversed()
            );
            let mut stmt = db.conn.prepare(&sql)?;
            let mut rows = stmt.query([])?;
            let row = rows.next()?.expect("job 7 is there");
            job_from_row(row)
        })
        .await
        .unwrap();
    assert_eq!(reversed, full_job());
}

#[test]
fn every_column_of_the_schema_is_read() {
    let conn = rusqlite::Connection::open_in_memory().unwrap();
    for m in migrations::MIGRATIONS {
        conn.execute_batch(m).unwrap();
    }
    let mut stmt = conn
        .prepare("SELECT name FROM pragma_table_info('jobs')")
        .unwrap();
    let schema: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut read: Vec<&str> = job_columns().to_vec();
    read.sort();
    let mut schema: Vec<&str> = schema.iter().map(String::as_str).collect();
    schema.sort();
    assert_eq!(read, schema);
}

#[tokio::test]
async fn an_unknown_state_or_stage_is_corruption_naming_the_job() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path()).await;
    for (column, value) in [
        ("state", "done"),
        ("error_stage", "later"),
        ("filing", "maybe"),
    ] {
        with_full_row(&s).await;
        let sql = format!("UPDATE jobs SET {column} = '{value}' WHERE id = 7");
        s.with_sqlite(move |db| Ok(db.conn.execute_batch(&sql)?))
            .await
            .unwrap();
        let e = s.job(7).await.unwrap_err();
        assert!(
            matches!(&e, StoreError::Corrupt { job: 7, detail } if detail.contains(value)),
            "{column}: {e:?}"
        );
        s.with_sqlite(|db| Ok(db.conn.execute_batch("DELETE FROM jobs")?))
            .await
            .unwrap();
    }
}
