//! Reading the merged file and environment values one key at a time.
//!
//! The config crate merges the TOML file with the `MODELFERRY__SECTION__KEY`
//! variables into one untyped [`Value`] tree. [`Table`] takes each known key
//! out of it and converts it, recording a problem (naming the key, and the
//! variable when the value came from the environment) instead of stopping, so
//! that unknown keys, wrong types and bad values are all reported together.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use config::{Value, ValueKind};

/// The origin the config crate gives every value read from the environment.
const ENV_ORIGIN: &str = "the environment";

/// The problems found so far, each a line starting with its key.
pub(super) type Problems = Vec<String>;

/// One table of the configuration (a section, or one `[[watch]]` entry),
/// read key by key; what is left at the end is an unknown key.
pub(super) struct Table<'p> {
    /// `upload`, `watch[0]`.
    name: String,
    /// The environment variable prefix for this table's keys, if it has one.
    env_prefix: Option<String>,
    entries: BTreeMap<String, Value>,
    known: Vec<&'static str>,
    problems: &'p mut Problems,
}

impl<'p> Table<'p> {
    /// `value` is what the file (and environment) hold under `name`: a table,
    /// or nothing (an absent section reads as empty).
    pub(super) fn new(name: &str, value: Option<Value>, problems: &'p mut Problems) -> Self {
        let entries = match value.map(|v| v.kind) {
            None | Some(ValueKind::Nil) => BTreeMap::new(),
            Some(ValueKind::Table(t)) => t.into_iter().collect(),
            Some(other) => {
                problems.push(format!(
                    "{name}: expected a table, found {}",
                    describe(&other)
                ));
                BTreeMap::new()
            }
        };
        let env_prefix =
            (!name.contains('[')).then(|| format!("MODELFERRY__{}__", name.to_ascii_uppercase()));
        Table {
            name: name.to_string(),
            env_prefix,
            entries,
            known: Vec::new(),
            problems,
        }
    }

    /// Whether the table holds no keys (an absent section).
    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The full name of `key`, as problems name it.
    pub(super) fn key(&self, key: &str) -> String {
        format!("{}.{key}", self.name)
    }

    /// Records a problem with the table as a whole (it names the section,
    /// not one of its keys).
    pub(super) fn section_problem(&mut self, what: impl std::fmt::Display) {
        self.problems.push(format!("[{}]: {what}", self.name));
    }

    /// Records a problem with `key`'s value.
    pub(super) fn problem(&mut self, key: &str, what: impl std::fmt::Display) {
        let key = self.key(key);
        self.problems.push(format!("{key}: {what}"));
    }

    /// Takes `key` out of the table; `None` when it is not given.
    pub(super) fn take(&mut self, key: &'static str) -> Option<Value> {
        self.known.push(key);
        self.entries
            .remove(key)
            .filter(|v| !matches!(v.kind, ValueKind::Nil))
    }

    /// Records that `found` is not what `key` takes.
    fn wrong(&mut self, key: &str, value: &Value, expected: &str) {
        let mut name = self.key(key);
        if let (true, Some(prefix)) = (from_env(value), &self.env_prefix) {
            name = format!("{name} (from {prefix}{})", key.to_ascii_uppercase());
        }
        self.problems.push(format!(
            "{name}: expected {expected}, found {}",
            describe(&value.kind)
        ));
    }

    /// A string; from the environment every value is one.
    pub(super) fn string(&mut self, key: &'static str) -> Option<String> {
        let value = self.take(key)?;
        match &value.kind {
            ValueKind::String(s) => Some(s.clone()),
            _ => {
                self.wrong(key, &value, "a string");
                None
            }
        }
    }

    pub(super) fn path(&mut self, key: &'static str) -> Option<PathBuf> {
        self.string(key).map(PathBuf::from)
    }

    pub(super) fn bool(&mut self, key: &'static str, default: bool) -> bool {
        let Some(value) = self.take(key) else {
            return default;
        };
        match &value.kind {
            ValueKind::Boolean(b) => *b,
            ValueKind::String(s) if from_env(&value) => match s.trim() {
                "true" => true,
                "false" => false,
                _ => {
                    self.wrong(key, &value, "true or false");
                    default
                }
            },
            _ => {
                self.wrong(key, &value, "true or false");
                default
            }
        }
    }

    /// A whole number from 1 to `max`.
    pub(super) fn count(&mut self, key: &'static str, default: usize, max: usize) -> usize {
        let Some(value) = self.take(key) else {
            return default;
        };
        let n = match &value.kind {
            ValueKind::I64(n) => i128::from(*n),
            ValueKind::U64(n) => i128::from(*n),
            ValueKind::I128(n) => *n,
            ValueKind::U128(n) => i128::try_from(*n).unwrap_or(i128::MAX),
            ValueKind::String(s) if from_env(&value) => match s.trim().parse::<i128>() {
                Ok(n) => n,
                Err(_) => {
                    self.wrong(key, &value, "a whole number");
                    return default;
                }
            },
            _ => {
                self.wrong(key, &value, "a whole number");
                return default;
            }
        };
        if n < 1 || n > max as i128 {
            self.problem(key, format!("{n} is out of range (1 to {max})"));
            return default;
        }
        n as usize
    }

