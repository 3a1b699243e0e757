//! The one integration-test binary: every test module is compiled into it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout, clippy::print_stderr)]

mod airflow;
mod common;
mod e2e;
mod ingest;
mod layering;
mod ops;
mod publish;
mod report;
mod s3;
mod sql_golden;
mod text_encoder;
mod writers;
