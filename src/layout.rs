//! The output layout: every object nightrec keeps under the output root,
//! named by its path relative to that root. No other module spells these
//! paths.
//!
//! ```text
//! <table>/dt=D/part-NNNNN-<publication>.parquet  published tables
//! _runs/dt=D/manifest.json                        the publication: every file with rows, bytes, sha256
//! _runs/dt=D/summary-<sha>.json                   the run summary (listed in the manifest)
//! _runs/dt=D/report-<sha>.html                    the night's report (listed in the manifest)
//! _runs/dt=D/_SUCCESS                             written last; while it exists the date's table
//!                                                 folders hold exactly the manifest's files
//! _work/dt=D/<table>/part-*.parquet               work tables (publish's staging area)
//! _work/dt=D/_inputs.json                         the input files the date reads, pinned by its first run
//! _work/dt=D/_stages/<stage>.json                 stage markers: what ran, with which fingerprint
//! _work/dt=D/checkpoint/model.safetensors, .json  the model trained for D and its metadata
//! _work/dt=D/checkpoint/holdout.safetensors       with a refit: the model the evaluation scores
//! _work/dt=D/_shards/N/I/…, _done.json            per-user candidates of shard I of N
//! _work/dt=D/_explore_weight.json                 the explore weight the embed stage chose (buy-again mode)
//! _cache/text_embeddings/<encoder key>/gen=<run>/ text embeddings kept across dates
//! _leases/dt=D/date/<seq>.json                    the lease of the run writing date D (one writer at a time)
//! _leases/dt=D/shard-N-I/<seq>.json               the lease of the run computing shard I of N
//! ```

use crate::config::RunDate;
use crate::error::Result;
use crate::ledger::Stage;
use crate::storage::Root;

/// Top folder of the work tables, markers and checkpoints of every date.
pub(crate) const WORK: &str = "_work";
/// Top folder of the manifests, summaries and `_SUCCESS` markers.
pub(crate) const RUNS: &str = "_runs";
/// The work folder holding a date's checkpoint (not a table).
pub(crate) const CHECKPOINT: &str = "checkpoint";

/// A date's work folder.
pub(crate) fn work_root(date: RunDate) -> String {
    format!("{WORK}/{}", date.partition())
}

/// A work table's folder (or any other name under the date's work folder).
pub(crate) fn work(date: RunDate, name: &str) -> String {
    format!("{}/{name}", work_root(date))
}

/// The input files a date reads, as its first run listed them
/// ([`crate::ingest::pin`]).
pub(crate) fn input_pin(date: RunDate) -> String {
    work(date, "_inputs.json")
}

/// The folder of a date's stage markers.
pub(crate) fn stage_markers(date: RunDate) -> String {
    work(date, "_stages")
}

/// The marker a finished stage leaves.
pub(crate) fn stage_marker(date: RunDate, stage: Stage) -> String {
    format!("{}/{}.json", stage_markers(date), stage.name())
}

/// The folder of the model trained for a date.
pub(crate) fn checkpoint(date: RunDate) -> String {
    work(date, CHECKPOINT)
}

/// The weights of the model trained for a date.
pub(crate) fn checkpoint_weights(date: RunDate) -> String {
    format!("{}/model.safetensors", checkpoint(date))
}

/// The weights of the holdout model of a date (with a refit: trained on
/// every step but the test ones; scored by the offline evaluation).
pub(crate) fn checkpoint_holdout_weights(date: RunDate) -> String {
    format!("{}/holdout.safetensors", checkpoint(date))
}

/// The metadata of the model trained for a date (shape, item ids, version).
pub(crate) fn checkpoint_meta(date: RunDate) -> String {
    format!("{}/model.json", checkpoint(date))
}

/// The explore weight chosen for a date's lists (`--repeat-purchases`).
pub(crate) fn explore_weight(date: RunDate) -> String {
    work(date, "_explore_weight.json")
}

/// The folder of every shard count of a date.
pub(crate) fn shards(date: RunDate) -> String {
    work(date, "_shards")
}

/// The folder of shard `index` of `count`.
pub(crate) fn shard(date: RunDate, count: u32, index: u32) -> String {
    format!("{}/{count}/{index}", shards(date))
}

/// The marker a finished shard leaves.
pub(crate) fn shard_marker(date: RunDate, count: u32, index: u32) -> String {
    format!("{}/_done.json", shard(date, count, index))
}

/// A published table's folder for a date (a Hive partition).
pub(crate) fn published(table: &str, date: RunDate) -> String {
    format!("{table}/{}", date.partition())
}

