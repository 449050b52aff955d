//! Job states and the rules for moving between them (pure; no I/O).
//!
//! `queued → uploading → completing → importing → succeeded | failed`.
//! A job may fail from any unfinished state, `uploading → uploading`
//! replaces an expired or vanished session, and `queued → succeeded` is a
//! duplicate of a file already imported (dedupe: nothing is sent).
//! `modelferry cancel` moves a job that the platform does not have yet
//! (`queued`, `uploading`, `completing`) to `cancelled`; once `importing`,
//! the platform has it and it cannot be. The store enforces these rules on
//! every write; they are kept here so they can be tested exhaustively.
//! Which states are active and which finished is decided here too
//! ([`JobState::ACTIVE`], [`JobState::FINISHED`]): the store builds its
//! queries from these lists, so a new state is placed in one of them once.

use std::fmt;
use std::str::FromStr;

/// Where a job is in its life (see the module docs for the moves allowed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for its first session.
    Queued,
    /// Chunks are being sent into a session.
    Uploading,
    /// Every chunk is acknowledged; `complete` is being asked for.
    Completing,
    /// The platform took the import; its dock status is being polled.
    Importing,
    /// Imported (or a duplicate of a file already imported).
    Succeeded,
    /// Failed for good; the job's failure says why.
    Failed,
    /// Stopped by `modelferry cancel` before the platform took the import.
    Cancelled,
}

impl JobState {
    /// Every state, in the order of a job's life.
    pub const ALL: [JobState; 7] = [
        JobState::Queued,
        JobState::Uploading,
        JobState::Completing,
        JobState::Importing,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
    ];

    /// States a job is still moving through: resumed after a restart.
    pub const ACTIVE: [JobState; 4] = [
        JobState::Queued,
        JobState::Uploading,
        JobState::Completing,
        JobState::Importing,
    ];

    /// Final states: nothing more happens to the job but its filing.
    pub const FINISHED: [JobState; 3] =
        [JobState::Succeeded, JobState::Failed, JobState::Cancelled];

    /// The state's name, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Uploading => "uploading",
            JobState::Completing => "completing",
            JobState::Importing => "importing",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    /// Whether the job is finished (one of [`JobState::FINISHED`]).
    pub fn is_terminal(self) -> bool {
        Self::FINISHED.contains(&self)
    }

    /// Whether `self → to` is allowed.
    pub fn can_become(self, to: JobState) -> bool {
        use JobState::*;
        match (self, to) {
            (Succeeded | Failed | Cancelled, _) => false,
            (_, Failed) => true,
            // The platform has an import once `importing`: too late to cancel.
            (Queued | Uploading | Completing, Cancelled) => true,
            (Queued, Uploading) => true,
            // A new session replaces an expired or vanished one; a session
            // that vanished at `complete` also starts over from chunk 0.
            (Uploading | Completing, Uploading) => true,
            (Uploading, Completing) => true,
            // A duplicate of a file already imported: nothing is sent.
            (Queued, Succeeded) => true,
            (Completing, Importing) => true,
            // Even a `complete` answered SUCCESS goes through `importing`:
            // its dock status id is recorded first.
            (Importing, Succeeded) => true,
            _ => false,
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Text that names no job state.
#[derive(Debug, thiserror::Error)]
#[error("unknown job state {0:?}")]
pub struct UnknownState(pub String);

impl FromStr for JobState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::JobState::*;
    use super::*;

    #[test]
    fn transitions_are_exactly_the_documented_ones() {
        let allowed = [
            (Queued, Uploading),
            (Queued, Failed),
            (Queued, Succeeded),
            (Uploading, Uploading),
            (Uploading, Completing),
            (Uploading, Failed),
            (Completing, Uploading),
            (Completing, Importing),
            (Completing, Failed),
            (Importing, Succeeded),
            (Importing, Failed),
            (Queued, Cancelled),
            (Uploading, Cancelled),
            (Completing, Cancelled),
        ];
        for from in JobState::ALL {
            for to in JobState::ALL {
                assert_eq!(
                    from.can_become(to),
                    allowed.contains(&(from, to)),
                    "{from} -> {to}"
                );
            }
        }
    }

    #[test]
    fn terminal_states_are_final() {
        for s in JobState::ALL {
            assert_eq!(
                s.is_terminal(),
                !JobState::ALL.iter().any(|t| s.can_become(*t))
            );
        }
    }

    #[test]
    fn every_state_is_either_active_or_finished() {
        for s in JobState::ALL {
            assert_ne!(JobState::ACTIVE.contains(&s), s.is_terminal(), "{s}");
            assert_eq!(JobState::FINISHED.contains(&s), s.is_terminal(), "{s}");
        }
        assert_eq!(
            JobState::ACTIVE.len() + JobState::FINISHED.len(),
            JobState::ALL.len()
        );
    }

    #[test]
    fn only_jobs_the_platform_does_not_have_yet_can_be_cancelled() {
        let cancellable: Vec<JobState> = JobState::ALL
            .into_iter()
            .filter(|s| s.can_become(Cancelled))
            .collect();
        assert_eq!(cancellable, [Queued, Uploading, Completing]);
        assert!(JobState::FINISHED.contains(&Cancelled));
    }

    #[test]
    fn names_round_trip() {
        for s in JobState::ALL {
            assert_eq!(s.as_str().parse::<JobState>().unwrap(), s);
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
        }
        assert!("done".parse::<JobState>().is_err());
        assert_eq!("cancelled".parse::<JobState>().unwrap(), Cancelled);
    }
}
