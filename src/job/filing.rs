//! Filing of a finished daemon job, and the rules for its steps (pure).
//!
//! `(not planned) → pending → done | skipped`. The destination is recorded
//! with `pending` before anything moves, so a crash in between files to the
//! same place; `done` and `skipped` are final. The store builds its guard
//! for filing writes from [`FilingState::can_become`], as it does for job
//! states, and filing applies only to [finished](super::JobState::FINISHED)
//! jobs.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::SystemTime;

/// Where a finished daemon job's filing is (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FilingState {
    /// The destination is recorded; the move and receipt may not be done.
    Pending,
    /// File and receipt are in place.
    Done,
    /// Nothing to file (the file changed and is a new job now).
    Skipped,
}

impl FilingState {
    /// Every filing state.
    pub const ALL: [FilingState; 3] = [
        FilingState::Pending,
        FilingState::Done,
        FilingState::Skipped,
    ];

    /// The state's name, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            FilingState::Pending => "pending",
            FilingState::Done => "done",
            FilingState::Skipped => "skipped",
        }
    }

    /// The states after which nothing more is done.
    pub const FINAL: [FilingState; 2] = [FilingState::Done, FilingState::Skipped];

    /// The states whose filing is still to be carried out (planned, not
    /// done); a job not yet planned is open too.
    pub const OPEN: [FilingState; 1] = [FilingState::Pending];

    /// Whether nothing more is done (`done` or `skipped`).
    pub fn is_final(self) -> bool {
        Self::FINAL.contains(&self)
    }

    /// Whether filing may go from `from` (`None`: not planned yet) to `to`.
    pub fn can_become(from: Option<FilingState>, to: FilingState) -> bool {
        use FilingState::*;
        matches!(
            (from, to),
            (None, Pending) | (Some(Pending), Done) | (Some(Pending), Skipped)
        )
    }

    /// Every state filing may be in before `to`, `None` (not planned) included.
    pub fn sources(to: FilingState) -> impl Iterator<Item = Option<FilingState>> {
        std::iter::once(None)
            .chain(Self::ALL.into_iter().map(Some))
            .filter(move |from| Self::can_become(*from, to))
    }
}

impl fmt::Display for FilingState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Text that names no filing state.
#[derive(Debug, thiserror::Error)]
#[error("unknown filing state {0:?}")]
pub struct UnknownFilingState(pub String);

impl FromStr for FilingState {
    type Err = UnknownFilingState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FilingState::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| UnknownFilingState(s.to_string()))
    }
}

/// A finished daemon job's filing, once planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filing {
    /// Where filing is.
    pub state: FilingState,
    /// The file's (or, for `delete`/`keep`, the receipt's) recorded destination.
    pub dest: Option<PathBuf>,
    /// When filing finished (`done` or `skipped`).
    pub filed_at: Option<SystemTime>,
}

#[cfg(test)]
mod tests {
    use super::FilingState::*;
    use super::*;

    fn all_from() -> impl Iterator<Item = Option<FilingState>> {
        std::iter::once(None).chain(FilingState::ALL.into_iter().map(Some))
    }

    #[test]
    fn filing_steps_are_exactly_the_documented_ones() {
        let allowed = [
            (None, Pending),
            (Some(Pending), Done),
            (Some(Pending), Skipped),
        ];
        for from in all_from() {
            for to in FilingState::ALL {
                assert_eq!(
                    FilingState::can_become(from, to),
                    allowed.contains(&(from, to)),
                    "{from:?} -> {to}"
                );
            }
        }
    }

    #[test]
    fn final_filing_states_are_final() {
        for s in FilingState::ALL {
            assert_eq!(
                s.is_final(),
                !FilingState::ALL
                    .iter()
                    .any(|t| FilingState::can_become(Some(s), *t)),
                "{s}"
            );
        }
    }

    #[test]
    fn open_and_final_split_every_state() {
        for s in FilingState::ALL {
            assert_eq!(FilingState::FINAL.contains(&s), s.is_final(), "{s}");
            assert_ne!(FilingState::OPEN.contains(&s), s.is_final(), "{s}");
        }
        assert_eq!(
            FilingState::OPEN.len() + FilingState::FINAL.len(),
            FilingState::ALL.len()
        );
    }

    #[test]
    fn sources_are_what_can_become_allows() {
        for to in FilingState::ALL {
            let got: Vec<_> = FilingState::sources(to).collect();
            let want: Vec<_> = all_from()
                .filter(|f| FilingState::can_become(*f, to))
                .collect();
            assert_eq!(got, want, "{to}");
        }
    }

    #[test]
    fn names_round_trip() {
        for s in FilingState::ALL {
            assert_eq!(s.as_str().parse::<FilingState>().unwrap(), s);
        }
        assert!("filed".parse::<FilingState>().is_err());
    }
}
