//! One writer per output root and date: two processes publishing the same
//! date at once, in both orders, while a `_SUCCESS`-gated reader loops; a
//! holder killed mid-run; a lease of another host that expires. Run on a
//! local disk (here) and on S3 (tests/s3.rs, against moto).

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// Where a date is written: roots, environment, and how the reader reaches them.
pub struct Store {
    pub input: String,
    pub output: String,
    pub env: Vec<(String, String)>,
    /// `local:<folder>` or `s3:<endpoint>:<bucket/prefix>` for the reader.
    pub reader_target: String,
}

/// A `_SUCCESS`-gated reader, on a local folder or S3 alike: wait for
/// `_SUCCESS`, list and read the user_candidates folder, check `_SUCCESS`
/// and the manifest did not change; every read that passes must be one
/// whole publication (one K for every user, the manifest's files and rows).
pub const READER: &str = r#"
import sys, os, json, collections, time
import pyarrow.fs as fs, pyarrow.parquet as pq
target, date, stop = sys.argv[1], sys.argv[2], sys.argv[3]
if target.startswith("local:"):
    fsys, root = fs.LocalFileSystem(), target[6:]
else:
    _, endpoint_host, endpoint_port, root = target.split(":", 3)
    fsys = fs.S3FileSystem(endpoint_override=f"{endpoint_host}:{endpoint_port}", scheme="http",
                           access_key="testing", secret_key="testing", region="us-east-1")
runs = f"{root}/_runs/dt={date}"
def read(p):
    with fsys.open_input_file(p) as f:
        return f.read()
def state():
    try:
        return read(f"{runs}/_SUCCESS"), read(f"{runs}/manifest.json")
    except (FileNotFoundError, OSError):
        return None
checked = discarded = 0
while not os.path.exists(stop):
    before = state()
    if before is None:
        discarded += 1
        time.sleep(0.005)
        continue
    try:
        infos = fsys.get_file_info(fs.FileSelector(f"{root}/user_candidates/dt={date}", allow_not_found=True))
        files = sorted(i.path for i in infos if i.type == fs.FileType.File)
        rows = [r for f in files for r in pq.read_table(f, filesystem=fsys, columns=["user_id", "rank"]).to_pylist()]
    except (FileNotFoundError, OSError):
        discarded += 1
        continue
    if state() != before:
        discarded += 1
        continue
    by_user = collections.defaultdict(list)
    for r in rows:
        by_user[r["user_id"]].append(r["rank"])
    ks = {len(v) for v in by_user.values()}
    assert len(ks) == 1, f"users with different row counts {sorted(ks)}: two publications at once"
    m = json.loads(before[1])
    t = next(t for t in m["tables"] if t["name"] == "user_candidates")
    listed = {f"{root}/{f['path']}" for f in t["files"]}
    assert set(files) == listed, f"folder != manifest: {sorted(set(files) ^ listed)}"
    assert len(rows) == t["rows"]
    for f in [m["summary"], m["report"]]:
        assert len(read(f"{root}/{f['path']}")) == f["bytes"], f
    checked += 1
print(checked, discarded)
"#;

