//! Typed job configuration.
//!
//! Precedence: command-line flags > `NIGHTREC_<SECTION>__<KEY>` environment
//! variables > the TOML file (`jobs/nightly.toml`) > built-in defaults.
//! Unknown keys are rejected so that a typo never silently falls back to a
//! default. Credentials are never part of the configuration: object stores
//! read them from the environment or the cloud's own providers.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use chrono::{Duration, NaiveDate};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The settings of buy-again mode's scoring: what the explore weight the
/// embed stage chooses, and the evaluation's next-basket figures, depend on
/// (besides `candidates.repeat_purchases`). In fingerprint order.
pub(crate) const BUY_AGAIN_KEYS: [&str; 4] = [
    "candidates.buy_again_weight",
    "candidates.buy_again_half_life_days",
    "candidates.buy_again_basket_decay",
    "candidates.explore_weights",
];

/// The configuration bundled into the binary, identical to `jobs/nightly.toml`.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../jobs/nightly.toml");

/// A run date: the last day of behaviour the job reads; candidates are for
/// the following day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RunDate(NaiveDate);

impl RunDate {
    /// The calendar date.
    pub fn date(self) -> NaiveDate {
        self.0
    }
    /// Start of the day (UTC) in milliseconds since the epoch.
    pub fn start_millis(self) -> i64 {
        self.0.and_hms_opt(0, 0, 0).map(|t| t.and_utc().timestamp_millis()).unwrap_or(0)
    }
    /// The date `days` earlier.
    pub fn minus_days(self, days: u32) -> RunDate {
        RunDate(self.0 - Duration::days(i64::from(days)))
    }
    /// The date `days` later.
    pub fn plus_days(self, days: u32) -> RunDate {
        RunDate(self.0 + Duration::days(i64::from(days)))
    }
    /// Hive partition folder name, `dt=YYYY-MM-DD`.
    pub fn partition(self) -> String {
        format!("dt={self}")
    }
}

/// The days a night reads: from `start` to the run date, both included,
/// resolved once from the run date and `run.lookback_days` and carried to
/// every reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Window {
    /// The first day of behaviour read.
    pub start: RunDate,
    /// The run date: the last day read.
    pub end: RunDate,
}

impl Window {
    /// The `lookback_days` days up to and including `date`.
    pub(crate) fn new(date: RunDate, lookback_days: u32) -> Window {
        Window { start: date.minus_days(lookback_days.saturating_sub(1)), end: date }
    }
    /// Start of the window (UTC midnight of its first day), epoch millis.
    pub(crate) fn start_millis(self) -> i64 {
        self.start.start_millis()
    }
    /// End of the window (exclusive: midnight after the run date), epoch millis.
    pub(crate) fn end_millis(self) -> i64 {
        self.end.plus_days(1).start_millis()
    }
    /// Whether a Hive partition `dt=d` is read: the window's days and the
    /// day before it (a day's partition may hold events stamped just after
    /// midnight of the next day, in another time zone). The day after the
    /// run date is never read: it is still being written while the night
    /// runs, and reading it would make a rerun of the date depend on when
    /// it ran.
    pub(crate) fn reads_partition(self, d: RunDate) -> bool {
        d >= self.start.minus_days(1) && d <= self.end
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..={}", self.start, self.end)
    }
}

impl fmt::Display for RunDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.format("%Y-%m-%d"))
    }
}

impl FromStr for RunDate {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
            .map(RunDate)
            .map_err(|e| Error::Config(format!("invalid date {s:?} (want YYYY-MM-DD): {e}")))
    }
}

impl TryFrom<String> for RunDate {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<RunDate> for String {
    fn from(d: RunDate) -> String {
        d.to_string()
    }
}

/// Where tensors live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// CUDA when available, else CPU.
    #[default]
    Auto,
    /// Always CPU.
    Cpu,
    /// CUDA; fail if none is available.
    Cuda,
}

