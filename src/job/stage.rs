//! The step of a job that failed, as error receipts, `status` and the state
//! database name it (`stage`). The names are part of the receipt format:
//! [`Stage::as_str`] and [`FromStr`] are the only way in and out of text.

use std::fmt;
use std::str::FromStr;

/// The step of a job that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Starting an import session.
    Start,
    /// Uploading chunks (including a session that expired under the upload).
    Upload,
    /// Completing the import.
    Complete,
    /// The platform's import, after `complete`.
    Import,
    /// Reading the source file (missing, unreadable, changed).
    Read,
    /// Stopped by `modelferry cancel` (not a failure of any step).
    Cancelled,
    /// The archive's structure, checked before a session starts (and a
    /// gzip archive's stream, as it is uploaded).
    Preflight,
}

impl Stage {
    /// Every stage.
    pub const ALL: [Stage; 7] = [
        Stage::Start,
        Stage::Upload,
        Stage::Complete,
        Stage::Import,
        Stage::Read,
        Stage::Cancelled,
        Stage::Preflight,
    ];

    /// The stage's name, as receipts, `status` and the store give it.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Start => "start",
            Stage::Upload => "upload",
            Stage::Complete => "complete",
            Stage::Import => "import",
            Stage::Read => "read",
            Stage::Cancelled => "cancelled",
            Stage::Preflight => "preflight",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Text that names no stage.
#[derive(Debug, thiserror::Error)]
#[error("unknown failure stage {0:?}")]
pub struct UnknownStage(pub String);

impl FromStr for Stage {
    type Err = UnknownStage;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Stage::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownStage(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_receipts_and_round_trip() {
        let names: Vec<&str> = Stage::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            names,
            [
                "start",
                "upload",
                "complete",
                "import",
                "read",
                "cancelled",
                "preflight"
            ]
        );
        for s in Stage::ALL {
            assert_eq!(s.as_str().parse::<Stage>().unwrap(), s);
            assert_eq!(s.to_string(), s.as_str());
        }
        assert!("Read".parse::<Stage>().is_err());
        assert!("".parse::<Stage>().is_err());
    }
}
