//! Running the stages of one date in order, skipping those whose inputs and
//! config are unchanged, and summarising the run.

use crate::config::{Config, DeviceChoice, RunDate};
use crate::error::Result;
use crate::ingest::pin;
use crate::job::Job;
use crate::layout;
use crate::lease;
use crate::ledger::{RunSummary, Stage, StageMarker, StageReport, StageTimer};
use crate::stages::candidates::Shard;
use crate::stages::clean;

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
    pub shard: Option<crate::stages::candidates::Shard>,
}

impl RunOptions {
    /// All stages of a date, nothing forced, configured device, warm start.
    pub fn new(date: RunDate) -> RunOptions {
        RunOptions { date, stages: Vec::new(), force: false, device: None, full_retrain: false, shard: None }
    }
}

/// Run a nightly job.
pub async fn run(cfg: Config, opts: RunOptions) -> Result<RunSummary> {
    let device_choice = opts.device.unwrap_or(cfg.run.device);
    let mut job = Job::new(cfg, opts.date, opts.force)?;
    job.full_retrain = opts.full_retrain;
    let device = crate::device::choose(device_choice)?;
    let selected: Vec<Stage> = if opts.stages.is_empty() { Stage::ALL.to_vec() } else { opts.stages.clone() };
    if let Some(shard) = opts.shard {
        return run_shard(job, device, shard, &selected).await;
    }
    // One writer per output root and date, from before anything is written
    // until the run ends (released when `lease` drops).
    let ttl = std::time::Duration::from_secs(job.cfg.run.lease_seconds);
    let lease = lease::acquire_date(&job.output, job.date, &job.run_id, "run", ttl).await?;
    // `--force` with the clean stage takes the inputs as they are now.
    let repin = job.force && selected.contains(&Stage::Clean);
    let pinned = pin::resolve(&job.input, &job.output, job.date, job.window, &job.run_id, repin).await?;
    job.lineage.input_snapshot = pinned.pin.snapshot(&job.input);
    let source = if pinned.fresh { "pinned now" } else { "the pin of an earlier run" };
    tracing::info!(files = pinned.pin.files.len(), pinned_by = %pinned.pin.run_id, "inputs: {source}");
    let input_checks = pinned.checks(&job.input, job.date);
    let mut warnings = Vec::new();
    for c in &input_checks {
        tracing::warn!(file = %c.source, check = %c.check, "{}", c.detail);
        warnings.push(format!("{} {}: {}", c.check, c.source, c.detail));
    }
    let mut reports = Vec::new();
    tracing::info!(date = %job.date, run_id = %job.run_id, device = ?device, output = %job.output.folder_url(""), "run starts");
    // What killed writes of markers and checkpoints left behind (tables'
    // folders are swept when they are rewritten, publish sweeps its own).
    for folder in [crate::layout::stage_markers(job.date), crate::layout::checkpoint(job.date)] {
        job.output.remove_staging_leftovers(&folder)?;
    }
    for stage in Stage::ALL.into_iter().filter(|s| selected.contains(s)) {
        lease.check()?;
        let fingerprint = job.fingerprint(stage, &inputs_beyond_config(&job, stage, &input_checks).await?).await?;
        let published = stage != Stage::Publish || crate::published::is_published(&job.output, job.date).await?;
        // A train marker without a readable checkpoint is no finished train.
        let trained = stage != Stage::Train || crate::checkpoint::meta(&job).await?.is_some();
        let unchanged = match job.marker(stage).await? {
            Some(m) if !job.force && published && trained && m.fingerprint == fingerprint => Some(m),
            _ => None,
        };
        if let Some(m) = unchanged {
            tracing::info!(
                stage = stage.name(),
                status = "skipped",
                rows = rows(&m),
                "unchanged since run {}; skipped (use --force to rerun)",
                m.run_id
            );
            reports.push(StageReport::from_marker(m, false));
            continue;
        }
        if stage == Stage::Clean {
            refuse_broken_pin(&job, &pinned)?;
        }
        job.clear_marker(stage).await?;
        // Tables carry the model version they were built from, or none.
        job.lineage.model_version = model_version(&job, stage).await?;
        tracing::info!(stage = stage.name(), status = "started", "stage starts");
        let timer = StageTimer::start(stage);
        let (tables, facts) = match stage {
            Stage::Clean => clean::run(&job, &pinned.pin).await?,
            Stage::Trainset => crate::stages::trainset::run(&job).await?,
            Stage::Text => crate::stages::text::run(&job, device).await?,
            Stage::Train => crate::stages::train::run(&job, device).await?,
            Stage::Embed => crate::stages::embed::run(&job, device).await?,
            Stage::Candidates => crate::stages::candidates::run(&job, device, &fingerprint).await?,
            Stage::Evaluate => crate::stages::evaluate::run(&job, device).await?,
            Stage::Publish => {
                let so_far = summary(&job, device, reports.clone());
                let (_manifest, facts) = crate::stages::publish::run(&job, &so_far, &input_checks, &lease).await?;
                (Vec::new(), facts)
            }
        };
        let marker = timer.finish(&job.run_id, fingerprint, tables, facts);
        job.write_marker(&marker).await?;
        tracing::info!(
            stage = stage.name(),
            status = "done",
            rows = rows(&marker),
            seconds = marker.seconds,
            cpu_seconds = marker.cpu_seconds,
            peak_rss_mb = marker.peak_rss_mb,
            "stage done"
        );
        reports.push(StageReport::from_marker(marker, true));
    }
    let mut done = summary(&job, device, reports);
    done.warnings = warnings;
    if selected.contains(&Stage::Publish)
        && let Some(m) = crate::published::read_manifest(&job.output, job.date).await?
    {
        done.report = m.report.map(|r| job.output.object_url(&job.output.path(&r.path)));
    }
    drop(lease);
    Ok(done)
}