/// Behaviour event types of the input contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    /// A product page view.
    View,
    /// A click on a product tile.
    Click,
    /// Added to the cart.
    AddToCart,
    /// Bought.
    Purchase,
    /// A search (no item).
    Search,
    /// A star rating.
    Rating,
    /// A written review.
    Review,
}

impl EventType {
    /// The event type as it appears in the data.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::View => "view",
            EventType::Click => "click",
            EventType::AddToCart => "add_to_cart",
            EventType::Purchase => "purchase",
            EventType::Search => "search",
            EventType::Rating => "rating",
            EventType::Review => "review",
        }
    }
}

/// Storage roots: any object_store URL or a local path.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Input root holding `events/`, `items/` and optionally `users/`.
    pub input: String,
    /// Output root for published tables, work files and run manifests.
    pub output: String,
}

/// Whole-run settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Days of behaviour before and including the run date that are read.
    pub lookback_days: u32,
    /// Seed for every random choice (shuffles, initialisation, dropout).
    pub seed: u64,
    /// Device for training and candidate generation.
    pub device: DeviceChoice,
    /// Threads for every pool of the process: libtorch, rayon, DataFusion
    /// and tokio (0 = all cores; resolved to a count when the configuration
    /// is read, so every reader sees the same number).
    pub threads: usize,
    /// A run holds a lease on its (output root, date) for this long past
    /// its last heartbeat (it renews it every quarter of this); a lease
    /// left by a killed process on another machine can be taken over once
    /// it has expired (on the same machine, as soon as its process is gone).
    pub lease_seconds: u64,
}

/// Cleaning rules and the data-quality gate.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CleanConfig {
    /// Above this fraction of defective event rows (malformed or breaking a
    /// rule, among the rows inside the window) the run fails (exit 3). Rows
    /// outside the window and bot rows do not count here.
    pub max_bad_row_fraction: f64,
    /// Above this fraction of event rows (inside the window) from users over
    /// the bot limits the run fails (exit 3).
    pub max_bot_fraction: f64,
    /// A gap longer than this starts a new session when `session_id` is absent.
    pub session_gap_minutes: u32,
    /// A user with more events than this in one minute is treated as a bot.
    pub bot_max_events_per_minute: u32,
    /// A user with more events than this in one day is treated as a bot.
    pub bot_max_events_per_day: u32,
    /// Input files that may fail to decode to their end (corrupt Parquet)
    /// before the run fails (exit 3).
    pub max_unreadable_files: usize,
    /// A row of a `dt=D` partition whose timestamp is more than this many
    /// hours before D or after the end of D is a defect (`wrong_partition`):
    /// a producer that writes seconds for milliseconds, or shifts time
    /// zones, moves whole days of events far from their partition.
    pub partition_tolerance_hours: f64,
    /// Above this fraction of defective rows in one event file (of at least
    /// [`MIN_FILE_ROWS_GATED`] rows inside the window) the run fails (exit
    /// 3), whatever the fraction over all files: one day of garbage among
    /// thirty is only about 3% of the window.
    pub max_bad_file_fraction: f64,
    /// Replace user ids with a keyed hash (HMAC-SHA256 under the secret in
    /// `NIGHTREC_USER_ID_KEY`) in every table, before anything is written.
    pub pseudonymize_user_ids: bool,
}

/// Event files with fewer rows inside the window than this are left to the
/// overall gate (`clean.max_bad_row_fraction`) only: one broken row in a
/// file of three says little about the producer.
pub(crate) const MIN_FILE_ROWS_GATED: i64 = 20;

/// Training-set construction.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainsetConfig {
    /// Most recent items the model reads per user (held-out steps come on top).
    pub max_sequence_length: usize,
    /// Last steps of each user held out as test items.
    pub test_steps: usize,
    /// Steps before the test steps held out for validation (early stopping).
    pub valid_steps: usize,
    /// Items within this many steps of each other count as co-occurring.
    pub cooccurrence_window: usize,
    /// Weight of each event type in a sequence step.
    pub event_weights: EventWeights,
}

