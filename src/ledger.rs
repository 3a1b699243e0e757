//! What a run did, stage by stage: the stages and what each depends on,
//! the marker a finished stage leaves (its fingerprint, tables and facts),
//! the report of each stage in a run and the run summary that publish and
//! the HTML report read. Owns no storage path (those are
//! [`crate::layout`]'s) and runs nothing.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::parquet_io::WrittenTable;

/// The stages of a nightly run, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Raw inputs → clean_events, items, users, quarantine, data_quality.
    Clean,
    /// Clean tables → sequences, interactions, popularity, item text.
    Trainset,
    /// Item text → item_text_embeddings.
    Text,
    /// Sequences → model checkpoint.
    Train,
    /// Checkpoint → user_embeddings, item_embeddings.
    Embed,
    /// Embeddings → user_candidates.
    Candidates,
    /// Checkpoint + held-out items → evaluation.
    Evaluate,
    /// Work tables → published partitions, manifest, _SUCCESS.
    Publish,
}

impl Stage {
    /// Every stage in run order.
    pub const ALL: [Stage; 8] = [
        Stage::Clean,
        Stage::Trainset,
        Stage::Text,
        Stage::Train,
        Stage::Embed,
        Stage::Candidates,
        Stage::Evaluate,
        Stage::Publish,
    ];

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Clean => "clean",
            Stage::Trainset => "trainset",
            Stage::Text => "text",
            Stage::Train => "train",
            Stage::Embed => "embed",
            Stage::Candidates => "candidates",
            Stage::Evaluate => "evaluate",
            Stage::Publish => "publish",
        }
    }

    /// Stages whose outputs this one reads.
    pub fn upstream(self) -> &'static [Stage] {
        match self {
            Stage::Clean => &[],
            Stage::Trainset => &[Stage::Clean],
            Stage::Text => &[Stage::Trainset],
            Stage::Train => &[Stage::Trainset, Stage::Text],
            Stage::Embed => &[Stage::Train],
            Stage::Candidates => &[Stage::Embed],
            Stage::Evaluate => &[Stage::Train, Stage::Candidates],
            Stage::Publish => &[Stage::Clean, Stage::Candidates, Stage::Evaluate],
        }
    }

    /// Config sections and single keys whose change invalidates this
    /// stage's outputs (and so, through the fingerprints, every stage
    /// downstream). `run.threads`, `run.device`, `[runtime]` (memory pool,
    /// spill folder, file sizes) and the log format change how a stage
    /// runs, not what it produces: they rerun nothing.
    pub fn config_keys(self) -> &'static [&'static str] {
        match self {
            Stage::Clean => &["clean", "run.lookback_days"],
            Stage::Trainset => &["trainset", "candidates.repeat_purchases"],
            Stage::Text => &["text"],
            Stage::Train => &["model", "run.seed"],
            // With buy-again on, also what chooses the explore weight
            // ([`crate::basket::explore_inputs`]).
            Stage::Embed => &[],
            Stage::Candidates => &["candidates", "run.seed"],
            Stage::Evaluate => &EVALUATE_KEYS,
            Stage::Publish => &["gate"],
        }
    }
}

/// The evaluate stage's settings: its own, the seed, and buy-again mode's
/// (its next-basket figures).
const EVALUATE_KEYS: [&str; 7] = {
    let mut keys = ["evaluate", "run.seed", "candidates.repeat_purchases", "", "", "", ""];
    let mut i = 0;
    while i < crate::config::BUY_AGAIN_KEYS.len() {
        keys[3 + i] = crate::config::BUY_AGAIN_KEYS[i];
        i += 1;
    }
    keys
};

/// What a finished stage leaves behind.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StageMarker {
    pub stage: Stage,
    /// Fingerprint of its inputs and config.
    pub fingerprint: String,
    /// The run that produced it.
    pub run_id: String,
    /// Wall time in seconds.
    pub seconds: f64,
    /// CPU seconds (user + system, all threads).
    #[serde(default)]
    pub cpu_seconds: f64,
    /// Peak resident memory of the process during the stage, in MiB.
    #[serde(default)]
    pub peak_rss_mb: f64,
    /// Tables written.
    pub tables: Vec<WrittenTable>,
    /// Free-form facts for the run summary (metric values, sizes).
    pub facts: Vec<(String, String)>,
}

/// How one stage went in this run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageReport {
    pub stage: Stage,
    /// False when skipped because nothing changed.
    pub ran: bool,
    /// Wall time in seconds (of the run that produced the outputs).
    pub seconds: f64,
    /// CPU seconds, user + system (of the run that produced the outputs).
    pub cpu_seconds: f64,
    /// Peak resident memory during the stage in MiB (likewise).
    pub peak_rss_mb: f64,
    /// Tables and their row counts.
    pub tables: Vec<(String, u64)>,
    /// Facts for the summary.
    pub facts: Vec<(String, String)>,
}

impl StageReport {
    /// The report of a stage from its marker.
    pub(crate) fn from_marker(marker: StageMarker, ran: bool) -> StageReport {
        StageReport {
            stage: marker.stage,
            ran,
            seconds: marker.seconds,
            cpu_seconds: marker.cpu_seconds,
            peak_rss_mb: marker.peak_rss_mb,
            tables: marker.tables.iter().map(|t| (t.name.clone(), t.rows())).collect(),
            facts: marker.facts,
        }
    }
}

/// Time a stage body (wall, CPU, peak memory) and build its marker.
pub(crate) struct StageTimer {
    stage: Stage,
    start: Instant,
    cpu: f64,
}

impl StageTimer {
    /// Start timing.
    pub(crate) fn start(stage: Stage) -> StageTimer {
        crate::resources::reset_peak_rss();
        StageTimer { stage, start: Instant::now(), cpu: crate::resources::cpu_seconds() }
    }

    /// Finish with the tables written and summary facts.
    pub(crate) fn finish(
        self,
        run_id: &str,
        fingerprint: String,
        tables: Vec<WrittenTable>,
        facts: Vec<(String, String)>,
    ) -> StageMarker {
        StageMarker {
            stage: self.stage,
            fingerprint,
            run_id: run_id.to_string(),
            seconds: self.start.elapsed().as_secs_f64(),
            cpu_seconds: crate::resources::cpu_seconds() - self.cpu,
            peak_rss_mb: crate::resources::peak_rss_mb(),
            tables,
            facts,
        }
    }
}

/// The outcome of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSummary {
    /// The run date.
    pub date: String,
    pub run_id: String,
    /// Where outputs went.
    pub output: String,
    /// Device used for tensors.
    pub device: String,
    /// Threads of each pool of the process.
    #[serde(default)]
    pub threads: crate::resources::Threads,
    /// Per stage.
    pub stages: Vec<StageReport>,
    /// The URL of the date's report, once the date is published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<String>,
    /// What the run noticed and went on with (input files that arrived or
    /// changed after the date's inputs were pinned, ...), each saying what
    /// to do about it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}
