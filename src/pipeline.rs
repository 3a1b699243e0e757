//! Running the stages of one date in order, skipping those whose inputs and
//! config are unchanged, and summarising the run.

use crate::clean;
use crate::config::{Config, DeviceChoice, RunDate};
use crate::error::Result;
use crate::job::{Job, Stage, StageReport, StageTimer};

/// What `nightrec run` asks for.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The run date.
    pub date: RunDate,
    /// Stages to run (empty: all).
    pub stages: Vec<Stage>,
    /// Rerun stages even when nothing changed.
    pub force: bool,
    /// Device override.
    pub device: Option<DeviceChoice>,
    /// Train from scratch instead of warm-starting.
    pub full_retrain: bool,
    /// Compute the per-user candidates of one shard only.
    pub shard: Option<crate::candidates::Shard>,
}

impl RunOptions {
    /// All stages of a date, nothing forced, configured device, warm start.
    pub fn new(date: RunDate) -> RunOptions {
        RunOptions { date, stages: Vec::new(), force: false, device: None, full_retrain: false, shard: None }
    }
}

/// The outcome of a run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunSummary {
    /// The run date.
    pub date: String,
    /// The run id.
    pub run_id: String,
    /// Where outputs went.
    pub output: String,
    /// Device used for tensors.
    pub device: String,
    /// Threads of each pool of the process.
    pub threads: crate::resources::Threads,
    /// Per stage.
    pub stages: Vec<StageReport>,
}

/// Run a nightly job.
pub async fn run(cfg: Config, opts: RunOptions) -> Result<RunSummary> {
    let device_choice = opts.device.unwrap_or(cfg.run.device);
    let mut job = Job::new(cfg, opts.date, opts.force)?;
    job.full_retrain = opts.full_retrain;
    let device = crate::device::choose(device_choice)?;
    let inputs = clean::list_inputs(&job).await?;
    job.lineage.input_snapshot = inputs.snapshot.clone();
    if let Some(m) = job.marker(Stage::Train).await? {
        job.lineage.model_version =
            m.facts.iter().find(|f| f.0 == "model version").map(|f| f.1.clone()).unwrap_or_default();
    }
    let selected: Vec<Stage> = if opts.stages.is_empty() { Stage::ALL.to_vec() } else { opts.stages.clone() };
    let mut reports = Vec::new();
    tracing::info!(date = %job.date, run_id = %job.run_id, device = ?device, output = %job.output.folder_url(""), "run starts");
    if let Some(shard) = opts.shard {
        if selected != [Stage::Candidates] && selected != Stage::ALL {
            return Err(crate::Error::Usage(
                "--shard runs the candidates stage only; run the stages before it first, without --shard".into(),
            ));
        }
        let fingerprint = job.fingerprint(Stage::Candidates, "").await?;
        let timer = StageTimer::start(Stage::Candidates);
        let (tables, facts, ran) = crate::candidates::run_shard(&job, device, shard, &fingerprint).await?;
        let marker = timer.finish(&job, fingerprint, tables, facts);
        reports.push(StageReport::from_marker(marker, ran));
        return Ok(summary(&job, device, reports));
    }
    for stage in Stage::ALL.into_iter().filter(|s| selected.contains(s)) {
        let extra = match stage {
            Stage::Clean => inputs.snapshot.clone(),
            // Training starts from the previous checkpoint: it is an input.
            Stage::Train if job.full_retrain => "full retrain".into(),
            Stage::Train => match crate::checkpoint::previous_meta(&job).await? {
                Some((date, meta)) => format!("warm start {date} {}", meta.version),
                None => "no warm start".into(),
            },
            _ => String::new(),
        };
        let fingerprint = job.fingerprint(stage, &extra).await?;
        let published = stage != Stage::Publish
            || job.output.exists(&job.output.path(&crate::publish::success_path(&job.date.to_string()))).await?;
        let unchanged = match job.marker(stage).await? {
            Some(m) if !job.force && published && m.fingerprint == fingerprint => Some(m),
            _ => None,
        };
        if let Some(m) = unchanged {
            tracing::info!(stage = stage.name(), "unchanged since run {}; skipped (use --force to rerun)", m.run_id);
            reports.push(StageReport::from_marker(m, false));
            continue;
        }
        job.clear_marker(stage).await?;
        tracing::info!(stage = stage.name(), "stage starts");
        let timer = StageTimer::start(stage);
        let (tables, facts) = match stage {
            Stage::Clean => clean::run(&job, &inputs).await?,
            Stage::Trainset => crate::trainset::run(&job).await?,
            Stage::Text => crate::text::run(&job, device).await?,
            Stage::Train => {
                let (meta, facts) = crate::train::run(&job, device).await?;
                job.lineage.model_version = meta.version;
                (Vec::new(), facts)
            }
            Stage::Embed => crate::embed::run(&job, device).await?,
            Stage::Candidates => crate::candidates::run(&job, device, &fingerprint).await?,
            Stage::Evaluate => crate::evaluate::run(&job, device).await?,
            Stage::Publish => {
                let (_manifest, facts) = crate::publish::run(&job).await?;
                (Vec::new(), facts)
            }
        };
        let marker = timer.finish(&job, fingerprint, tables, facts);
        job.write_marker(&marker).await?;
        tracing::info!(
            stage = stage.name(),
            seconds = marker.seconds,
            cpu_seconds = marker.cpu_seconds,
            peak_rss_mb = marker.peak_rss_mb,
            "stage done"
        );
        reports.push(StageReport::from_marker(marker, true));
    }
    Ok(summary(&job, device, reports))
}

fn summary(job: &Job, device: tch::Device, stages: Vec<StageReport>) -> RunSummary {
    RunSummary {
        date: job.date.to_string(),
        run_id: job.run_id.clone(),
        output: job.output.folder_url(""),
        device: format!("{device:?}"),
        threads: crate::resources::threads_now(crate::engine::threads(&job.cfg)),
        stages,
    }
}
