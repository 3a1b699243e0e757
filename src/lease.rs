//! One writer at a time: a lease per (output root, date) — and per shard —
//! taken before a run changes anything under it.
//!
//! A lease is a folder of small JSON records, `<seq>.json`, each naming its
//! holder (host, pid, run id, command) and when it expires. The holder is
//! the latest record's; a record is only ever *created*, with object
//! storage's create-if-absent (`PutMode::Create`: `If-None-Match: *` on S3
//! and Azure, a generation precondition on GCS, a hard link on a local
//! disk), so of two processes racing for the next number exactly one wins.
//!
//! - **Acquire**: no live record → create the next number. A live record of
//!   another process → [`Error::LeaseHeld`] (exit 4). A record past its
//!   expiry, or left on this host by a process that no longer exists, is
//!   taken over by creating the next number.
//! - **Heartbeat**: a thread of its own (so that long CPU-bound stages never
//!   starve it) creates the next number every quarter of the lease's
//!   length, then deletes the one before. Finding that number taken means
//!   another process took the lease over (this one stalled past its
//!   expiry): the lease is marked lost, and the run stops at its next check
//!   ([`Lease::check`]) without publishing.
//! - **Release**: dropping the [`Lease`] stops the heartbeat and deletes its
//!   record.
//!
//! Expiry compares the holder's clock with the contender's: keep the
//! machines' clocks within a small fraction of `run.lease_seconds` (NTP).
//! After creating a record the creator reads it back and gives up when it
//! finds another holder's, which also guards stores that do not enforce
//! create-if-absent under concurrency (moto's S3 server, say).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use object_store::{ObjectStore, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use crate::config::RunDate;
use crate::error::{Error, Result};
use crate::storage::Root;
use crate::{layout, state};

/// Who holds a lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Owner {
    /// Host name.
    pub host: String,
    /// Process id on that host.
    pub pid: u32,
    pub run_id: String,
    /// What it runs (for messages).
    pub command: String,
}

impl Owner {
    /// This process, running `command` as run `run_id`.
    pub(crate) fn this_process(run_id: &str, command: &str) -> Owner {
        Owner { host: hostname(), pid: std::process::id(), run_id: run_id.to_string(), command: command.to_string() }
    }

    fn describe(&self) -> String {
        format!("{} (run {}, pid {} on {})", self.command, self.run_id, self.pid, self.host)
    }
}

/// One record of a lease.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Record {
    /// Its number.
    pub seq: u64,
    /// The holder.
    pub owner: Owner,
    /// When the holder took the lease (UTC, RFC 3339).
    pub acquired_at: String,
    /// Until when it holds it unless renewed, epoch milliseconds.
    pub expires_ms: i64,
}

impl Record {
    fn live(&self, now_ms: i64) -> bool {
        // A holder on this host whose process is gone holds nothing.
        let gone = self.owner.host == hostname() && !process_exists(self.owner.pid);
        now_ms < self.expires_ms && !gone
    }
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `len` bytes into the buffer.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown-host".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Whether a process of this host exists (a signal 0 reaches it, or it
/// exists but belongs to someone else).
fn process_exists(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
    // SAFETY: signal 0 only checks whether the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn record_path(scope: &str, seq: u64) -> String {
    format!("{scope}/{seq:020}.json")
}

/// The records of a lease folder, by number.
async fn records(root: &Root, scope: &str) -> Result<Vec<u64>> {
    let mut seqs: Vec<u64> = root
        .list(scope)
        .await?
        .iter()
        .filter_map(|m| m.location.filename()?.strip_suffix(".json")?.parse().ok())
        .collect();
    seqs.sort_unstable();
    Ok(seqs)
}

/// The latest record of a lease, if any (an unreadable one counts as
/// expired: records are written whole, so it was never a lease).
async fn latest(root: &Root, scope: &str) -> Result<Option<(u64, Option<Record>)>> {
    let Some(seq) = records(root, scope).await?.last().copied() else { return Ok(None) };
    Ok(Some((seq, state::read::<Record>(root, &record_path(scope, seq)).await?)))
}

/// Create a record if its number is free; false when it is taken.
async fn create(root: &Root, scope: &str, record: &Record) -> Result<bool> {
    let rel = record_path(scope, record.seq);
    let bytes = state::to_bytes(&rel, record)?;
    let path = root.path(&rel);
    let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
    match root.store.put_opts(&path, PutPayload::from(bytes), opts).await {
        Ok(_) => {}
        Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => return Ok(false),
        Err(e) => return Err(Error::storage(root.object_url(&path), e)),
    }
    // Read back: on a store that does not enforce create-if-absent under
    // concurrency, a racing writer may have replaced it.
    let back: Option<Record> = state::read(root, &rel).await?;
    Ok(back.is_some_and(|b| b.owner == record.owner && b.expires_ms == record.expires_ms))
}

/// A lease held by this process; released when dropped.
pub(crate) struct Lease {
    scope_url: String,
    lost: Arc<AtomicBool>,
    stop: Option<std::sync::mpsc::Sender<()>>,
    heartbeat: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("scope", &self.scope_url).finish()
    }
}