/// What a stage's outputs depend on beside its config keys and the stages
/// before it: part of its fingerprint.
async fn inputs_beyond_config(job: &Job, stage: Stage, input_checks: &[crate::quality::Check]) -> Result<String> {
    Ok(match stage {
        Stage::Clean => job.lineage.input_snapshot.clone(),
        // The encoder's own files, not only its settings.
        Stage::Text => crate::encoders::encoder_identity(&job.cfg)?,
        // With buy-again on, embed chooses the explore weight.
        Stage::Embed => crate::basket::explore_inputs(&job.cfg),
        // Training starts from the previous checkpoint: it is an input.
        Stage::Train if job.full_retrain => "full retrain".into(),
        Stage::Train => match crate::checkpoint::previous_meta(job).await? {
            Some((date, meta)) => format!("warm start {date} {}", meta.version),
            None => "no warm start".into(),
        },
        // What the inputs did after the pin is reported in data_quality.
        Stage::Publish => input_checks.iter().map(|c| format!("{}|{}|{};", c.check, c.source, c.value)).collect(),
        _ => String::new(),
    })
}

/// The clean stage must run again (a crash, a changed `[clean]`) but a
/// pinned input file changed or went away: it could not read what the
/// date's first attempt read.
fn refuse_broken_pin(job: &Job, pinned: &pin::Pinned) -> Result<()> {
    let broken: Vec<String> = pinned
        .drift
        .iter()
        .filter(|d| d.breaks_pin())
        .map(|d| job.input.object_url(&job.input.path(&d.file().path)))
        .collect();
    if broken.is_empty() {
        return Ok(());
    }
    Err(crate::Error::DataQuality(format!(
        "the clean stage of {} must run again, but {} input file(s) changed or went away since run {} pinned the \
         night's inputs at {}: {}; rerun the date with --force to read the inputs as they are now",
        job.date,
        broken.len(),
        pinned.pin.run_id,
        pinned.pin.pinned_at,
        broken.join(", ")
    )))
}

