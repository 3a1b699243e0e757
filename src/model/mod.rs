//! Pure tch modules: construction from an `nn::Path` and a config, and
//! forward passes. No IO, no device choice, no data loading here.

pub mod bert;
pub mod seqrec;

pub use seqrec::{SeqRec, SeqRecConfig};