/// How much each kind of event says about a user's interest in an item.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventWeights {
    /// A product page view.
    pub view: f64,
    /// A click on a product tile.
    pub click: f64,
    /// Added to the cart.
    pub add_to_cart: f64,
    /// Bought.
    pub purchase: f64,
    /// A star rating.
    pub rating: f64,
    /// A written review.
    pub review: f64,
}

impl EventWeights {
    /// (event type, weight) for every event type that has an item.
    pub fn pairs(&self) -> [(EventType, f64); 6] {
        [
            (EventType::View, self.view),
            (EventType::Click, self.click),
            (EventType::AddToCart, self.add_to_cart),
            (EventType::Purchase, self.purchase),
            (EventType::Rating, self.rating),
            (EventType::Review, self.review),
        ]
    }
}

/// Which item-text encoder the `text` stage uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TextEncoderKind {
    /// The pretrained all-MiniLM-L6-v2 sentence encoder (384 dimensions).
    Minilm,
    /// A feature-hashing bag of words (no model files; `hashing_dim` wide).
    Hashing,
}

/// Item text embedding.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextConfig {
    pub encoder: TextEncoderKind,
    /// Folder with the MiniLM `model.safetensors`, `tokenizer.json` and
    /// `config.json`; empty means the cache `make setup` fills
    /// (`$NIGHTREC_CACHE/models/all-minilm-l6-v2`, default cache
    /// `~/.cache/nightrec`).
    pub model_dir: String,
    /// Tokens read per item text (longer texts are truncated).
    pub max_tokens: usize,
    /// Item texts encoded per forward pass.
    pub batch_size: usize,
    /// Width of the hashing encoder's vectors.
    pub hashing_dim: usize,
}