/// `--shard I/N`: the per-user candidates of one shard, under the shard's
/// own lease; refused while another process holds the date's.
async fn run_shard(mut job: Job, device: tch::Device, shard: Shard, selected: &[Stage]) -> Result<RunSummary> {
    if selected != [Stage::Candidates] && selected != Stage::ALL {
        return Err(crate::Error::Usage(
            "--shard runs the candidates stage only; run the stages before it first, without --shard".into(),
        ));
    }
    let ttl = std::time::Duration::from_secs(job.cfg.run.lease_seconds);
    let lease = lease::acquire_shard(&job.output, job.date, (shard.index, shard.count), &job.run_id, ttl).await?;
    if let Some(p) = crate::state::read::<pin::InputPin>(&job.output, &layout::input_pin(job.date)).await? {
        job.lineage.input_snapshot = p.snapshot(&job.input);
    }
    let fingerprint = job.fingerprint(Stage::Candidates, "").await?;
    job.lineage.model_version = model_version(&job, Stage::Candidates).await?;
    let timer = StageTimer::start(Stage::Candidates);
    let (tables, facts, ran) = crate::stages::candidates::run_shard(&job, device, shard, &fingerprint).await?;
    lease.check()?;
    let marker = timer.finish(&job.run_id, fingerprint, tables, facts);
    Ok(summary(&job, device, vec![StageReport::from_marker(marker, ran)]))
}

/// A backfill: `opts.date` to `to` in order, each date warm-started from
/// the one before (`opts.full_retrain` applies to the first date only).
/// Dates already published are skipped unless `opts.force`, so the same
/// command run again resumes at the first date not published. Stops at the
/// first failure, with that date's error and exit code. `each` gets every
/// date's summary as it finishes; returns how many dates ran.
pub(crate) async fn backfill(
    cfg: Config,
    opts: RunOptions,
    to: RunDate,
    mut each: impl FnMut(&RunSummary),
) -> Result<usize> {
    if to < opts.date {
        return Err(crate::Error::Usage(format!("--from {} is after --to {to}", opts.date)));
    }
    let output = crate::storage::Root::open(&cfg.storage.output)?;
    let mut ran = 0;
    let mut date = opts.date;
    while date <= to {
        if !opts.force && crate::published::read_manifest(&output, date).await?.is_some() {
            tracing::info!(%date, status = "skipped", "already published; skipped (use --force to rerun)");
        } else {
            let one = RunOptions { date, full_retrain: opts.full_retrain && ran == 0, ..opts.clone() };
            let summary = run(cfg.clone(), one)
                .await
                .map_err(|e| crate::Error::AtDate { date: date.to_string(), source: Box::new(e) })?;
            each(&summary);
            ran += 1;
        }
        date = date.plus_days(1);
    }
    Ok(ran)
}

/// Rows written by a stage, all tables together.
fn rows(marker: &StageMarker) -> u64 {
    marker.tables.iter().map(|t| t.rows()).sum()
}

/// The model version a stage's tables are built from: the checkpoint of
/// the run's date for the stages that read it, none for those before.
async fn model_version(job: &Job, stage: Stage) -> Result<String> {
    let reads_model = matches!(stage, Stage::Embed | Stage::Candidates | Stage::Evaluate | Stage::Publish);
    if !reads_model {
        return Ok(String::new());
    }
    Ok(crate::checkpoint::meta(job).await?.map(|m| m.version).unwrap_or_default())
}

fn summary(job: &Job, device: tch::Device, stages: Vec<StageReport>) -> RunSummary {
    RunSummary {
        date: job.date.to_string(),
        run_id: job.run_id.clone(),
        output: job.output.folder_url(""),
        device: format!("{device:?}"),
        threads: crate::resources::threads_now(job.cfg.run.threads),
        stages,
        report: None,
        warnings: Vec::new(),
    }
}
