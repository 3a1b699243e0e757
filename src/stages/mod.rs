//! The stages of a nightly run, in run order: [`clean`] → [`trainset`] →
//! [`text`] → [`train`] → [`embed`] → [`candidates`] → [`evaluate`] →
//! [`publish`]. [`crate::pipeline`] runs them for a date.
//!
//! A stage imports no other stage: what two stages share lives below them
//! (the table formats in [`crate::tables`], the published state in
//! [`crate::published`], the holdout sample in [`crate::holdout`], the
//! buy-again rule in [`crate::basket`], the encoders in
//! [`crate::encoders`], the bookkeeping in [`crate::ledger`], ...), and a
//! stage hands its results to the next only as data under the output
//! root. `tests/layering.rs` checks it.

pub(crate) mod candidates;
pub(crate) mod clean;
pub(crate) mod embed;
pub(crate) mod evaluate;
pub(crate) mod publish;
pub(crate) mod text;
pub(crate) mod train;
pub(crate) mod trainset;