    /// A human duration string such as `"10s"`, `"500ms"`, `"2m"`.
    pub(super) fn duration(&mut self, key: &'static str, default: Duration) -> Duration {
        let Some(text) = self.string(key) else {
            return default;
        };
        match humantime::parse_duration(text.trim()) {
            Ok(d) => d,
            Err(e) => {
                self.problem(
                    key,
                    format!(
                        "{text:?} is not a duration ({e}; use e.g. \"10s\", \"500ms\", \"2m\")"
                    ),
                );
                default
            }
        }
    }

    /// Integer bytes, or a string such as `"8MiB"`, `"512KiB"`.
    pub(super) fn size(&mut self, key: &'static str, default: u64) -> u64 {
        let Some(value) = self.take(key) else {
            return default;
        };
        let text = match &value.kind {
            ValueKind::I64(n) if *n >= 0 => return *n as u64,
            ValueKind::U64(n) => return *n,
            ValueKind::String(s) => s.trim().to_string(),
            _ => {
                self.wrong(key, &value, "a size (bytes, or a string like \"8MiB\")");
                return default;
            }
        };
        match parse_size::Config::new().with_binary().parse_size(&text) {
            Ok(n) => n,
            Err(e) => {
                self.problem(
                    key,
                    format!("{text:?} is not a size ({e}; use bytes or e.g. \"8MiB\", \"512KiB\")"),
                );
                default
            }
        }
    }

    /// A list of strings.
    pub(super) fn strings(&mut self, key: &'static str) -> Option<Vec<String>> {
        let value = self.take(key)?;
        let ValueKind::Array(items) = &value.kind else {
            self.wrong(key, &value, "a list of strings");
            return None;
        };
        let mut out = Vec::new();
        for item in items {
            match &item.kind {
                ValueKind::String(s) => out.push(s.clone()),
                _ => {
                    self.wrong(key, &value, "a list of strings");
                    return None;
                }
            }
        }
        Some(out)
    }

    /// Reports every key that was not taken as unknown.
    pub(super) fn finish(self) {
        let expected = self.known.join(", ");
        for (key, value) in &self.entries {
            let mut name = format!("{}.{key}", self.name);
            if let (true, Some(prefix)) = (from_env(value), &self.env_prefix) {
                name = format!("{name} (from {prefix}{})", key.to_ascii_uppercase());
            }
            self.problems
                .push(format!("{name}: unknown key (expected one of {expected})"));
        }
    }
}

/// The top level of the configuration: its sections, taken by name; what is
/// left at the end is an unknown section.
pub(super) struct Root {
    entries: BTreeMap<String, Value>,
    known: Vec<&'static str>,
}

impl Root {
    pub(super) fn new(value: Value, problems: &mut Problems) -> Root {
        let entries = match value.kind {
            ValueKind::Table(t) => t.into_iter().collect(),
            ValueKind::Nil => BTreeMap::new(),
            other => {
                problems.push(format!(
                    "the file holds {} instead of TOML tables",
                    describe(&other)
                ));
                BTreeMap::new()
            }
        };
        Root {
            entries,
            known: Vec::new(),
        }
    }

    /// The section `name` as a [`Table`] (empty when absent).
    pub(super) fn section<'p>(
        &mut self,
        name: &'static str,
        problems: &'p mut Problems,
    ) -> Table<'p> {
        self.known.push(name);
        Table::new(name, self.entries.remove(name), problems)
    }

    /// The `[[name]]` entries (none when absent).
    pub(super) fn list(&mut self, name: &'static str, problems: &mut Problems) -> Vec<Value> {
        self.known.push(name);
        match self.entries.remove(name).map(|v| v.kind) {
            None | Some(ValueKind::Nil) => Vec::new(),
            Some(ValueKind::Array(items)) => items,
            Some(other) => {
                problems.push(format!(
                    "{name}: expected a list of tables ([[{name}]]), found {}",
                    describe(&other)
                ));
                Vec::new()
            }
        }
    }

    /// Reports every section that was not taken as unknown.
    pub(super) fn finish(self, problems: &mut Problems) {
        let expected = self.known.join(", ");
        for key in self.entries.keys() {
            problems.push(format!(
                "{key}: unknown key (expected a section: one of {expected})"
            ));
        }
    }
}

fn from_env(value: &Value) -> bool {
    value.origin() == Some(ENV_ORIGIN)
}

/// What a value is, for a problem's text.
fn describe(kind: &ValueKind) -> String {
    match kind {
        ValueKind::Nil => "nothing".into(),
        ValueKind::Boolean(b) => format!("the boolean {b}"),
        ValueKind::I64(n) => format!("the number {n}"),
        ValueKind::I128(n) => format!("the number {n}"),
        ValueKind::U64(n) => format!("the number {n}"),
        ValueKind::U128(n) => format!("the number {n}"),
        ValueKind::Float(n) => format!("the number {n}"),
        ValueKind::String(s) => format!("the string {s:?}"),
        ValueKind::Table(_) => "a table".into(),
        ValueKind::Array(_) => "a list".into(),
    }
}
