//! Object storage: one [`Root`] per configured URL (`file://`, `s3://`,
//! `gs://`, `az://`, `memory://`, or a plain local path).
//!
//! Credentials and endpoints come from the standard environment variables as
//! object_store reads them (`AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`, ...); they
//! are never logged. `memory://` stores are shared process-wide by URL so
//! that tests can write inputs and read outputs through the same store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path as ObjPath;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload};
use url::Url;

use crate::error::{Error, Result};

/// A folder on some object store.
#[derive(Clone, Debug)]
pub struct Root {
    /// The store itself.
    pub store: Arc<dyn ObjectStore>,
    /// `scheme://authority/` — what DataFusion registers the store under.
    pub base_url: Url,
    /// The folder inside the store.
    pub prefix: ObjPath,
}

fn memory_stores() -> &'static Mutex<HashMap<String, Arc<dyn ObjectStore>>> {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<dyn ObjectStore>>>> = OnceLock::new();
    STORES.get_or_init(|| Mutex::new(HashMap::new()))
}

impl Root {
    /// Open a storage root from a URL or a local path (relative paths are
    /// taken from the current directory; local folders are created).
    pub fn open(location: &str) -> Result<Root> {
        let url = to_url(location)?;
        let cfg_err = |e: object_store::Error| Error::Config(format!("cannot open object store {}: {e}", redact(&url)));
        let authority = url.host_str().unwrap_or("");
        let base_url = Url::parse(&format!("{}://{}/", url.scheme(), authority))
            .map_err(|e| Error::Config(format!("bad storage URL {location:?}: {e}")))?;
        let store: Arc<dyn ObjectStore> = match url.scheme() {
            "file" => {
                let path = url.to_file_path().map_err(|_| Error::Config(format!("bad file URL {location:?}")))?;
                std::fs::create_dir_all(&path).map_err(|e| Error::io(path.display(), e))?;
                Arc::new(object_store::local::LocalFileSystem::new())
            }
            "memory" => {
                let mut map =
                    memory_stores().lock().map_err(|_| Error::Internal("memory store registry poisoned".into()))?;
                map.entry(base_url.to_string())
                    .or_insert_with(|| Arc::new(object_store::memory::InMemory::new()))
                    .clone()
            }
            "s3" | "s3a" => Arc::new(
                object_store::aws::AmazonS3Builder::from_env().with_url(url.as_str()).build().map_err(cfg_err)?,
            ),
            "gs" => Arc::new(
                object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_url(url.as_str())
                    .build()
                    .map_err(cfg_err)?,
            ),
            "az" | "abfs" | "abfss" | "azure" => Arc::new(
                object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_url(url.as_str())
                    .build()
                    .map_err(cfg_err)?,
            ),
            other => {
                return Err(Error::Config(format!(
                    "unsupported storage scheme {other:?} in {location:?} (file, s3, gs, az, memory)"
                )));
            }
        };
        let prefix =
            ObjPath::from_url_path(url.path()).map_err(|e| Error::Config(format!("bad path in {location:?}: {e}")))?;
        Ok(Root { store, base_url, prefix })
    }

    /// A child object path under this root.
    pub(crate) fn path(&self, rel: &str) -> ObjPath {
        let mut p = self.prefix.clone();
        for part in rel.split('/').filter(|s| !s.is_empty()) {
            p = p.join(part);
        }
        p
    }

    /// The local folder behind a child folder, for `file://` roots.
    pub(crate) fn local_dir(&self, rel: &str) -> Option<std::path::PathBuf> {
        (self.base_url.scheme() == "file").then(|| std::path::PathBuf::from(format!("/{}", self.path(rel))))
    }

    /// Remove what killed local writes or copies left behind in a folder
    /// and every folder below it: object_store stages local files as
    /// `<name>#<n>` next to their final name and does not list them. Other
    /// stores have no such files (an unfinished multipart upload is never
    /// visible). Returns how many were removed.
    pub(crate) fn remove_staging_leftovers(&self, rel: &str) -> Result<usize> {
        match self.local_dir(rel) {
            Some(dir) => remove_staged_files(&dir),
            None => Ok(0),
        }
    }

    /// The path of an object relative to this root (as `path` takes it).
    pub(crate) fn relative(&self, path: &ObjPath) -> String {
        match path.prefix_match(&self.prefix) {
            Some(parts) => parts.map(|p| p.as_ref().to_string()).collect::<Vec<_>>().join("/"),
            None => path.to_string(),
        }
    }

    /// A URL for a child folder, with a trailing slash, for DataFusion.
    pub(crate) fn folder_url(&self, rel: &str) -> String {
        format!("{}{}/", self.base_url, self.path(rel))
    }

    /// A URL for an object, for messages and DataFusion.
    pub(crate) fn object_url(&self, path: &ObjPath) -> String {
        format!("{}{}", self.base_url, path)
    }

    /// Write an object.
    pub(crate) async fn put(&self, path: &ObjPath, data: Bytes) -> Result<()> {
        self.store
            .put(path, PutPayload::from_bytes(data))
            .await
            .map(|_| ())
            .map_err(|e| Error::storage(self.object_url(path), e))
    }

    /// Read a whole object.
    pub async fn get(&self, path: &ObjPath) -> Result<Bytes> {
        let r = self.store.get(path).await.map_err(|e| Error::storage(self.object_url(path), e))?;
        r.bytes().await.map_err(|e| Error::storage(self.object_url(path), e))
    }

