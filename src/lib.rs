//! nightrec: a nightly batch job that turns e-commerce behaviour logs into
//! tomorrow's recommendation candidate tables.
//!
//! The stages (one module each) run in order: [`clean`] → [`trainset`] →
//! [`text`] → [`train`] → [`embed`] → [`candidates`] → [`evaluate`] →
//! [`publish`]; [`pipeline`] runs them for a date. SQL lives in
//! `sql/<stage>/<table>.sql` ([`sql`]); pure tch modules in [`model`].

#![deny(missing_docs)]

pub mod arrays;
pub mod basket;
pub mod candidates;
pub mod checkpoint;
pub mod clean;
pub mod cli;
pub mod config;
pub mod datagen;
pub mod device;
pub mod embed;
pub mod engine;
pub mod error;
pub mod evaluate;
pub mod ingest;
pub mod job;
pub mod layout;
pub mod lease;
pub mod metrics;
pub mod model;
pub mod parquet_io;
pub mod pipeline;
pub mod progress;
pub mod publish;
pub mod quality;
pub mod report;
pub mod resources;
pub mod rng;
pub mod seqdata;
pub mod sql;
pub mod sqlcmd;
pub mod state;
pub mod storage;
pub mod text;
pub mod text_cache;
pub mod topk;
pub mod train;
pub mod trainset;

pub use error::{Error, ExitCode, Result};