/// The sequence model and its training.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Embedding and hidden dimension.
    pub dim: i64,
    /// Transformer layers.
    pub layers: usize,
    /// Longest input the model reads (positions); longer training histories
    /// are cut into several windows, serving reads the most recent items.
    pub max_len: usize,
    /// Attention heads (must divide `dim`).
    pub heads: i64,
    /// Dropout probability during training.
    pub dropout: f64,
    /// Add a learned projection of each item's text embedding to its input.
    pub text_fusion: bool,
    /// With text: the per-item delta added to the text projection of an
    /// item that has text is kept within this norm (text-based
    /// initialisation with a bounded delta); 0 = no bound (a free ID
    /// embedding plus the projection). Items without text are never bounded.
    pub text_delta_max_norm: f64,
    /// The bound grows with the evidence for an item: an item with `n`
    /// training interactions may move `text_delta_max_norm × √(1 + n /
    /// this)` from its text, so well-known items get their own place while
    /// rare and new ones stay near items like them; 0 = one bound for all.
    pub text_delta_evidence: f64,
    /// In training, the share of items with text whose delta (ID embedding)
    /// is left out of each step, so that the text projection alone learns
    /// to stand for an item, as it must for items without interactions.
    pub id_dropout: f64,
    /// Weight of the image-embedding projection, when the catalog has one.
    pub image_alpha: f64,
    /// Masked-item pretraining epochs before fine-tuning (0: none).
    pub pretrain_epochs: usize,
    /// Pretraining runs only on a log this dense: users' mean training
    /// history of at least this many steps (0: whenever `pretrain_epochs`
    /// asks for it). Sparse shop logs lose by it.
    pub pretrain_min_history: f64,
    /// Share of sequence positions masked in pretraining.
    pub mask_prob: f64,
    /// Most fine-tuning (next-item) epochs when training from scratch.
    pub epochs: usize,
    /// Most fine-tuning epochs when warm-starting from an earlier date.
    pub warm_start_epochs: usize,
    /// Warm-start only from a checkpoint at most this many days old.
    pub warm_start_max_age_days: u32,
    /// Stop when validation NDCG@10 has not improved for this many epochs,
    /// when its standard error is at most `patience_noise`.
    pub patience: usize,
    /// A noisier validation sample (few users) waits proportionally longer:
    /// patience × standard error / `patience_noise`, up to `max_patience`.
    /// 20,000 validation users are typically below it; MovieLens-100k's
    /// 943 about 3.5 times above.
    pub patience_noise: f64,
    /// The longest patience the noise rule gives.
    pub max_patience: usize,
    /// After early stopping: next-item epochs that continue from the best
    /// weights on every step, each user's held-out ones included, for the
    /// published model (and, for the offline evaluation, the same epochs
    /// on every step but the test ones). 0 = publish the best weights.
    pub refit_epochs: usize,
    /// Users in the fixed random sample validation NDCG@10 is measured on
    /// after each fine-tuning epoch (all users when fewer have a
    /// validation step). More users: less noise in early stopping.
    pub validation_users: usize,
    /// The same when warm-starting: yesterday's weights are already near a
    /// good model, so an epoch without improvement ends training sooner.
    pub warm_start_patience: usize,
    /// Training loss (masked-item pretraining and next-item fine-tuning):
    /// softmax over the whole catalog, over sampled negatives, or chosen
    /// by cost (`auto`).
    pub loss: LossKind,
    /// With `loss = "auto"`, the full softmax is used while its output
    /// layer (catalog × dim per trained position) costs at most this many
    /// times a whole sampled-softmax step (transformer + sampled output).
    pub full_softmax_max_cost: f64,
    /// With `loss = "auto"`, the full softmax is also used while one epoch
    /// of its output layer (next-item positions × catalog × dim) is at most
    /// this many billion multiply-adds.
    pub full_softmax_max_epoch_gmacs: f64,
    /// Negatives per batch for the sampled softmax.
    pub sampled_negatives: usize,
    /// How the sampled softmax draws its negatives.
    pub negative_sampling: NegativeSampling,
    /// Sequences per training batch.
    pub batch_size: usize,
    /// How an epoch's sequences are cut into batches.
    pub batches: BatchOrder,
    /// How item and position embeddings are combined into the first
    /// block's input.
    pub input_norm: InputNorm,
    /// AdamW learning rate.
    pub learning_rate: f64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Gradient norm clip.
    pub grad_clip: f64,
    /// Memory for a batch's logits, in MiB: the full softmax scores a
    /// batch's positions in chunks that fit; the sampled softmax makes the
    /// batch smaller when its logits would not.
    pub memory_budget_mb: usize,
    /// Training arithmetic: `fp32`, `bf16` (mixed precision: f32 weights,
    /// gradients and optimiser state, bf16 matrix products), or `auto`
    /// (bf16 on a CPU with AVX512-BF16, f32 otherwise). Inference is f32.
    pub precision: Precision,
}

/// Arithmetic of the training step's matrix products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// bf16 where it is fast: on a CPU with AVX512-BF16.
    Auto,
    /// Single precision throughout.
    Fp32,
    /// bf16 products, f32 everything else.
    Bf16,
}

/// The next-item loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LossKind {
    /// Softmax cross-entropy over every item.
    Full,
    /// Softmax cross-entropy over the target and shared sampled negatives.
    Sampled,
    /// Full while it costs at most `full_softmax_max_cost` sampled steps.
    Auto,
}

/// How the sampled softmax draws negatives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NegativeSampling {
    /// Every item equally likely.
    Uniform,
    /// In proportion to (training occurrences + 1)^0.75, with every logit
    /// corrected by −log(expected draws) (logQ), so that frequent items are
    /// not pushed down for being drawn often.
    Popularity,
}

/// How an epoch's training sequences are cut into batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchOrder {
    /// Sequences of similar length together (little padding, fastest);
    /// the batches come in random order.
    ByLength,
    /// Sequences in random order, whatever their length (as SASRec trains):
    /// more padding, but every batch is a sample of the whole log.
    Mixed,
    /// `mixed` when the full softmax is chosen (its output layer is most of
    /// a step, so the padding and the extra encoder passes cost little),
    /// `by_length` with the sampled softmax (the encoder is most of a step:
    /// random batches cost 1.4-1.6x an epoch at generated M).
    Auto,
}