    /// Read an object, or None when it does not exist.
    pub(crate) async fn get_opt(&self, path: &ObjPath) -> Result<Option<Bytes>> {
        match self.store.get(path).await {
            Ok(r) => r.bytes().await.map(Some).map_err(|e| Error::storage(self.object_url(path), e)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(Error::storage(self.object_url(path), e)),
        }
    }

    /// An object's metadata, or None when it does not exist.
    pub(crate) async fn head_opt(&self, path: &ObjPath) -> Result<Option<ObjectMeta>> {
        match self.store.head(path).await {
            Ok(m) => Ok(Some(m)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(Error::storage(self.object_url(path), e)),
        }
    }

    /// Whether an object exists.
    pub(crate) async fn exists(&self, path: &ObjPath) -> Result<bool> {
        match self.store.head(path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(Error::storage(self.object_url(path), e)),
        }
    }

    /// Every object below a folder, sorted by path.
    pub async fn list(&self, rel: &str) -> Result<Vec<ObjectMeta>> {
        let prefix = self.path(rel);
        let mut out: Vec<ObjectMeta> = match self.store.list(Some(&prefix)).try_collect().await {
            Ok(v) => v,
            Err(object_store::Error::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(Error::storage(self.folder_url(rel), e)),
        };
        out.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(out)
    }

    /// Immediate sub-folder names of a folder.
    pub(crate) async fn subfolders(&self, rel: &str) -> Result<Vec<String>> {
        let prefix = self.path(rel);
        let listed = match self.store.list_with_delimiter(Some(&prefix)).await {
            Ok(l) => l,
            Err(object_store::Error::NotFound { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(Error::storage(self.folder_url(rel), e)),
        };
        let mut names: Vec<String> =
            listed.common_prefixes.iter().filter_map(|p| p.filename().map(str::to_string)).collect();
        names.sort();
        Ok(names)
    }

    /// Delete one object; a missing object is not an error.
    pub(crate) async fn delete(&self, path: &ObjPath) -> Result<()> {
        match self.store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Error::storage(self.object_url(path), e)),
        }
    }

    /// Delete every object below a folder, and what killed writes left there.
    pub(crate) async fn delete_folder(&self, rel: &str) -> Result<()> {
        for meta in self.list(rel).await? {
            self.delete(&meta.location).await?;
        }
        self.remove_staging_leftovers(rel).map(|_| ())
    }

    /// Copy an object within the store.
    pub(crate) async fn copy(&self, from: &ObjPath, to: &ObjPath) -> Result<()> {
        self.store.copy(from, to).await.map_err(|e| Error::storage(self.object_url(to), e))
    }
}

/// Whether a local file name is object_store's staging name (`<name>#<n>`).
pub(crate) fn is_staging_name(name: &str) -> bool {
    name.rsplit_once('#').is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn remove_staged_files(dir: &std::path::Path) -> Result<usize> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(0) };
    let mut removed = 0;
    for e in entries.flatten() {
        let path = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            removed += remove_staged_files(&path)?;
        } else if is_staging_name(&e.file_name().to_string_lossy()) {
            match std::fs::remove_file(&path) {
                Ok(()) => removed += 1,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => return Err(Error::io(path.display(), err)),
            }
        }
    }
    Ok(removed)
}

/// Turn a location (URL or local path) into a URL.
pub(crate) fn to_url(location: &str) -> Result<Url> {
    if location.contains("://") {
        return Url::parse(location).map_err(|e| Error::Config(format!("bad storage URL {location:?}: {e}")));
    }
    let path = std::path::Path::new(location);
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().map_err(|e| Error::io(".", e))?.join(path)
    };
    Url::from_directory_path(&abs).map_err(|_| Error::Config(format!("cannot turn {location:?} into a file URL")))
}

/// A URL safe to log: no user info or query string (signed URLs, keys).
pub(crate) fn redact(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_paths_become_file_urls() {
        let u = to_url("/tmp/x").map(|u| u.to_string()).unwrap_or_default();
        assert_eq!(u, "file:///tmp/x/");
    }

    #[test]
    fn redact_drops_credentials() {
        let u = Url::parse("s3://key:secret@bucket/p?X-Amz-Signature=abc").unwrap();
        let r = redact(&u);
        assert!(!r.contains("secret") && !r.contains("Signature"), "{r}");
    }

    #[test]
    fn staging_leftovers_are_removed_below_a_folder_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::open(dir.path().to_str().unwrap()).unwrap();
        let sub = dir.path().join("t/dt=2026-11-21");
        std::fs::create_dir_all(&sub).unwrap();
        for f in ["part-00000.parquet", "part-00001.parquet#3", "a#b", "x.json#12"] {
            std::fs::write(sub.join(f), b"x").unwrap();
        }
        assert_eq!(root.remove_staging_leftovers("t").unwrap(), 2);
        let mut left: Vec<String> =
            std::fs::read_dir(&sub).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        left.sort();
        assert_eq!(left, ["a#b", "part-00000.parquet"]);
    }

    #[tokio::test]
    async fn memory_roots_share_one_store_per_url() {
        let a = Root::open("memory://shared-test/in").unwrap();
        let b = Root::open("memory://shared-test/in").unwrap();
        a.put(&a.path("x/y.txt"), Bytes::from_static(b"hi")).await.unwrap();
        let got = b.get(&b.path("x/y.txt")).await.map(|b| b.to_vec()).ok();
        assert_eq!(got, Some(b"hi".to_vec()));
        assert_eq!(b.subfolders("").await.ok(), Some(vec!["x".to_string()]));
    }
}