fn spawn(store: &Store, k: &str, run: &[&str]) -> Child {
    let mut cmd = Command::new(bin());
    cmd.args(["--input", &store.input, "--output", &store.output, "run", "--date", DATE])
        .args(run)
        .env("NIGHTREC_LOG", "info")
        .env("NIGHTREC_CANDIDATES__K", k)
        .envs(store.env.iter().map(|(a, b)| (a.as_str(), b.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn().unwrap()
}

fn finish(child: Child) -> (Option<i32>, String) {
    let o = child.wait_with_output().unwrap();
    (o.status.code(), text(&o))
}

/// Start a run (every stage again: it holds the date for a while), wait
/// until it has started (so it holds the date's lease), then start a second.
fn two_at_once(store: &Store, first_k: &str, second_k: &str) {
    let mut first = spawn(store, first_k, &["--force"]);
    let stderr = first.stderr.take().unwrap();
    let mut lines = std::io::BufReader::new(stderr).lines();
    let mut seen = String::new();
    for line in lines.by_ref().map_while(Result::ok) {
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("run starts") {
            break;
        }
    }
    assert!(seen.contains("run starts"), "the first writer did not start:\n{seen}");
    let second = finish(spawn(store, second_k, &[]));
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let first_status = first.wait().unwrap().code();
    assert_eq!(first_status, Some(0), "the first writer failed:\n{seen}{}", rest.join("\n"));
    assert_eq!(second.0, Some(4), "the second writer did not refuse:\n{}", second.1);
    assert!(
        second.1.contains("another nightrec process holds") && second.1.contains("_leases/dt=2026-11-21/date"),
        "{}",
        second.1
    );
}

/// Write a lease record of another host that expires in `secs`.
const STALE_LEASE: &str = r#"
import sys, json, time
target, date, secs = sys.argv[1], sys.argv[2], float(sys.argv[3])
record = {"seq": 41, "owner": {"host": "another-host", "pid": 1, "run_id": "elsewhere", "command": "nightrec run"},
          "acquired_at": "2026-11-22T02:00:00+00:00", "expires_ms": int((time.time() + secs) * 1000)}
rel = f"_leases/dt={date}/date/{41:020d}.json"
if target.startswith("local:"):
    import os
    path = f"{target[6:]}/{rel}"
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "w").write(json.dumps(record))
else:
    import pyarrow.fs as fs
    _, host, port, root = target.split(":", 3)
    s3 = fs.S3FileSystem(endpoint_override=f"{host}:{port}", scheme="http", access_key="testing",
                         secret_key="testing", region="us-east-1")
    with s3.open_output_stream(f"{root}/{rel}") as f:
        f.write(json.dumps(record).encode())
"#;

pub fn two_writers_and_a_takeover(store: &Store) {
    // A first publication (K = 10), for the reader to start from.
    let (code, out) = finish(spawn(store, "10", &[]));
    assert_eq!(code, Some(0), "{out}");
    let dir = tempfile::tempdir().unwrap();
    let stop = dir.path().join("stop");
    let reader = Command::new(python())
        .arg("-c")
        .arg(READER)
        .args([&store.reader_target, DATE, stop.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Two writers at once, in both orders: one publishes, the other refuses.
    two_at_once(store, "20", "10");
    two_at_once(store, "10", "20");
    // A writer killed while it holds the lease: the next one takes it over
    // (on this host, its process is gone) and publishes.
    let mut killed = spawn(store, "15", &["--force"]);
    let stderr = killed.stderr.take().unwrap();
    for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
        if line.contains("stage starts") {
            break;
        }
    }
    killed.kill().unwrap();
    killed.wait().unwrap();
    let (code, out) = finish(spawn(store, "12", &[]));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("took over a lease"), "{out}");
    // A lease of another host: refused until it expires, then taken over.
    py(STALE_LEASE, &[&store.reader_target, DATE, "6"]);
    let started = Instant::now();
    let (code, out) = finish(spawn(store, "10", &[]));
    assert_eq!(code, Some(4), "{out}");
    assert!(out.contains("another-host"), "{out}");
    let left = Duration::from_secs(7).saturating_sub(started.elapsed());
    std::thread::sleep(left);
    let (code, out) = finish(spawn(store, "10", &[]));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("took over a lease left by nightrec run (run elsewhere"), "{out}");
    std::fs::write(&stop, b"").unwrap();
    let got = reader.wait_with_output().unwrap();
    assert!(got.status.success(), "the reader saw half a publication:\n{}", text(&got));
    let counts: Vec<u64> =
        String::from_utf8_lossy(&got.stdout).split_whitespace().map(|x| x.parse().unwrap()).collect();
    assert!(counts[0] >= 5, "only {} reads passed the check ({} discarded)", counts[0], counts[1]);
}

fn quick_env() -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = small_env().into_iter().map(|(k, v)| (k.into(), v.into())).collect();
    env.push(("NIGHTREC_MODEL__EPOCHS".into(), "2".into()));
    env.push(("NIGHTREC_MODEL__PRETRAIN_EPOCHS".into(), "0".into()));
    env
}

/// Regression: nothing kept two processes from publishing the same date,
/// and a `_SUCCESS`-gated loader could read a broken publication when a
/// zombie task, a retry, a manual rerun or `nightrec report` interleaved.
#[test]
fn one_writer_per_date_on_a_local_disk() {
    let fx = Fixture::new("120", "80", "5000");
    let store = Store {
        input: fx.input(),
        output: fx.output(),
        env: quick_env(),
        reader_target: format!("local:{}", fx.output()),
    };
    two_writers_and_a_takeover(&store);
}

/// The environment of a quick run, for other modules.
pub fn env() -> Vec<(String, String)> {
    quick_env()
}