/// How the first transformer block's input is formed from the item rows
/// and the position embeddings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputNorm {
    /// Their sum, layer-normalised.
    LayerNorm,
    /// Item rows × √dim plus positions, not normalised (SASRec's input).
    Scale,
}

/// Candidate generation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CandidatesConfig {
    /// Candidates per user.
    pub k: usize,
    /// Items a user interacted with in these ways are never recommended again.
    pub exclude_event_types: Vec<EventType>,
    /// Memory for one block of the users × items score matrix, in MiB.
    pub memory_budget_mb: usize,
    /// History items considered when choosing `reason_item_id`.
    pub reason_history: usize,
    /// Similar items per item in `item_similar`.
    pub similar_k: usize,
    /// Candidates per user in `cross_category`.
    pub cross_category_k: usize,
    /// A user's dominant categories (by weighted interactions) that
    /// `cross_category` stays out of.
    pub dominant_categories: usize,
    /// Depth of the category path that defines a category for
    /// `cross_category` (1 = top level, e.g. `Home`).
    pub category_level: usize,
    /// Users with at most this many distinct history items get their
    /// segment's favourites (`source = cold_start`) instead of the model's list.
    pub cold_start_max_history: usize,
    /// k of the k-means over user embeddings (`user_segments`).
    pub segments: usize,
    /// Lloyd iterations of the k-means.
    pub kmeans_iterations: usize,
    /// Days of events behind `popular_items`.
    pub trending_days: u32,
    /// Half-life of an event's weight in `popular_items`, in days.
    pub trending_half_life_days: f64,
    /// Items per category in `popular_items`.
    pub popular_k: usize,
    /// Most frequent search queries given `query_candidates`.
    pub top_queries: usize,
    /// Searches a query needs in the window to be included.
    pub query_min_count: usize,
    /// Items per query in `query_candidates`.
    pub query_k: usize,
    /// Weight of the model (sigmoid of the inner product) against the
    /// segment's favourites in a cold-start user's score.
    pub cold_start_model_weight: f64,
    /// Purchased items may come back, ranked with a "buy again" source
    /// (`--repeat-purchases`; for consumables).
    pub repeat_purchases: bool,
    /// Half-life in days of a past basket's weight in "buy again".
    pub buy_again_half_life_days: f64,
    /// Each later basket with a purchase multiplies an earlier basket's
    /// weight in "buy again" by this (0..=1; TIFU-KNN's within-basket decay).
    pub buy_again_basket_decay: f64,
    /// Multiplier of the "buy again" chance (the decayed share of the
    /// user's baskets that bought the item; at most 1 after it).
    pub buy_again_weight: f64,
    /// Multipliers of the model's chance (next-step probability × the
    /// user's basket size; at most 1 after it) in repeat mode. With more
    /// than one, each night uses the one the blend does best with on the
    /// evaluation's held-out baskets.
    pub explore_weights: Vec<f64>,
}

impl CandidatesConfig {
    /// Event types whose items are never recommended again to the user
    /// (purchases may come back with `repeat_purchases`).
    pub fn excluded_types(&self) -> Vec<EventType> {
        let mut t = self.exclude_event_types.clone();
        if self.repeat_purchases {
            t.retain(|e| *e != EventType::Purchase);
        }
        t
    }
}

/// Offline evaluation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluateConfig {
    /// Held-out users scored (0 = all). The sample is chosen by a keyed
    /// hash of the user id and `run.seed`, so the same users are scored
    /// every night while they have a held-out step.
    pub sample_users: usize,
}

/// Day-over-day checks before a date is published, against the latest
/// date published before it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateConfig {
    /// Run the checks (false: publish without comparing).
    pub enabled: bool,
    /// Least mean share of a user's top-K that was in their previous top-K.
    pub min_candidate_overlap: f64,
    /// Least catalog coverage (distinct candidate items / in-stock items)
    /// as a fraction of the previous date's.
    pub min_coverage_ratio: f64,
    /// Most increase of the share of users served cold-start or popular
    /// lists, in absolute points (0.1 = ten points).
    pub max_cold_share_increase: f64,
    /// Most relative drop of the model's NDCG@10 on the held-out split.
    pub max_ndcg_drop: f64,
}

