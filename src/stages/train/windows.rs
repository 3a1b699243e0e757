//! Which steps training reads: the part of each user's sequence, cut into
//! windows the model can read.

use crate::seqdata::SeqData;

/// Which steps of each user's sequence are trained on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Part {
    /// The training steps (validation and test held out).
    Train,
    /// Every step but the test ones (the holdout model's refit).
    BeforeTest,
    /// Every step (the published model's refit).
    All,
}

/// Training windows: each user's steps (`part` of them) cut from the end
/// into pieces of at most `max_len + 1` items that overlap by one item, so
/// that every transition is trained once and no input is longer than the
/// model reads.
pub(super) fn windows<'a>(data: &'a SeqData, users: &[usize], part: Part, max_len: usize) -> Vec<&'a [i64]> {
    let mut out = Vec::new();
    for u in users {
        let s = data.split(*u);
        let t = match part {
            Part::Train => s.train,
            Part::BeforeTest => s.before_test,
            Part::All => data.seqs[*u].as_slice(),
        };
        let mut end = t.len();
        while end >= 2 {
            let start = end.saturating_sub(max_len + 1);
            out.push(&t[start..end]);
            if start == 0 {
                break;
            }
            end = start + 1;
        }
    }
    out
}