/// Take the lease of `scope` (a folder relative to `root`) for `owner`,
/// for `ttl` past each heartbeat.
pub(crate) async fn acquire(root: &Root, scope: &str, owner: Owner, ttl: Duration) -> Result<Lease> {
    let scope_url = root.folder_url(scope);
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    for _ in 0..8 {
        let (next, replaced) = match latest(root, scope).await? {
            None => (0, None),
            Some((seq, Some(r))) if r.live(now_ms()) => return Err(held_by(root, scope, seq, &r)),
            Some((seq, r)) => (seq + 1, Some(r)),
        };
        let record = Record {
            seq: next,
            owner: owner.clone(),
            acquired_at: chrono::Utc::now().to_rfc3339(),
            expires_ms: now_ms() + ttl_ms,
        };
        if !create(root, scope, &record).await? {
            continue; // someone else took this number: look again
        }
        if let Some(r) = replaced {
            let who = r.map(|r| r.owner.describe()).unwrap_or_else(|| "an unreadable record".into());
            tracing::warn!(lease = %scope_url, "took over a lease left by {who} (expired, or its process is gone)");
        }
        // Records before ours are no one's now.
        for seq in records(root, scope).await?.into_iter().filter(|s| *s < next) {
            root.delete(&root.path(&record_path(scope, seq))).await?;
        }
        return Ok(Lease::hold(root.clone(), scope.to_string(), scope_url, record, ttl));
    }
    Err(Error::Internal(format!("could not take the lease {scope_url}: its records kept changing")))
}

impl Lease {
    fn hold(root: Root, scope: String, scope_url: String, record: Record, ttl: Duration) -> Lease {
        let lost = Arc::new(AtomicBool::new(false));
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let every = ttl / 4;
        let flag = lost.clone();
        let heartbeat = std::thread::Builder::new()
            .name("nightrec-lease".into())
            .spawn(move || heartbeat(root, scope, record, ttl, every, &flag, &stopped))
            .ok();
        if heartbeat.is_none() {
            // No thread, no renewals: the lease lapses after `ttl`.
            tracing::warn!(lease = %scope_url, "could not start the lease heartbeat thread");
        }
        Lease { scope_url, lost, stop: Some(stop), heartbeat }
    }

    /// Err when another process took the lease over (this one stalled
    /// past its expiry): stop before changing anything else.
    pub(crate) fn check(&self) -> Result<()> {
        if self.lost.load(Ordering::Acquire) {
            return Err(Error::LeaseLost { scope: self.scope_url.clone() });
        }
        Ok(())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.heartbeat.take() {
            let _ = t.join();
        }
    }
}

/// The heartbeat thread: renew every `every` until told to stop, then
/// delete the lease's record (unless it was lost).
fn heartbeat(
    root: Root,
    scope: String,
    mut held: Record,
    ttl: Duration,
    every: Duration,
    lost: &AtomicBool,
    stopped: &std::sync::mpsc::Receiver<()>,
) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
        tracing::warn!("could not start the lease heartbeat's runtime");
        return;
    };
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    loop {
        match stopped.recv_timeout(every) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            // Released (the sender was dropped): delete our record.
            _ => {
                if !lost.load(Ordering::Acquire) {
                    let path = root.path(&record_path(&scope, held.seq));
                    if let Err(e) = rt.block_on(root.delete(&path)) {
                        tracing::warn!("could not release the lease (it expires by itself): {e}");
                    }
                }
                return;
            }
        }
        let next = Record { seq: held.seq + 1, expires_ms: now_ms() + ttl_ms, ..held.clone() };
        match rt.block_on(create(&root, &scope, &next)) {
            Ok(true) => {
                let old = root.path(&record_path(&scope, held.seq));
                held = next;
                if let Err(e) = rt.block_on(root.delete(&old)) {
                    tracing::warn!("could not delete an old lease record: {e}");
                }
            }
            Ok(false) => {
                tracing::error!(lease = %root.folder_url(&scope), "another process took this run's lease over");
                lost.store(true, Ordering::Release);
                return;
            }
            Err(e) if now_ms() < held.expires_ms => tracing::warn!("could not renew the lease (will retry): {e}"),
            Err(e) => {
                tracing::error!("could not renew the lease before it expired: {e}");
                lost.store(true, Ordering::Release);
                return;
            }
        }
    }
}

/// Take the lease of a date (the run that writes its work folder and its
/// publication); refused while another process holds it or computes one of
/// the date's shards.
pub(crate) async fn acquire_date(root: &Root, date: RunDate, run_id: &str, what: &str, ttl: Duration) -> Result<Lease> {
    let owner = Owner::this_process(run_id, &format!("nightrec {what} --date {date}"));
    let held = acquire(root, &layout::date_lease(date), owner, ttl).await?;
    for folder in root.subfolders(&layout::leases(date)).await? {
        if !folder.starts_with("shard-") {
            continue;
        }
        let scope = format!("{}/{folder}", layout::leases(date));
        if let Some((seq, r)) = live(root, &scope).await? {
            return Err(held_by(root, &scope, seq, &r));
        }
    }
    Ok(held)
}

