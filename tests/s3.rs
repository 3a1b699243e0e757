//! An S3 round trip against a real S3-protocol server on 127.0.0.1 (moto,
//! installed by `scripts/setup-python.sh`): inputs generated into a bucket,
//! the nightly job run from `s3://` to `s3://`, outputs read back with
//! pyarrow's own S3 client.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// A moto S3 server, stopped when dropped.
struct Moto {
    child: Child,
    endpoint: String,
}

impl Moto {
    fn start() -> Moto {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(python())
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto starts (is the readers' virtualenv set up? run through `make test`)");
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto did not listen on port {port} within 60 s");
            std::thread::sleep(Duration::from_millis(200));
        }
        Moto { child, endpoint: format!("http://127.0.0.1:{port}") }
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const MAKE_BUCKET: &str = r#"
import sys, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1",
                  aws_access_key_id="testing", aws_secret_access_key="testing")
s3.create_bucket(Bucket=sys.argv[2])
"#;

const READ_BACK: &str = r#"
import sys, json
import pyarrow.fs as fs, pyarrow.parquet as pq
endpoint, bucket, date = sys.argv[1], sys.argv[2], sys.argv[3]
s3 = fs.S3FileSystem(endpoint_override=endpoint, scheme="http", access_key="testing",
                     secret_key="testing", region="us-east-1")
m = json.loads(s3.open_input_file(f"{bucket}/out/_runs/dt={date}/manifest.json").read())
assert s3.get_file_info(f"{bucket}/out/_runs/dt={date}/_SUCCESS").type == fs.FileType.File
rows = {}
for t in m["tables"]:
    n = 0
    for f in t["files"]:
        n += pq.read_table(f"{bucket}/out/{f['path']}", filesystem=s3).num_rows
    assert n == t["rows"], (t["name"], n, t["rows"])
    rows[t["name"]] = n
cand = pq.read_table(f"{bucket}/out/user_candidates/dt={date}", filesystem=s3).to_pylist()
users = {r["user_id"] for r in cand}
print(json.dumps({"rows": rows, "users": len(users)}))
"#;

#[test]
fn a_run_reads_and_writes_s3() {
    let moto = Moto::start();
    py(MAKE_BUCKET, &[&moto.endpoint, "recs"]);
    let env_owned = moto.env();
    let mut env: Vec<(&str, &str)> = env_owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.extend(small_env());
    let dir = tempfile::tempdir().unwrap();
    let o = nightrec(
        &[
            "gen",
            "--out",
            "s3://recs/in",
            "--users",
            "80",
            "--items",
            "60",
            "--events",
            "4000",
            "--days",
            "10",
            "--seed",
            "5",
        ],
        &env,
        dir.path(),
    );
    assert!(o.status.success(), "gen to s3 failed: {}", text(&o));
    let o =
        nightrec(&["--input", "s3://recs/in", "--output", "s3://recs/out", "run", "--date", DATE], &env, dir.path());
    assert!(o.status.success(), "run on s3 failed: {}", text(&o));
    let got = py(READ_BACK, &[&moto.endpoint, "recs", DATE]);
    let v: serde_json::Value = serde_json::from_str(got.trim()).unwrap();
    assert!(v["rows"]["user_candidates"].as_u64().unwrap() > 1000, "{v}");
    assert!(v["rows"]["quarantine"].as_u64().unwrap() > 0, "{v}");
    assert!(v["users"].as_u64().unwrap() >= 60, "{v}");
    // Nothing was written locally.
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
}

/// The one-writer test of tests/writers.rs against S3: create-if-absent is
/// `If-None-Match: *` there.
#[test]
fn one_writer_per_date_on_s3() {
    let moto = Moto::start();
    py(MAKE_BUCKET, &[&moto.endpoint, "leases"]);
    let mut env: Vec<(String, String)> = moto.env().into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    let dir = tempfile::tempdir().unwrap();
    let gen_env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let o = nightrec(
        &["gen", "--out", "s3://leases/in", "--users", "100", "--items", "70", "--events", "4000", "--days", "10"],
        &gen_env,
        dir.path(),
    );
    assert!(o.status.success(), "gen to s3 failed: {}", text(&o));
    env.extend(crate::writers::env());
    let endpoint = moto.endpoint.trim_start_matches("http://").to_string();
    let store = crate::writers::Store {
        input: "s3://leases/in".into(),
        output: "s3://leases/out".into(),
        env,
        reader_target: format!("s3:{endpoint}:leases/out"),
    };
    crate::writers::two_writers_and_a_takeover(&store);
}
