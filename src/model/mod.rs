//! Pure tch modules: construction from an `nn::Path` and a config, and
//! forward passes. No IO, no device choice, no data loading here.

pub(crate) mod bert;
pub(crate) mod seqrec;

pub(crate) use seqrec::{SeqRec, SeqRecConfig};
