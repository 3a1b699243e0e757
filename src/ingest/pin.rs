//! What a night reads, pinned once per date.
//!
//! The first run of a date lists its input files ([`super::list_files`]:
//! the window's partitions, the day before it, every file of an
//! unpartitioned folder) and records each file's path, size, modification
//! time and ETag in `_work/dt=D/_inputs.json`. Every later run of the same
//! date — the next task of a DAG, a retry after a crash, a rerun a week
//! later — reads that list instead of listing again, so it reads the inputs
//! the first attempt read, and the clean stage's fingerprint (the pin's
//! snapshot) does not move when files land in tomorrow's partition or in an
//! unpartitioned folder.
//!
//! A later run still lists the inputs, only to compare: a file that
//! appeared inside the window after the pin, or a pinned file that changed
//! or went away, is reported (the run summary, and `data_quality` rows of
//! severity `warning` when the date is published), never silently mixed in.
//! `--force` pins again, and so reads them. A run whose clean stage must run
//! again while a pinned file has changed or gone refuses (exit 3): it could
//! not read what the first attempt read.
//!
//! The pin is replaced when the window changes (`run.lookback_days`) or the
//! input root does.

use chrono::{DateTime, Utc};
use object_store::ObjectMeta;
use serde::{Deserialize, Serialize};

use super::{DATASETS, FileKind, list_files};
use crate::config::{RunDate, Window};
use crate::error::Result;
use crate::quality::Check;
use crate::storage::Root;
use crate::{layout, state};

/// One listed input file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PinnedFile {
    /// `events`, `items` or `users`.
    pub dataset: String,
    /// Path relative to the input root.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, epoch milliseconds.
    pub modified_ms: i64,
    /// The store's ETag, when it has one.
    pub e_tag: Option<String>,
}

impl PinnedFile {
    fn of(dataset: &str, root: &Root, m: &ObjectMeta) -> PinnedFile {
        PinnedFile {
            dataset: dataset.to_string(),
            path: root.relative(&m.location),
            size: m.size,
            modified_ms: m.last_modified.timestamp_millis(),
            e_tag: m.e_tag.clone(),
        }
    }

    /// Whether nightrec reads this file's format.
    pub(crate) fn readable(&self) -> bool {
        FileKind::of(self.path.rsplit('/').next().unwrap_or("")).is_some()
    }

    /// The `dt=` partition the file lies in, if any.
    pub(crate) fn partition(&self) -> Option<RunDate> {
        super::partition_date(&self.path)
    }

    /// The object's metadata as listed when it was pinned.
    pub(crate) fn meta(&self, root: &Root) -> ObjectMeta {
        ObjectMeta {
            location: root.path(&self.path),
            last_modified: DateTime::<Utc>::from_timestamp_millis(self.modified_ms).unwrap_or_default(),
            size: self.size,
            e_tag: self.e_tag.clone(),
            version: None,
        }
    }
}

/// The inputs of one date, as its first run listed them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct InputPin {
    /// The input root (a URL without credentials).
    pub input: String,
    /// The window the files were listed for.
    pub window: Window,
    /// When the pin was made (UTC, RFC 3339).
    pub pinned_at: String,
    /// The run that made it.
    pub run_id: String,
    /// Every listed file, sorted by path (unreadable formats included: they
    /// are reported as `file_not_read`).
    pub files: Vec<PinnedFile>,
}

impl InputPin {
    /// A stable fingerprint of the pinned files: what the clean stage
    /// depends on.
    pub(crate) fn snapshot(&self, root: &Root) -> String {
        let metas: Vec<ObjectMeta> = self.files.iter().map(|f| f.meta(root)).collect();
        super::snapshot(&metas)
    }

    /// The readable files of a dataset, as object metadata.
    pub(crate) fn files_of(&self, root: &Root, dataset: &str) -> Vec<ObjectMeta> {
        self.files.iter().filter(|f| f.dataset == dataset && f.readable()).map(|f| f.meta(root)).collect()
    }

    /// Files listed under the input folders that nightrec does not read.
    pub(crate) fn not_read(&self) -> impl Iterator<Item = &PinnedFile> {
        self.files.iter().filter(|f| !f.readable())
    }
}

