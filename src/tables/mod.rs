//! The formats of tables that one stage writes and others read: schemas,
//! row types and the names and order of their values. A table read only by
//! the stage that writes it keeps its format there.

pub(crate) mod evaluation;
pub(crate) mod event_weights;
pub(crate) mod training_epochs;
