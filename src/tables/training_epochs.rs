//! The `training_epochs` table: one row per epoch of each training phase.
//! Written by the train stage, read by the report.

/// The phases of training, in order, as `training_epochs.phase` names them.
pub(crate) const PHASES: [&str; 3] = ["pretrain", "fine-tune", "refit"];