/// One published file: its part number and the publication it belongs to.
pub(crate) fn published_file(table: &str, date: RunDate, part: usize, publication: &str) -> String {
    format!("{}/part-{part:05}-{publication}.parquet", published(table, date))
}

/// A date's folder of publication records.
pub(crate) fn runs(date: RunDate) -> String {
    format!("{RUNS}/{}", date.partition())
}

/// A date's manifest.
pub(crate) fn manifest(date: RunDate) -> String {
    format!("{}/manifest.json", runs(date))
}

/// A date's success marker.
pub(crate) fn success(date: RunDate) -> String {
    format!("{}/_SUCCESS", runs(date))
}

/// A document a publication lists beside its tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Document {
    /// The run summary, as JSON.
    Summary,
    /// The night's report, one HTML page.
    Report,
}

/// A publication's document, named by (a prefix of) its own sha256: a name
/// is never reused for other bytes.
pub(crate) fn document(date: RunDate, doc: Document, sha: &str) -> String {
    match doc {
        Document::Summary => format!("{}/summary-{sha}.json", runs(date)),
        Document::Report => format!("{}/report-{sha}.html", runs(date)),
    }
}

/// Whether a file of the output root belongs to some publication of `date`
/// (a table file, a summary, a report: publish deletes those its manifest
/// does not list), as opposed to the manifest and `_SUCCESS` themselves.
pub(crate) fn is_publication_file(date: RunDate, rel: &str) -> bool {
    match rel.strip_prefix(&format!("{}/", runs(date))) {
        Some(name) => {
            (name.starts_with("summary") && name.ends_with(".json"))
                || (name.starts_with("report") && name.ends_with(".html"))
        }
        None => true,
    }
}

/// One text encoder's embedding cache.
pub(crate) fn text_cache(encoder_key: &str) -> String {
    format!("_cache/text_embeddings/{encoder_key}")
}

/// Top folder of the leases ([`crate::lease`]).
pub(crate) const LEASES: &str = "_leases";

/// A date's leases: the date's own and its shards'.
pub(crate) fn leases(date: RunDate) -> String {
    format!("{LEASES}/{}", date.partition())
}

/// The lease of the run that writes a date (its work folder, its
/// publication).
pub(crate) fn date_lease(date: RunDate) -> String {
    format!("{}/date", leases(date))
}

/// The lease of the run computing shard `index` of `count`.
pub(crate) fn shard_lease(date: RunDate, count: u32, index: u32) -> String {
    format!("{}/shard-{count}-{index}", leases(date))
}

/// The dates with a `dt=` folder under `top` ([`WORK`] or [`RUNS`]), oldest first.
pub(crate) async fn dates(root: &Root, top: &str) -> Result<Vec<RunDate>> {
    let mut dates: Vec<RunDate> =
        root.subfolders(top).await?.iter().filter_map(|d| d.strip_prefix("dt=").and_then(|d| d.parse().ok())).collect();
    dates.sort();
    Ok(dates)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_hive_partitions_under_fixed_top_folders() {
        let d: RunDate = "2026-11-21".parse().unwrap();
        assert_eq!(stage_marker(d, Stage::Train), "_work/dt=2026-11-21/_stages/train.json");
        assert_eq!(checkpoint_meta(d), "_work/dt=2026-11-21/checkpoint/model.json");
        assert_eq!(shard_marker(d, 4, 1), "_work/dt=2026-11-21/_shards/4/1/_done.json");
        assert_eq!(
            published_file("user_candidates", d, 3, "abc"),
            "user_candidates/dt=2026-11-21/part-00003-abc.parquet"
        );
        assert_eq!(success(d), "_runs/dt=2026-11-21/_SUCCESS");
        assert_eq!(document(d, Document::Summary, "ab12"), "_runs/dt=2026-11-21/summary-ab12.json");
        assert!(is_publication_file(d, "_runs/dt=2026-11-21/report-ab12.html"));
        assert!(is_publication_file(d, "_runs/dt=2026-11-21/report.html"));
        assert!(!is_publication_file(d, "_runs/dt=2026-11-21/manifest.json"));
        assert!(!is_publication_file(d, "_runs/dt=2026-11-21/_SUCCESS"));
        assert!(is_publication_file(d, "user_candidates/dt=2026-11-21/part-00000-x.parquet"));
        assert_eq!(date_lease(d), "_leases/dt=2026-11-21/date");
    }
}