/// How the inputs now differ from the pin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Drift {
    /// Listed now, not pinned: landed after the pin.
    Arrived(PinnedFile),
    /// Pinned with other contents (size, modification time or ETag).
    Changed {
        /// As pinned.
        was: PinnedFile,
        /// As listed now.
        now: PinnedFile,
    },
    /// Pinned, no longer there.
    Gone(PinnedFile),
}

impl Drift {
    /// The file, as pinned (or as found, for one that arrived later).
    pub(crate) fn file(&self) -> &PinnedFile {
        match self {
            Drift::Arrived(f) | Drift::Gone(f) => f,
            Drift::Changed { was, .. } => was,
        }
    }

    /// Whether a rerun of the clean stage would read other rows than the
    /// pin promises (a pinned file changed or went away).
    pub(crate) fn breaks_pin(&self) -> bool {
        !matches!(self, Drift::Arrived(_))
    }
}

/// The pin a run uses, and how the inputs have moved since.
#[derive(Debug, Clone)]
pub(crate) struct Pinned {
    pub pin: InputPin,
    /// Whether this run made it.
    pub fresh: bool,
    /// Differences between the inputs now and the pin (empty when fresh).
    pub drift: Vec<Drift>,
}

impl Pinned {
    /// `data_quality` rows (severity warning) for the drift, each with
    /// what to do about it.
    pub(crate) fn checks(&self, input: &Root, date: RunDate) -> Vec<Check> {
        let pinned = format!("pinned by run {} at {}", self.pin.run_id, self.pin.pinned_at);
        let fix = format!("`nightrec run --date {date} --force` pins the inputs again and reads it");
        self.drift
            .iter()
            .map(|d| {
                let f = d.file();
                let source = input.object_url(&input.path(&f.path));
                match d {
                    Drift::Arrived(f) => Check::warning(
                        &source,
                        "file_after_pin",
                        f.size as f64,
                        format!("arrived after this night's inputs were {pinned}; not read; {fix}"),
                    ),
                    Drift::Changed { was, now } => Check::warning(
                        &source,
                        "file_changed_after_pin",
                        now.size as f64,
                        format!(
                            "changed after this night's inputs were {pinned} ({} -> {} bytes); the night used it \
                             as pinned; {fix}",
                            was.size, now.size
                        ),
                    ),
                    Drift::Gone(f) => Check::warning(
                        &source,
                        "file_gone_after_pin",
                        f.size as f64,
                        format!("removed after this night's inputs were {pinned}; the night read it; {fix}"),
                    ),
                }
            })
            .collect()
    }
}

