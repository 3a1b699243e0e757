//! JSON state files: stage markers, shard markers, checkpoint metadata,
//! manifests and run summaries. One policy holds for all of them:
//!
//! - **Written whole, in one PUT.** A PUT replaces an object at once on a
//!   local filesystem (object_store writes a temporary file, then renames
//!   it) and on S3, GCS and Azure, so a reader sees the old document or the
//!   new one, never part of one, even when the writer is killed.
//! - **Missing reads as absent** (`None`).
//! - **Unreadable reads as absent too, with a warning** naming the file: a
//!   document that does not parse (truncated or edited by hand, written by
//!   an incompatible version) records nothing nightrec can trust, so the
//!   work it recorded is done again: the stage reruns, the shard is
//!   recomputed, the date counts as not published and is published again,
//!   the checkpoint is not warm-started from. Nothing is deleted on the
//!   strength of a file that cannot be read.
//! - Errors of the store itself (permissions, network) are errors, not
//!   absence: they exit 1 and a retry may succeed.

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::storage::Root;

/// Read a state file (path relative to `root`) under the policy above.
pub(crate) async fn read<T: DeserializeOwned>(root: &Root, rel: &str) -> Result<Option<T>> {
    let Some(bytes) = root.get_opt(&root.path(rel)).await? else { return Ok(None) };
    Ok(parse(root, rel, &bytes))
}

/// Parse a state file's bytes; unreadable is absent, with a warning.
pub(crate) fn parse<T: DeserializeOwned>(root: &Root, rel: &str, bytes: &[u8]) -> Option<T> {
    match serde_json::from_slice(bytes) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(
                file = %root.object_url(&root.path(rel)),
                "unreadable state file treated as absent (the work it recorded is redone): {e}"
            );
            None
        }
    }
}

/// Serialise a state document as it is written (pretty JSON).
pub(crate) fn to_bytes<T: Serialize>(rel: &str, value: &T) -> Result<Bytes> {
    serde_json::to_vec_pretty(value).map(Bytes::from).map_err(|e| Error::Internal(format!("serialising {rel}: {e}")))
}

/// Write a state file whole, in one PUT; returns the bytes written.
pub(crate) async fn write<T: Serialize>(root: &Root, rel: &str, value: &T) -> Result<Bytes> {
    let bytes = to_bytes(rel, value)?;
    root.put(&root.path(rel), bytes.clone()).await?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Doc {
        n: u32,
    }

    #[tokio::test]
    async fn missing_and_unreadable_files_read_as_absent() {
        let root = Root::open("memory://state-test/out").unwrap();
        assert_eq!(read::<Doc>(&root, "a.json").await.unwrap(), None);
        write(&root, "a.json", &Doc { n: 3 }).await.unwrap();
        assert_eq!(read::<Doc>(&root, "a.json").await.unwrap(), Some(Doc { n: 3 }));
        root.put(&root.path("b.json"), Bytes::from_static(b"{\"n\": 3")).await.unwrap();
        assert_eq!(read::<Doc>(&root, "b.json").await.unwrap(), None);
        root.put(&root.path("c.json"), Bytes::from_static(b"{\"m\": 1}")).await.unwrap();
        assert_eq!(read::<Doc>(&root, "c.json").await.unwrap(), None);
    }
}
