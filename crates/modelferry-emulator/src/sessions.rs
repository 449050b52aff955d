//! Session transitions: start, store a chunk, complete, reveal the import's
//! status, expire. Each runs under the sessions lock and, outside discard
//! mode, writes what it changed before the lock is released, so the disk
//! never disagrees with a later answer. Callers on the runtime go through
//! [`Emulator::blocking`].

use std::fs;
use std::io;
use std::path::Path;

use super::persist::{self, ImportRecord, Outcome, SessionMeta};
use super::report::ChunkReport;
use super::state::{format_ms, new_id, now_ms, Emulator, Session};
use super::wire::{
    ApiError, CompleteAnswer, DockStatusAnswer, ImportStatus, StartAnswer, StartRequest, ACTION,
    JOB_TYPE,
};

/// How many missing chunk numbers a 400 lists before "...".
const MISSING_LISTED: usize = 20;

impl Emulator {
    /// Reads the sessions kept in `data_dir` (blocking). Returns the ids of
    /// sessions completed but not yet assembled, whose assembly must resume.
    pub fn load(&self) -> io::Result<Vec<String>> {
        let Some(dir) = &self.data_dir else {
            return Ok(Vec::new());
        };
        let loaded = persist::load_all(dir)?;
        let mut table = self.sessions();
        let mut resume = Vec::new();
        for l in loaded {
            let s = Session::from(l);
            table.next_seq = table.next_seq.max(s.meta.seq + 1);
            if let Some(imp) = &s.meta.import {
                table
                    .by_dock
                    .insert(imp.dock_status_id.clone(), s.meta.session_id.clone());
                if imp.outcome.is_none() {
                    resume.push(s.meta.session_id.clone());
                }
            }
            table.by_id.insert(s.meta.session_id.clone(), s);
        }
        Ok(resume)
    }

    /// Persists a session's metadata; a no-op in discard mode.
    fn persist(&self, s: &Session) -> io::Result<()> {
        match &self.data_dir {
            Some(dir) => persist::write_meta(dir, &s.meta),
            None => Ok(()),
        }
    }

    /// Like [`Self::persist`] where the answer does not depend on it: the
    /// change stays in memory and the failure is logged.
    fn persist_or_warn(&self, s: &Session) {
        if let Err(err) = self.persist(s) {
            tracing::warn!(session_id = %s.meta.session_id, error = %err, "emulator: cannot save session");
        }
    }

    pub fn create_session(&self, start: StartRequest) -> Result<StartAnswer, ApiError> {
        let now = now_ms();
        let ttl_ms = u64::try_from(self.opts.session_ttl.as_millis()).unwrap_or(u64::MAX);
        let behind_ms = u64::try_from(self.opts.clock_behind.as_millis()).unwrap_or(u64::MAX);
        let mut table = self.sessions();
        let seq = table.next_seq;
        table.next_seq += 1;
        let session = Session {
            meta: SessionMeta {
                seq,
                session_id: new_id("sess"),
                model_id: new_id("cm"),
                start,
                started_at_ms: now,
                expires_at_ms: now.saturating_add(ttl_ms),
                expired: false,
                complete_calls: 0,
                import: None,
            },
            chunks: Default::default(),
            stored_posts: 0,
            duplicates: 0,
        };
        self.persist(&session)
            .map_err(|e| ApiError::internal(format!("emulator cannot save the session: {e}")))?;
        let answer = StartAnswer {
            session_id: session.meta.session_id.clone(),
            // The date as a clock `clock_behind` slow reads the real expiry.
            expiration_date: format_ms(session.meta.expires_at_ms.saturating_sub(behind_ms)),
            model_id: session.meta.model_id.clone(),
        };
        tracing::debug!(session_id = %answer.session_id, "emulator: session started");
        table.by_id.insert(answer.session_id.clone(), session);
        Ok(answer)
    }

