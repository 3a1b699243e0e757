//! nightrec: a nightly batch job that turns e-commerce behaviour logs into
//! tomorrow's recommendation candidate tables.
//!
//! The stages ([`stages`], one module each) run in order: clean →
//! trainset → text → train → embed → candidates → evaluate → publish;
//! [`pipeline`] runs them for a date. Every other module is a floor below
//! them that imports no stage. SQL lives in `sql/<stage>/<table>.sql`
//! ([`sql`]); pure tch modules in `model`.
//!
//! Items are `pub(crate)` unless the binary ([`commands`]) or the
//! integration tests use them; the `unreachable_pub` lint (an error under
//! `clippy -D warnings`) keeps it so, and lets the compiler find dead code.

#![warn(unreachable_pub)]

pub mod arrays;
mod basket;
mod category;
mod checkpoint;
pub mod cli;
pub mod commands;
pub mod config;
pub mod datagen;
mod device;
pub mod encoders;
pub mod engine;
pub mod error;
mod holdout;
mod ingest;
mod job;
mod layout;
mod lease;
pub mod ledger;
mod metrics;
mod model;
pub mod parquet_io;
pub mod pipeline;
mod progress;
mod published;
mod quality;
mod report;
pub mod resources;
pub mod rng;
mod seqdata;
pub mod sql;
mod sqlcmd;
mod stages;
mod state;
pub mod storage;
mod tables;
mod text_cache;
mod topk;

pub use error::{Error, ExitCode, Result};
