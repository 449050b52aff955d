//! The domain model: jobs, their states, and the pure rules for changing them.
//!
//! Everything here is data and pure functions, no I/O. The persistence layer
//! ([`crate::store`]) depends on this module and enforces its rules on every
//! write; the engine, the daemon and the commands name jobs through these
//! types, never through the store's.
//!
//! - [`state`]: [`JobState`], its transition rules, and which states are
//!   active or finished.
//! - [`filing`]: [`FilingState`] of a finished daemon job and its rules.
//! - [`stage`]: [`Stage`], the step a job failed at, as receipts name it.
//! - [`types`]: [`Job`] and the values written with it.

pub mod filing;
pub mod stage;
pub mod state;
pub mod types;

pub use filing::{Filing, FilingState, UnknownFilingState};
pub use stage::{Stage, UnknownStage};
pub use state::{JobState, UnknownState};
pub use types::{
    ChunkAck, ChunkChecksum, Failure, HashCheckpoint, Job, JobId, NewJob, SessionRecord,
};