    /// Whether the session takes chunks now; answers its `totalChunks`.
    pub fn accepting(&self, session_id: &str) -> Result<u64, ApiError> {
        let table = self.sessions();
        let s = table
            .by_id
            .get(session_id)
            .ok_or_else(|| ApiError::not_found("session not found"))?;
        check_accepting(s)?;
        Ok(s.meta.start.total_chunks)
    }

    /// Records a received chunk: moves `tmp` (outside discard mode) to its
    /// final name and appends it to the journal, all under the lock so the
    /// last copy on disk is the last one recorded.
    pub fn commit_chunk(
        &self,
        session_id: &str,
        n: u64,
        size: u64,
        sha256: String,
        tmp: Option<&Path>,
    ) -> Result<(), ApiError> {
        let mut table = self.sessions();
        let s = table
            .by_id
            .get_mut(session_id)
            .ok_or_else(|| ApiError::not_found("session not found"))?;
        // Re-checked: the session may have been completed or expired while
        // the body was streaming.
        check_accepting(s)?;
        let record = ChunkReport {
            size,
            sha256,
            times_received: s.chunks.get(&n).map_or(0, |c| c.times_received) + 1,
        };
        if let (Some(dir), Some(tmp)) = (&self.data_dir, tmp) {
            fs::rename(tmp, persist::chunk_path(dir, session_id, n))
                .and_then(|()| persist::append_chunk(dir, session_id, n, &record))
                .map_err(|e| ApiError::internal(format!("emulator cannot store the chunk: {e}")))?;
        }
        if record.times_received > 1 {
            s.duplicates += 1;
        }
        s.stored_posts += 1;
        s.chunks.insert(n, record);
        Ok(())
    }

    /// Accepts a complete call. Answers the body and whether an assembly must
    /// be started (false on a repeated call).
    pub fn complete(&self, session_id: &str) -> Result<(CompleteAnswer, bool), ApiError> {
        let mut guard = self.sessions();
        let table = &mut *guard;
        let s = table
            .by_id
            .get_mut(session_id)
            .ok_or_else(|| ApiError::not_found("session not found"))?;
        s.meta.complete_calls += 1;
        // A repeated complete (its first answer was lost) answers as the first
        // did, even past the expiration date: the import has already begun.
        if let Some(imp) = &s.meta.import {
            let answer = complete_answer(s, imp.dock_status_id.clone());
            self.persist_or_warn(s);
            return Ok((answer, false));
        }
        let refusal = if s.is_expired(now_ms()) {
            Some(ApiError::expired())
        } else {
            missing_or_mismatch(s).map(ApiError::bad_request)
        };
        if let Some(err) = refusal {
            self.persist_or_warn(s);
            return Err(err);
        }
        let dock_status_id = new_id("ds");
        s.meta.import = Some(ImportRecord {
            dock_status_id: dock_status_id.clone(),
            polls: 0,
            revealed: false,
            // Discard mode keeps no bytes: there is nothing to assemble.
            outcome: self.opts.discard.then_some(Outcome {
                status: ImportStatus::Success,
                message: None,
                assembled_size: None,
                assembled_sha256: None,
            }),
        });
        if let Err(e) = self.persist(s) {
            s.meta.import = None;
            return Err(ApiError::internal(format!(
                "emulator cannot save the session: {e}"
            )));
        }
        table
            .by_dock
            .insert(dock_status_id.clone(), session_id.to_owned());
        tracing::debug!(session_id, dock_status_id = %dock_status_id, "emulator: import started");
        Ok((complete_answer(s, dock_status_id), !self.opts.discard))
    }

    /// What assembly needs: (model id, total chunks).
    pub fn assembly_input(&self, session_id: &str) -> Option<(String, u64)> {
        let table = self.sessions();
        let s = table.by_id.get(session_id)?;
        Some((s.meta.model_id.clone(), s.meta.start.total_chunks))
    }