/// Query-engine resources.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// DataFusion memory pool in MiB; operators spill to disk beyond it.
    pub sql_memory_mb: usize,
    /// Local folder for spill files (empty = system temp folder).
    pub spill_dir: String,
    /// Rows per Parquet file before a new part file is started.
    pub max_rows_per_file: usize,
}

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Storage roots.
    pub storage: StorageConfig,
    /// Whole-run settings.
    pub run: RunConfig,
    /// Cleaning rules.
    pub clean: CleanConfig,
    /// Training-set construction.
    pub trainset: TrainsetConfig,
    /// Item text embedding.
    pub text: TextConfig,
    /// Sequence model.
    pub model: ModelConfig,
    /// Candidate generation.
    pub candidates: CandidatesConfig,
    /// Offline evaluation.
    pub evaluate: EvaluateConfig,
    /// Day-over-day publish gate.
    pub gate: GateConfig,
    /// Query-engine resources.
    pub runtime: RuntimeConfig,
}

impl Config {
    /// Load a TOML file (or the bundled default when `path` is None), then
    /// apply `NIGHTREC_<SECTION>__<KEY>` environment overrides.
    pub fn load(path: Option<&Path>) -> Result<Config> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p)
                .map_err(|e| Error::Config(format!("cannot read config {}: {e}", p.display())))?,
            None => DEFAULT_CONFIG_TOML.to_string(),
        };
        let origin = path.map(|p| p.display().to_string()).unwrap_or_else(|| "built-in defaults".into());
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::from_toml_with_env(&text, &origin, &env)
    }

    /// Parse TOML text and apply environment-style overrides.
    /// A file only needs the keys it changes: it is laid over the built-in
    /// defaults (`jobs/nightly.toml` as bundled), and a key the defaults do
    /// not have is still rejected.
    pub fn from_toml_with_env(text: &str, origin: &str, env: &[(String, String)]) -> Result<Config> {
        let mut value: toml::Table = toml::from_str(DEFAULT_CONFIG_TOML)
            .map_err(|e| Error::Internal(format!("the bundled default configuration: {e}")))?;
        let overlay: toml::Table = toml::from_str(text).map_err(|e| Error::Config(format!("{origin}: {e}")))?;
        merge(&mut value, overlay);
        for (key, raw) in env {
            let Some(rest) = key.strip_prefix("NIGHTREC_") else { continue };
            let Some((section, field)) = rest.split_once("__") else { continue };
            let (section, field) = (section.to_lowercase(), field.to_lowercase());
            let parsed = parse_env_value(raw);
            let table = value.entry(section.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match table {
                toml::Value::Table(t) => {
                    t.insert(field, parsed);
                }
                _ => return Err(Error::Config(format!("{key}: [{section}] is not a table"))),
            }
        }
        let mut cfg: Config = toml::Value::Table(value)
            .try_into()
            .map_err(|e: toml::de::Error| Error::Config(format!("{origin}: {e}")))?;
        if cfg.run.threads == 0 {
            cfg.run.threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reject values that are well-typed but unusable.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        let c = &self.candidates;
        if c.k == 0 || c.similar_k == 0 || c.popular_k == 0 || c.query_k == 0 {
            return bad("candidates.k, similar_k, popular_k and query_k must be at least 1".into());
        }
        if c.segments == 0 || c.category_level == 0 || c.trending_days == 0 {
            return bad("candidates.segments, category_level and trending_days must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&c.cold_start_model_weight) || !(0.0..=1.0).contains(&c.buy_again_basket_decay) {
            return bad("candidates.cold_start_model_weight and buy_again_basket_decay must be within 0..=1".into());
        }
        if !(c.buy_again_weight.is_finite() && c.buy_again_weight >= 0.0)
            || c.explore_weights.is_empty()
            || c.explore_weights.iter().any(|w| !(w.is_finite() && *w >= 0.0))
        {
            return bad("candidates.buy_again_weight and every explore_weights value must be finite and non-negative \
                 (explore_weights at least one)"
                .into());
        }
        if !(c.trending_half_life_days > 0.0 && c.buy_again_half_life_days > 0.0) {
            return bad("candidates.trending_half_life_days and buy_again_half_life_days must be positive".into());
        }
        let g = &self.gate;
        if [g.min_candidate_overlap, g.min_coverage_ratio, g.max_cold_share_increase, g.max_ndcg_drop]
            .iter()
            .any(|v| !v.is_finite() || *v < 0.0)
        {
            return bad("gate thresholds must be finite and non-negative".into());
        }
        if self.model.dim <= 0 || self.model.heads <= 0 || self.model.dim % self.model.heads != 0 {
            return bad(format!(
                "model.dim ({}) must be a positive multiple of model.heads ({})",
                self.model.dim, self.model.heads
            ));
        }
        if !(0.0..=1.0).contains(&self.clean.max_bad_row_fraction) {
            return bad("clean.max_bad_row_fraction must be within 0..=1".into());
        }
        if !(0.0..=1.0).contains(&self.clean.max_bad_file_fraction) {
            return bad("clean.max_bad_file_fraction must be within 0..=1".into());
        }
        if !(self.clean.partition_tolerance_hours.is_finite() && self.clean.partition_tolerance_hours >= 0.0) {
            return bad("clean.partition_tolerance_hours must be finite and non-negative".into());
        }
        if self.run.lease_seconds < 4 {
            return bad("run.lease_seconds must be at least 4".into());
        }
        if !(0.0..=1.0).contains(&self.clean.max_bot_fraction) {
            return bad("clean.max_bot_fraction must be within 0..=1".into());
        }
        if !(0.0..1.0).contains(&self.model.dropout) {
            return bad("model.dropout must be within 0..1".into());
        }
        if !(0.0..1.0).contains(&self.model.mask_prob) || self.model.mask_prob == 0.0 {
            return bad("model.mask_prob must be within (0, 1)".into());
        }
        if !(self.model.pretrain_min_history.is_finite() && self.model.pretrain_min_history >= 0.0) {
            return bad("model.pretrain_min_history must be finite and non-negative".into());
        }
        if !(self.model.full_softmax_max_cost.is_finite() && self.model.full_softmax_max_cost >= 0.0) {
            return bad("model.full_softmax_max_cost must be finite and non-negative".into());
        }
        if !(self.model.full_softmax_max_epoch_gmacs.is_finite() && self.model.full_softmax_max_epoch_gmacs >= 0.0) {
            return bad("model.full_softmax_max_epoch_gmacs must be finite and non-negative".into());
        }
        if self.model.sampled_negatives == 0 || self.model.warm_start_epochs == 0 {
            return bad("model.sampled_negatives and model.warm_start_epochs must be at least 1".into());
        }
        if self.trainset.max_sequence_length < 2 || self.model.max_len < 2 {
            return bad("trainset.max_sequence_length and model.max_len must be at least 2".into());
        }
        if self.trainset.test_steps == 0 || self.trainset.cooccurrence_window == 0 {
            return bad("trainset.test_steps and trainset.cooccurrence_window must be at least 1".into());
        }
        if self.trainset.event_weights.pairs().iter().any(|(_, w)| !w.is_finite() || *w < 0.0) {
            return bad("trainset.event_weights must be finite and non-negative".into());
        }
        if self.run.lookback_days == 0 {
            return bad("run.lookback_days must be at least 1".into());
        }
        if self.model.batch_size == 0 || self.model.epochs == 0 || self.model.validation_users == 0 {
            return bad("model.batch_size, model.epochs and model.validation_users must be at least 1".into());
        }
        if !(self.model.patience_noise.is_finite() && self.model.patience_noise > 0.0) {
            return bad("model.patience_noise must be positive".into());
        }
        if self.text.hashing_dim == 0 || self.text.batch_size == 0 || !(8..=512).contains(&self.text.max_tokens) {
            return bad(
                "text.hashing_dim and text.batch_size must be at least 1, text.max_tokens within 8..=512".into()
            );
        }
        Ok(())
    }

    /// A stable hash of some config sections (`"model"`) or single keys
    /// (`"run.seed"`), used for lineage and to decide whether a stage must
    /// run again. `run.threads`, `run.device` and `run.lease_seconds` are
    /// left out everywhere: they change how a run goes, not what it may
    /// produce.
    pub fn hash_of(&self, keys: &[&str]) -> String {
        let mut all = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        if let Some(run) = all.get_mut("run").and_then(|r| r.as_object_mut()) {
            run.remove("threads");
            run.remove("device");
            run.remove("lease_seconds");
        }
        let mut h = Sha256::new();
        for k in keys {
            h.update(k.as_bytes());
            let value = all.pointer(&format!("/{}", k.replace('.', "/")));
            h.update(value.map(|v| v.to_string()).unwrap_or_default().as_bytes());
        }
        hex(&h.finalize())[..16].to_string()
    }

    /// Hash of the whole configuration.
    pub fn hash(&self) -> String {
        self.hash_of(&[
            "storage",
            "run",
            "clean",
            "trainset",
            "text",
            "model",
            "candidates",
            "evaluate",
            "gate",
            "runtime",
        ])
    }
}

/// Lay `overlay` over `base`, table by table.
fn merge(base: &mut toml::Table, overlay: toml::Table) {
    for (k, v) in overlay {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// An environment value is TOML when it parses as TOML, else a plain string.
fn parse_env_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match toml::from_str::<toml::Table>(&doc) {
        Ok(mut t) => t.remove("v").unwrap_or_else(|| toml::Value::String(raw.to_string())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

/// Lower-case hex of bytes.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_default_parses() {
        let cfg = Config::from_toml_with_env(DEFAULT_CONFIG_TOML, "default", &[]).map(|c| c.candidates.k);
        assert_eq!(cfg.ok(), Some(100));
    }

    #[test]
    fn unknown_key_is_rejected() {
        let text = format!("{DEFAULT_CONFIG_TOML}\n[extra]\nx = 1\n");
        let err = Config::from_toml_with_env(&text, "t", &[]).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("extra")));
    }

    #[test]
    fn a_file_states_only_what_it_changes() {
        let cfg = Config::from_toml_with_env("[candidates]\nk = 5\n[model.extra]\n", "t", &[]);
        assert!(cfg.is_err(), "an unknown nested key was accepted");
        let cfg = Config::from_toml_with_env("[candidates]\nk = 5\n", "t", &[]).ok();
        assert_eq!(cfg.as_ref().map(|c| c.candidates.k), Some(5));
        assert_eq!(cfg.map(|c| c.model.dim), Some(64));
    }

    #[test]
    fn env_overrides_file() {
        let env = vec![
            ("NIGHTREC_CANDIDATES__K".to_string(), "7".to_string()),
            ("NIGHTREC_STORAGE__OUTPUT".to_string(), "s3://b/out".to_string()),
        ];
        let cfg = Config::from_toml_with_env(DEFAULT_CONFIG_TOML, "t", &env).ok();
        assert_eq!(cfg.as_ref().map(|c| c.candidates.k), Some(7));
        assert_eq!(cfg.map(|c| c.storage.output), Some("s3://b/out".to_string()));
    }

    #[test]
    fn wrongly_typed_env_override_is_a_config_error() {
        let env = vec![("NIGHTREC_CANDIDATES__K".to_string(), "many".to_string())];
        let err = Config::from_toml_with_env(DEFAULT_CONFIG_TOML, "t", &env).err();
        assert!(matches!(err, Some(Error::Config(_))));
    }

    #[test]
    fn run_date_parses_and_formats() {
        let d: RunDate = "2026-11-21".parse().unwrap();
        assert_eq!(d.to_string(), "2026-11-21");
        assert_eq!(d.minus_days(21).to_string(), "2026-10-31");
        assert!("2026-13-01".parse::<RunDate>().is_err());
    }
}
