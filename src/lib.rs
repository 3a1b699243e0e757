//! nightrec: a nightly batch job that turns e-commerce behaviour logs into
//! tomorrow's recommendation candidate tables.
//!
//! The stages ([`stages`], one module each) run in order: clean →
//! trainset → text → train → embed → candidates → evaluate → publish;
//! [`pipeline`] runs them for a date. Every other module is a floor below
//! them that imports no stage. SQL lives in `sql/<stage>/<table>.sql`
//! ([`sql`]); pure tch modules in [`model`].

#![deny(missing_docs)]

pub mod arrays;
pub mod basket;
pub mod category;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod datagen;
pub mod device;
pub mod encoders;
pub mod engine;
pub mod error;
pub mod holdout;
pub mod ingest;
pub mod job;
pub mod layout;
pub mod lease;
pub mod ledger;
pub mod metrics;
pub mod model;
pub mod parquet_io;
pub mod pipeline;
pub mod progress;
pub mod published;
pub mod quality;
pub mod report;
pub mod resources;
pub mod rng;
pub mod seqdata;
pub mod sql;
pub mod sqlcmd;
pub mod stages;
pub mod state;
pub mod storage;
pub mod tables;
pub mod text_cache;
pub mod topk;

pub use error::{Error, ExitCode, Result};