    /// Records how the import ended.
    pub fn finish_import(&self, session_id: &str, outcome: Outcome) {
        let mut table = self.sessions();
        let Some(s) = table.by_id.get_mut(session_id) else {
            return;
        };
        if let Some(imp) = &mut s.meta.import {
            tracing::debug!(session_id, status = ?outcome.status, "emulator: import finished");
            imp.outcome = Some(outcome);
            self.persist_or_warn(s);
        }
    }

    /// Answers a dock-status poll: IN_PROGRESS for the first `import_polls`
    /// answers and while assembling, then the outcome.
    pub fn dock_status(&self, dock_status_id: &str) -> Result<DockStatusAnswer, ApiError> {
        let mut guard = self.sessions();
        let table = &mut *guard;
        let s = table
            .by_dock
            .get(dock_status_id)
            .and_then(|id| table.by_id.get_mut(id))
            .ok_or_else(|| ApiError::not_found("dock status not found"))?;
        let import_polls = u64::from(self.opts.import_polls);
        let Some(imp) = s.meta.import.as_mut() else {
            return Err(ApiError::internal("dock status without an import"));
        };
        imp.polls += 1;
        let reveal = !imp.revealed && imp.outcome.is_some() && imp.polls > import_polls;
        if reveal {
            imp.revealed = true;
        }
        let status = s.visible_status();
        let message = match (&s.meta.import, status) {
            (Some(imp), ImportStatus::Failed) => {
                imp.outcome.as_ref().and_then(|o| o.message.clone())
            }
            _ => None,
        };
        if reveal {
            // Saved once, when the outcome first shows: a restart then keeps
            // answering it instead of going back to IN_PROGRESS.
            self.persist_or_warn(s);
        }
        Ok(DockStatusAnswer {
            id: dock_status_id.to_owned(),
            job_type: JOB_TYPE,
            action: ACTION,
            status,
            model_id: s.meta.model_id.clone(),
            message,
        })
    }

    /// Makes every session not yet completed expired now; answers how many
    /// sessions that changed.
    pub fn expire_all(&self) -> usize {
        let now = now_ms();
        let mut table = self.sessions();
        let mut changed = 0;
        for s in table.by_id.values_mut() {
            if s.meta.import.is_some() || s.meta.expired {
                continue;
            }
            s.meta.expired = true;
            s.meta.expires_at_ms = s.meta.expires_at_ms.min(now);
            self.persist_or_warn(s);
            changed += 1;
        }
        changed
    }
}

fn check_accepting(s: &Session) -> Result<(), ApiError> {
    if s.meta.import.is_some() {
        return Err(ApiError::bad_request("session already completed"));
    }
    if s.is_expired(now_ms()) {
        return Err(ApiError::expired());
    }
    Ok(())
}

fn complete_answer(s: &Session, dock_status_id: String) -> CompleteAnswer {
    CompleteAnswer {
        dock_status_id,
        model_id: s.meta.model_id.clone(),
        job_type: JOB_TYPE,
        action: ACTION,
        status: s.visible_status(),
    }
}

/// Why the session cannot be completed yet, if it cannot.
fn missing_or_mismatch(s: &Session) -> Option<String> {
    let total = s.meta.start.total_chunks;
    let missing: Vec<u64> = (0..total)
        .filter(|n| !s.chunks.contains_key(n))
        .take(MISSING_LISTED + 1)
        .collect();
    if !missing.is_empty() {
        let mut list: Vec<String> = missing
            .iter()
            .take(MISSING_LISTED)
            .map(u64::to_string)
            .collect();
        if missing.len() > MISSING_LISTED {
            list.push("...".to_owned());
        }
        return Some(format!("missing chunks: {} (of {total})", list.join(", ")));
    }
    let held: u64 = s.chunks.values().map(|c| c.size).sum();
    (held != s.meta.start.file_size).then(|| {
        format!(
            "size mismatch: chunks hold {held} bytes but fileSize is {}",
            s.meta.start.file_size
        )
    })
}