/// Take the lease of shard `index` of `count` of a date; refused while
/// another process holds it, or holds the date's.
pub(crate) async fn acquire_shard(
    root: &Root,
    date: RunDate,
    (index, count): (u32, u32),
    run_id: &str,
    ttl: Duration,
) -> Result<Lease> {
    let owner = Owner::this_process(run_id, &format!("nightrec run --date {date} --shard {index}/{count}"));
    let held = acquire(root, &layout::shard_lease(date, count, index), owner, ttl).await?;
    let scope = layout::date_lease(date);
    if let Some((seq, r)) = live(root, &scope).await? {
        return Err(held_by(root, &scope, seq, &r));
    }
    Ok(held)
}

fn held_by(root: &Root, scope: &str, seq: u64, r: &Record) -> Error {
    Error::LeaseHeld {
        scope: root.folder_url(scope),
        holder: r.owner.describe(),
        expires_in_s: ((r.expires_ms - now_ms()) / 1000).max(0) as u64,
        since: r.acquired_at.clone(),
        seq,
    }
}

/// The live record of a lease, if any.
async fn live(root: &Root, scope: &str) -> Result<Option<(u64, Record)>> {
    Ok(match latest(root, scope).await? {
        Some((seq, Some(r))) if r.live(now_ms()) => Some((seq, r)),
        _ => None,
    })
}

/// Whether a lease is held by a live process now, and by whom.
#[cfg(test)]
pub(crate) async fn holder(root: &Root, scope: &str) -> Result<Option<Owner>> {
    Ok(live(root, scope).await?.map(|(_, r)| r.owner))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(run: &str) -> Owner {
        Owner::this_process(run, "test")
    }

    #[tokio::test]
    async fn one_holder_at_a_time_released_on_drop() {
        let root = Root::open("memory://lease-test/a").unwrap();
        let ttl = Duration::from_secs(60);
        let a = acquire(&root, "_leases/x", owner("a"), ttl).await.unwrap();
        let err = acquire(&root, "_leases/x", owner("b"), ttl).await.unwrap_err();
        assert!(matches!(err, Error::LeaseHeld { .. }), "{err}");
        assert_eq!(err.exit_code(), crate::ExitCode::Busy);
        assert!(err.to_string().contains("run a"), "{err}");
        assert_eq!(holder(&root, "_leases/x").await.unwrap().map(|o| o.run_id), Some("a".into()));
        a.check().unwrap();
        drop(a);
        assert_eq!(holder(&root, "_leases/x").await.unwrap(), None);
        let b = acquire(&root, "_leases/x", owner("b"), ttl).await.unwrap();
        b.check().unwrap();
    }

    #[tokio::test]
    async fn an_expired_lease_or_one_of_a_dead_process_is_taken_over() {
        let root = Root::open("memory://lease-test/b").unwrap();
        let elsewhere = Owner { host: "another-host".into(), pid: 1, run_id: "old".into(), command: "x".into() };
        let stale = Record { seq: 7, owner: elsewhere.clone(), acquired_at: String::new(), expires_ms: now_ms() - 1 };
        assert!(create(&root, "s", &stale).await.unwrap());
        let taken = acquire(&root, "s", owner("new"), Duration::from_secs(60)).await.unwrap();
        assert_eq!(records(&root, "s").await.unwrap(), [8]);
        drop(taken);
        // Live elsewhere: refused.
        let live = Record { seq: 20, owner: elsewhere, acquired_at: String::new(), expires_ms: now_ms() + 60_000 };
        assert!(create(&root, "s", &live).await.unwrap());
        assert!(acquire(&root, "s", owner("new"), Duration::from_secs(60)).await.is_err());
        // The same host, a process that is gone: taken over at once.
        let mut dead = owner("dead");
        dead.pid = u32::MAX - 1;
        let gone = Record { seq: 21, owner: dead, acquired_at: String::new(), expires_ms: now_ms() + 60_000 };
        assert!(create(&root, "s", &gone).await.unwrap());
        assert!(acquire(&root, "s", owner("new"), Duration::from_secs(60)).await.is_ok());
    }

    #[tokio::test]
    async fn the_heartbeat_renews_and_a_takeover_is_noticed() {
        let root = Root::open("memory://lease-test/c").unwrap();
        let lease = acquire(&root, "h", owner("a"), Duration::from_millis(400)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(700)).await;
        // Renewed past its first expiry: still held, by a later record.
        let seqs = records(&root, "h").await.unwrap();
        assert!(seqs.len() == 1 && seqs[0] >= 2, "{seqs:?}");
        lease.check().unwrap();
        // Someone takes the next number: the holder notices at its next beat.
        loop {
            let next = records(&root, "h").await.unwrap().last().copied().unwrap_or(0) + 1;
            let thief = Record { seq: next, owner: owner("b"), acquired_at: String::new(), expires_ms: i64::MAX };
            if create(&root, "h", &thief).await.unwrap() {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(matches!(lease.check(), Err(Error::LeaseLost { .. })));
    }
}
