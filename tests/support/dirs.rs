//! Per-run temporary directories ([`TestDir`]) and sparse files to back aio bdevs.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

pub(super) static DIR_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A per-run directory under `temp_dir()/spdk-mirror-tests/`. Removed on drop unless the thread
/// is panicking or `SPDK_MIRROR_KEEP_TMP` is set (then its path is printed to stderr).
#[derive(Debug)]
pub struct TestDir {
    path: PathBuf,
}

impl TestDir {
    /// Creates `temp_dir()/spdk-mirror-tests/<name>-<pid>-<counter>`; `name` is sanitised to
    /// `[A-Za-z0-9_-]` and cut to 40 characters.
    pub fn new(name: &str) -> Result<TestDir, String> {
        let clean: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .take(40)
            .collect();
        let n = DIR_COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir()
            .join("spdk-mirror-tests")
            .join(format!("{clean}-{}-{n}", std::process::id()));
        // A stale directory with the same pid (pid reuse) is simply cleared.
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).map_err(|e| format!("cannot create test dir {}: {e}", path.display()))?;
        Ok(TestDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `self.path().join(rel)`.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.path.join(rel)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("SPDK_MIRROR_KEEP_TMP").is_some() {
            eprintln!("[support] keeping {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Convenience: a fresh [`TestDir`], panicking on failure.
pub fn test_dir(name: &str) -> TestDir {
    TestDir::new(name).unwrap_or_else(|e| panic!("{e}"))
}

/// Creates (or truncates) a sparse file of `bytes` bytes, e.g. the backing file of an aio bdev.
pub fn create_sparse_file(path: impl AsRef<Path>, bytes: u64) -> Result<(), String> {
    let path = path.as_ref();
    let f = File::create(path).map_err(|e| format!("create {}: {e}", path.display()))?;
    f.set_len(bytes).map_err(|e| format!("set_len {}: {e}", path.display()))
}