/// List every input file of the window, by dataset.
async fn list(input: &Root, window: Window) -> Result<Vec<PinnedFile>> {
    let mut files = Vec::new();
    for ds in DATASETS {
        let listing = list_files(input, ds, Some(window)).await?;
        for m in listing.files.iter().chain(&listing.unreadable_format) {
            files.push(PinnedFile::of(ds.name, input, m));
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// The differences between the pinned files and the files listed now.
pub(crate) fn drift(pinned: &[PinnedFile], now: &[PinnedFile]) -> Vec<Drift> {
    let mut out = Vec::new();
    for f in now {
        match pinned.iter().find(|p| p.path == f.path) {
            None => out.push(Drift::Arrived(f.clone())),
            Some(p) if p.size != f.size || p.modified_ms != f.modified_ms || p.e_tag != f.e_tag => {
                out.push(Drift::Changed { was: p.clone(), now: f.clone() })
            }
            Some(_) => {}
        }
    }
    out.extend(pinned.iter().filter(|p| !now.iter().any(|f| f.path == p.path)).map(|p| Drift::Gone(p.clone())));
    out
}

/// The pin of a date: the recorded one, or a new one when there is none
/// (or `repin`, or it was made for another window or input root).
pub(crate) async fn resolve(
    input: &Root,
    output: &Root,
    date: RunDate,
    window: Window,
    run_id: &str,
    repin: bool,
) -> Result<Pinned> {
    let rel = layout::input_pin(date);
    let url = input.folder_url("");
    let now = list(input, window).await?;
    if !repin && let Some(pin) = state::read::<InputPin>(output, &rel).await? {
        if pin.window == window && pin.input == url {
            let drift = drift(&pin.files, &now);
            return Ok(Pinned { pin, fresh: false, drift });
        }
        tracing::info!(
            pinned_window = %pin.window,
            window = %window,
            "the window or input root changed since the inputs were pinned: pinning them again"
        );
    }
    let pin =
        InputPin { input: url, window, pinned_at: Utc::now().to_rfc3339(), run_id: run_id.to_string(), files: now };
    state::write(output, &rel, &pin).await?;
    Ok(Pinned { pin, fresh: true, drift: Vec::new() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(path: &str, size: u64) -> PinnedFile {
        PinnedFile { dataset: "events".into(), path: path.into(), size, modified_ms: 1, e_tag: None }
    }

    #[test]
    fn drift_names_what_arrived_changed_and_went() {
        let pinned = vec![f("events/dt=1/a.csv", 10), f("events/dt=1/b.csv", 5), f("events/c.csv", 1)];
        let now = vec![f("events/dt=1/a.csv", 10), f("events/dt=1/b.csv", 6), f("events/dt=2/d.csv", 3)];
        let d = drift(&pinned, &now);
        assert_eq!(
            d,
            vec![
                Drift::Changed { was: f("events/dt=1/b.csv", 5), now: f("events/dt=1/b.csv", 6) },
                Drift::Arrived(f("events/dt=2/d.csv", 3)),
                Drift::Gone(f("events/c.csv", 1)),
            ]
        );
        assert_eq!(d.iter().map(Drift::breaks_pin).collect::<Vec<_>>(), [true, false, true]);
        assert!(drift(&pinned, &pinned).is_empty());
    }

    #[tokio::test]
    async fn a_pin_is_reused_until_forced_or_the_window_moves() {
        let input = Root::open("memory://pin-test/in").unwrap();
        let output = Root::open("memory://pin-test/out").unwrap();
        let date: RunDate = "2026-11-21".parse().unwrap();
        let window = Window::new(date, 3);
        input.put(&input.path("events/dt=2026-11-21/a.csv"), bytes::Bytes::from_static(b"x")).await.unwrap();
        input.put(&input.path("events/dt=2026-11-18/slack.csv"), bytes::Bytes::from_static(b"x")).await.unwrap();
        input.put(&input.path("events/dt=2026-11-17/old.csv"), bytes::Bytes::from_static(b"x")).await.unwrap();
        input.put(&input.path("items/items.jsonl"), bytes::Bytes::from_static(b"x")).await.unwrap();
        let first = resolve(&input, &output, date, window, "r1", false).await.unwrap();
        assert!(first.fresh);
        let paths: Vec<&str> = first.pin.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["events/dt=2026-11-18/slack.csv", "events/dt=2026-11-21/a.csv", "items/items.jsonl"]);
        // Tomorrow's partition is never listed; a file inside the window is drift.
        input.put(&input.path("events/dt=2026-11-22/tomorrow.csv"), bytes::Bytes::from_static(b"x")).await.unwrap();
        input.put(&input.path("events/dt=2026-11-20/late.csv"), bytes::Bytes::from_static(b"x")).await.unwrap();
        let again = resolve(&input, &output, date, window, "r2", false).await.unwrap();
        assert!(!again.fresh);
        assert_eq!(again.pin.run_id, "r1");
        assert_eq!(again.pin.snapshot(&input), first.pin.snapshot(&input));
        let drifted: Vec<&str> = again.drift.iter().map(|d| d.file().path.as_str()).collect();
        assert_eq!(drifted, ["events/dt=2026-11-20/late.csv"]);
        let checks = again.checks(&input, date);
        assert_eq!(checks.len(), 1);
        assert!(checks[0].detail.contains("--force") && checks[0].detail.contains("r1"), "{checks:?}");
        // --force pins again; so does another window.
        let forced = resolve(&input, &output, date, window, "r3", true).await.unwrap();
        assert!(forced.fresh && forced.pin.files.len() == 4);
        let wider = resolve(&input, &output, date, Window::new(date, 5), "r4", false).await.unwrap();
        assert!(wider.fresh && wider.pin.files.iter().any(|f| f.path.ends_with("old.csv")));
    }
}
