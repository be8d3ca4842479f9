//! Test support for driving real SPDK applications from integration tests.
//!
//! Use it from an integration test with `mod support;`. Everything here talks to SPDK's stock
//! applications (`spdk_tgt`, `bdevperf`, `spdk_dd`) as separate processes, optionally with the
//! mirror module injected through `LD_PRELOAD=<target>/<profile>/libspdk_mirror.so`.
//!
//! Ground rules this module keeps:
//!
//! * **Every wait is bounded.** Start-up, each RPC, each bdevperf/spdk_dd run and shutdown all
//!   have deadlines; a hung SPDK process is killed with SIGKILL and reported as an error, so no
//!   test can hang forever.
//! * **Every app runs without hugepages or PCI** (`--no-huge -s <MB> --no-pci`) with
//!   `--disable-cpumask-locks`, and every app gets its own RPC socket, so tests may run
//!   concurrently (cargo's default) without fighting over `/var/tmp/spdk.sock` or core locks.
//! * **Every process we start is reaped.** `Target`'s `Drop` sends SIGTERM, waits up to 10 s,
//!   then SIGKILLs and reaps.
//! * **Artifacts live in a per-run directory** under
//!   `std::env::temp_dir()/spdk-mirror-tests/<name>-<pid>-<counter>`. It is removed when the
//!   owner is dropped, except when the thread is panicking (a failed test) or when the
//!   environment variable `SPDK_MIRROR_KEEP_TMP` is set, so logs of failed runs survive.
//!
//! Environment variables understood here:
//!
//! * `SPDK_DIR` — a built SPDK source tree or an install prefix to take SPDK's apps from (read as
//!   the tests run; else the value cargo built them with). See [`SpdkRoots`] for the search order.
//! * `SPDK_MIRROR_LIB` — explicit path of the module library to preload (overrides the search).
//! * `CARGO_TARGET_DIR` — where to look for `release/` and `debug/libspdk_mirror.so`.
//! * `SPDK_MIRROR_KEEP_TMP` — keep per-run temp directories even after successful tests.
//!
//! The JSON-RPC client is written by hand over `UnixStream` (one connection per request, as
//! `rpc.py` does) so that tests need no Python and can send malformed bytes on purpose.
//!
//! The only `unsafe` in this file is the call to `libc::kill` used to send SIGTERM.

#![allow(dead_code)]

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};

// ------------------------------------------------------------------------------------------------
// Constants
// ------------------------------------------------------------------------------------------------

/// How long `Target::start` waits for the RPC socket to answer `spdk_get_version`.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// Default deadline for one JSON-RPC round trip.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `Drop`/`shutdown` waits after SIGTERM before escalating to SIGKILL.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// Extra time granted to a bdevperf run beyond its `-t` when `BdevperfOpts::timeout` is zero.
pub const BDEVPERF_GRACE: Duration = Duration::from_secs(60);
/// Deadline for an `spdk_dd` run when the caller passes `Duration::ZERO`.
pub const SPDK_DD_DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// Polling interval used by all bounded waits.
const POLL: Duration = Duration::from_millis(50);
/// `sun_path` is 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

/// Name of the module library produced by `cargo build` (crate-type cdylib).
pub const MODULE_LIB_NAME: &str = "libspdk_mirror.so";

// ------------------------------------------------------------------------------------------------
// Locating SPDK and the module
// ------------------------------------------------------------------------------------------------

/// Paths of the SPDK applications and of the mirror module library.
#[derive(Debug, Clone)]
pub struct SpdkEnv {
    pub spdk_tgt: PathBuf,
    pub bdevperf: PathBuf,
    pub spdk_dd: PathBuf,
    pub nvmf_tgt: PathBuf,
    /// `libspdk_mirror.so` to put in `LD_PRELOAD` when a run asks for `preload`.
    pub module_lib: PathBuf,
}

/// Finds `spdk_tgt`, `bdevperf`, `spdk_dd`, `nvmf_tgt` (see [`SpdkRoots`] for where) and the
/// module library (`SPDK_MIRROR_LIB`, else the newest of `release/` and `debug/libspdk_mirror.so`
/// in the cargo target directory). The error names everything that is missing and how to get it.
pub fn spdk_env() -> Result<SpdkEnv, String> {
    let roots = SpdkRoots::from_env();
    let mut missing = Vec::new();
    let mut find = |name: &str| match roots.find(name) {
        Ok(p) => p,
        Err(e) => {
            missing.push(e);
            PathBuf::new()
        }
    };
    let spdk_tgt = find("spdk_tgt");
    let bdevperf = find("bdevperf");
    let spdk_dd = find("spdk_dd");
    let nvmf_tgt = find("nvmf_tgt");
    let module_lib = match find_module_lib() {
        Ok(p) => p,
        Err(e) => {
            missing.push(e);
            PathBuf::new()
        }
    };
    if missing.is_empty() {
        Ok(SpdkEnv {
            spdk_tgt,
            bdevperf,
            spdk_dd,
            nvmf_tgt,
            module_lib,
        })
    } else {
        Err(format!(
            "SPDK test environment incomplete, missing: {}",
            missing.join("; ")
        ))
    }
}

/// Like [`spdk_env`] but panics with a clear message. Use it in tests that are compiled only
/// when `cfg(spdk)` says SPDK is installed.
pub fn require_spdk() -> SpdkEnv {
    match spdk_env() {
        Ok(env) => env,
        Err(e) => panic!(
            "{e}\n(cfg(spdk) is set: the build found SPDK's libraries, so these tests expect its \
             apps and {MODULE_LIB_NAME}; README.md, \"Finding SPDK\", says how to get them)"
        ),
    }
}

/// Finds SPDK's app `name` where [`SpdkRoots::from_env`] says (`spdk_nvme_perf`, …).
pub fn find_executable(name: &str) -> Option<PathBuf> {
    SpdkRoots::from_env().find(name).ok()
}

/// Where SPDK's applications are looked for, in this order:
///
/// 1. `spdk_dir` (`SPDK_DIR`): a source tree built in place (`build/bin`, `build/examples`), or
///    an install prefix (`bin`);
/// 2. `bin` under `pkg_prefix`, the prefix of pkg-config's `spdk_bdev`;
/// 3. the directories of `PATH`.
///
/// Only regular executable files count.
#[derive(Debug, Clone, Default)]
pub struct SpdkRoots {
    pub spdk_dir: Option<PathBuf>,
    pub pkg_prefix: Option<PathBuf>,
    pub path: Vec<PathBuf>,
}

impl SpdkRoots {
    /// `SPDK_DIR` as the tests run, else as cargo built them; the pkg-config prefix spdk-sys
    /// found at build time (`SPDK_MIRROR_SPDK_PREFIX`, set by build.rs) when it is not empty,
    /// else [`pkg_config_prefix`] asked now; `PATH` as the tests run.
    pub fn from_env() -> SpdkRoots {
        let spdk_dir = spdk_dir_from(std::env::var_os("SPDK_DIR"), option_env!("SPDK_DIR"));
        let pkg_prefix = option_env!("SPDK_MIRROR_SPDK_PREFIX")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .or_else(|| pkg_config_prefix(spdk_dir.as_deref()));
        SpdkRoots {
            spdk_dir,
            pkg_prefix,
            path: std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).collect())
                .unwrap_or_default(),
        }
    }

    /// Every place `name` is looked for, in search order.
    pub fn candidates(&self, name: &str) -> Vec<PathBuf> {
        let mut dirs = Vec::new();
        if let Some(d) = &self.spdk_dir {
            dirs.extend([d.join("build/bin"), d.join("build/examples"), d.join("bin")]);
        }
        if let Some(p) = &self.pkg_prefix {
            dirs.push(p.join("bin"));
        }
        dirs.extend(self.path.iter().filter(|d| !d.as_os_str().is_empty()).cloned());
        dirs.into_iter().map(|d| d.join(name)).collect()
    }

    /// The first candidate that is an executable file; else an error naming `name`, where it was
    /// looked for and how to get it.
    pub fn find(&self, name: &str) -> Result<PathBuf, String> {
        if let Some(p) = self.candidates(name).into_iter().find(|p| is_executable(p)) {
            return Ok(p);
        }
        let mut searched = Vec::new();
        match &self.spdk_dir {
            Some(d) => searched.push(format!("SPDK_DIR={} (build/bin, build/examples, bin)", d.display())),
            None => searched.push("no SPDK_DIR".to_string()),
        }
        match &self.pkg_prefix {
            Some(p) => searched.push(format!("pkg-config prefix {}/bin", p.display())),
            None => searched.push("no pkg-config prefix".to_string()),
        }
        searched.push("PATH".to_string());
        Err(format!(
            "`{name}` not found (searched {}): {}",
            searched.join(", "),
            how_to_get(name)
        ))
    }
}

/// `SPDK_DIR` from the environment the tests run in, else the one cargo built them with; empty
/// means unset.
pub fn spdk_dir_from(run_time: Option<OsString>, build_time: Option<&str>) -> Option<PathBuf> {
    run_time
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| build_time.filter(|d| !d.is_empty()).map(PathBuf::from))
}

/// The prefix of pkg-config's `spdk_bdev`, searched as spdk-sys's build does (`SPDK_DIR`'s
/// `build/lib/pkgconfig`, `lib/pkgconfig` or `lib64/pkgconfig` first); see [`prefix_from_pc`].
pub fn pkg_config_prefix(spdk_dir: Option<&Path>) -> Option<PathBuf> {
    let mut pc_path: Vec<PathBuf> = spdk_dir
        .into_iter()
        .flat_map(|d| ["build/lib/pkgconfig", "lib/pkgconfig", "lib64/pkgconfig"].map(|p| d.join(p)))
        .filter(|p| p.join("spdk_bdev.pc").is_file())
        .take(1)
        .collect();
    if let Some(old) = std::env::var_os("PKG_CONFIG_PATH") {
        pc_path.extend(std::env::split_paths(&old));
    }
    let ask = |arg: &str| -> String {
        let mut cmd = Command::new("pkg-config");
        cmd.args([arg, "spdk_bdev"]).stdin(Stdio::null()).stderr(Stdio::null());
        if let Ok(p) = std::env::join_paths(&pc_path) {
            cmd.env("PKG_CONFIG_PATH", p);
        }
        match cmd.output() {
            Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
            _ => String::new(),
        }
    };
    let var = ask("--variable=prefix");
    let libs = if var.trim().is_empty() {
        ask("--libs-only-L")
    } else {
        String::new()
    };
    prefix_from_pc(&var, &libs)
}

/// A prefix from pkg-config's answers: its `prefix` variable, else the parent of the first `-L`
/// directory. SPDK's .pc files define no `prefix`: an install says `-L<prefix>/lib`, a source
/// tree built in place `-L<tree>/build/lib` (whose `bin` is then `build/bin`).
pub fn prefix_from_pc(prefix_var: &str, libs_only_l: &str) -> Option<PathBuf> {
    let var = prefix_var.trim();
    if !var.is_empty() {
        return Some(PathBuf::from(var));
    }
    libs_only_l
        .split_whitespace()
        .find_map(|a| a.strip_prefix("-L"))
        .and_then(|lib| Path::new(lib).parent())
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
}

/// How to get SPDK's app `name` when it is not found.
pub fn how_to_get(name: &str) -> String {
    match name {
        "bdevperf" => "not installed by SPDK's make install: set SPDK_DIR to the built SPDK source \
                       tree (build/examples/bdevperf) or copy it onto PATH"
            .to_string(),
        _ => format!(
            "SPDK builds it into build/bin/{name} and make install copies it to <prefix>/bin: set \
             SPDK_DIR to the built SPDK source tree or to the install prefix, or put it on PATH"
        ),
    }
}

fn is_executable(p: &Path) -> bool {
    fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The cargo target directories worth searching for the module library, most explicit first.
fn target_dirs() -> Vec<PathBuf> {
    // Cargo sets CARGO_MANIFEST_DIR when running tests; the compile-time value is the fallback.
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    let mut dirs = Vec::new();
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        let t = PathBuf::from(t);
        dirs.push(if t.is_absolute() { t } else { manifest.join(t) });
    } else {
        dirs.push(manifest.join("target"));
    }
    // The running test binary lives in <target>/<profile>/deps/; that catches target dirs set
    // through .cargo/config.toml, which neither variable above reveals.
    if let Ok(exe) = std::env::current_exe() {
        if let Some(t) = exe.parent().and_then(Path::parent).and_then(Path::parent) {
            if !dirs.iter().any(|d| d == t) {
                dirs.push(t.to_path_buf());
            }
        }
    }
    dirs
}

/// `SPDK_MIRROR_LIB`, else the library built with the same profile as this test binary
/// (`<target>/<profile>/libspdk_mirror.so`), else the newest of release/debug. A library older
/// than the crate's last build is refused: the test would run yesterday's module.
fn find_module_lib() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("SPDK_MIRROR_LIB") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("module library {} (named by SPDK_MIRROR_LIB)", p.display()))
        };
    }
    // The running test binary lives in <target>/<profile>/deps/.
    let own = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().and_then(Path::parent).map(Path::to_path_buf));
    if let Some(profile_dir) = own {
        // Cargo builds the cdylib into deps/ with the test's own build of the crate (it only
        // copies it up one level on `cargo build`), so deps/ always holds the current module.
        let fresh = profile_dir.join("deps").join(MODULE_LIB_NAME);
        if fresh.is_file() {
            return Ok(fresh);
        }
        let lib = profile_dir.join(MODULE_LIB_NAME);
        if let Ok(lib_mtime) = fs::metadata(&lib).and_then(|m| m.modified()) {
            let newest_rlib = fs::read_dir(profile_dir.join("deps"))
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    n.starts_with("libspdk_mirror") && n.ends_with(".rlib")
                })
                .filter_map(|e| e.metadata().and_then(|m| m.modified()).ok())
                .max();
            if newest_rlib.is_some_and(|r| r > lib_mtime + Duration::from_secs(2)) {
                return Err(format!(
                    "an up-to-date {} (it is older than the code: run `cargo build{}` first)",
                    lib.display(),
                    if profile_dir.ends_with("release") {
                        " --release"
                    } else {
                        ""
                    }
                ));
            }
            return Ok(lib);
        }
    }
    let mut tried = Vec::new();
    let mut best: Option<(SystemTime, PathBuf)> = None;
    for dir in target_dirs() {
        for profile in ["release", "debug"] {
            let p = dir.join(profile).join(MODULE_LIB_NAME);
            match fs::metadata(&p).and_then(|m| m.modified()) {
                Ok(mtime) if best.as_ref().is_none_or(|(t, _)| mtime > *t) => best = Some((mtime, p)),
                Ok(_) => {}
                Err(_) => tried.push(p.display().to_string()),
            }
        }
    }
    best.map(|(_, p)| p).ok_or_else(|| {
        format!(
            "module library {MODULE_LIB_NAME} (run `cargo build`; tried {})",
            tried.join(", ")
        )
    })
}

// ------------------------------------------------------------------------------------------------
// Per-run temporary directories
// ------------------------------------------------------------------------------------------------

static DIR_COUNTER: AtomicUsize = AtomicUsize::new(0);

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

// ------------------------------------------------------------------------------------------------
// JSON-RPC client
// ------------------------------------------------------------------------------------------------

/// A JSON-RPC error object returned by SPDK (`code` is a negative errno or a JSON-RPC code such
/// as -32601 "Method not found", -32602 invalid params, -32603 internal error, -32700 parse
/// error), or a transport failure, which carries [`RpcError::TRANSPORT`] as its code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
}

impl RpcError {
    /// Code used for failures that are not JSON-RPC error responses (connect failure, timeout,
    /// connection closed, unparsable response). Outside every range SPDK uses.
    pub const TRANSPORT: i64 = -1_000_000;
    /// JSON-RPC "Method not found".
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// JSON-RPC "Invalid params".
    pub const INVALID_PARAMS: i64 = -32602;
    /// JSON-RPC "Internal error" (SPDK also uses it for `spdk_json_decode_object failed`).
    pub const INTERNAL_ERROR: i64 = -32603;

    fn transport(message: impl Into<String>) -> RpcError {
        RpcError {
            code: Self::TRANSPORT,
            message: message.into(),
        }
    }

    /// True if this is not an answer from SPDK but a failure to get one.
    pub fn is_transport(&self) -> bool {
        self.code == Self::TRANSPORT
    }
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_transport() {
            write!(f, "RPC transport error: {}", self.message)
        } else {
            write!(f, "RPC error {}: {}", self.code, self.message)
        }
    }
}

impl std::error::Error for RpcError {}

/// Reads from `stream` until the accumulated bytes start with one complete JSON value, and
/// returns it. Bounded by `deadline`.
fn read_one_value(stream: &mut UnixStream, deadline: Instant) -> Result<Value, String> {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        if !buf.is_empty() {
            let mut values = serde_json::Deserializer::from_slice(&buf).into_iter::<Value>();
            match values.next() {
                Some(Ok(v)) => return Ok(v),
                Some(Err(e)) if e.is_eof() => {} // incomplete: keep reading
                Some(Err(e)) => return Err(format!("unparsable response ({e}): {}", String::from_utf8_lossy(&buf))),
                None => {} // only whitespace so far
            }
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(format!(
                "timed out waiting for a response (got so far: {:?})",
                String::from_utf8_lossy(&buf)
            ));
        }
        let remaining = (deadline - now).max(Duration::from_millis(1));
        stream
            .set_read_timeout(Some(remaining))
            .map_err(|e| format!("set_read_timeout: {e}"))?;
        match stream.read(&mut chunk) {
            Ok(0) if buf.is_empty() => return Err("connection closed without a response".into()),
            Ok(0) => {
                return Err(format!(
                    "connection closed with a partial response: {:?}",
                    String::from_utf8_lossy(&buf)
                ))
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                ) => {} // the deadline check above decides
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

/// Connects to `socket`, writes `bytes`, reads one JSON value. Everything within `timeout`.
/// With `then_eof` the sending side is closed after the write: a truncated request then ends in
/// EOF (the server drops the connection) instead of the server waiting for the rest of it.
fn exchange(socket: &Path, bytes: &[u8], timeout: Duration, then_eof: bool) -> Result<Value, String> {
    let deadline = Instant::now() + timeout;
    let mut stream = UnixStream::connect(socket).map_err(|e| format!("connect {}: {e}", socket.display()))?;
    stream
        .set_write_timeout(Some(timeout.max(Duration::from_millis(1))))
        .map_err(|e| format!("set_write_timeout: {e}"))?;
    stream.write_all(bytes).map_err(|e| format!("write: {e}"))?;
    if then_eof {
        stream
            .shutdown(std::net::Shutdown::Write)
            .map_err(|e| format!("shutdown: {e}"))?;
    } else {
        stream.flush().map_err(|e| format!("flush: {e}"))?;
    }
    read_one_value(&mut stream, deadline)
}

/// Sends one JSON-RPC 2.0 request to `socket` and decodes the response.
/// `params` of `Value::Null` is omitted from the request.
pub fn rpc_call(socket: &Path, id: u64, method: &str, params: Value, timeout: Duration) -> Result<Value, RpcError> {
    let mut req = json!({"jsonrpc": "2.0", "method": method, "id": id});
    if !params.is_null() {
        req["params"] = params;
    }
    let bytes = serde_json::to_vec(&req).expect("serialising a Value cannot fail");
    let resp = exchange(socket, &bytes, timeout, false).map_err(|e| RpcError::transport(format!("{method}: {e}")))?;
    if resp.get("id") != Some(&json!(id)) {
        return Err(RpcError::transport(format!(
            "{method}: response id does not match request id {id}: {resp}"
        )));
    }
    if let Some(err) = resp.get("error") {
        return Err(RpcError {
            code: err.get("code").and_then(Value::as_i64).unwrap_or(RpcError::TRANSPORT),
            message: err
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| err.to_string()),
        });
    }
    match resp.get("result") {
        Some(r) => Ok(r.clone()),
        None => Err(RpcError::transport(format!(
            "{method}: response has neither result nor error: {resp}"
        ))),
    }
}

// ------------------------------------------------------------------------------------------------
// Process helpers
// ------------------------------------------------------------------------------------------------

/// Sends SIGTERM to `pid` (a child of ours that has not been reaped yet).
fn send_sigterm(pid: u32) {
    // SAFETY: kill(2) takes plain integers and touches no memory of ours. `pid` is the id of a
    // child process we spawned and have not reaped (callers check `try_wait` first under the
    // child's mutex), so the id cannot have been recycled for an unrelated process.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGTERM);
    }
}

/// Polls `child` until it exits or `timeout` passes.
fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st),
            Ok(None) => {}
            Err(_) => return None,
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

/// SIGKILL + reap. Safe to call on an already-reaped child.
fn kill_and_reap(child: &mut Child) -> Option<ExitStatus> {
    let _ = child.kill();
    child.wait().ok()
}

/// The last `n` lines of `s`.
pub fn tail_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Opens `path` as a log and returns (stdout, stderr) handles that both append to it.
fn log_stdio(path: &Path) -> Result<(Stdio, Stdio), String> {
    let f = File::create(path).map_err(|e| format!("create log {}: {e}", path.display()))?;
    let f2 = f.try_clone().map_err(|e| format!("dup log fd: {e}"))?;
    Ok((Stdio::from(f), Stdio::from(f2)))
}

/// Adds `LD_PRELOAD=<lib>` (in front of any inherited value) to `cmd`.
/// An SPDK app's command line, its extra environment, and the module preloaded if asked.
fn app_command(binary: &Path, args: &[String], env: &[(String, String)], preload: Option<&PathBuf>) -> Command {
    let mut cmd = Command::new(binary);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    if let Some(lib) = preload {
        add_preload(&mut cmd, lib);
    }
    cmd
}

fn add_preload(cmd: &mut Command, lib: &Path) {
    let mut v = OsString::from(lib.as_os_str());
    if let Some(old) = std::env::var_os("LD_PRELOAD") {
        if !old.is_empty() {
            v.push(":");
            v.push(old);
        }
    }
    cmd.env("LD_PRELOAD", v);
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// The common SPDK application options every run here uses.
fn app_base_args(mem_mb: u32, cores_mask: &str) -> Vec<String> {
    vec![
        "--no-huge".into(),
        "-s".into(),
        mem_mb.to_string(),
        "--no-pci".into(),
        "-m".into(),
        cores_mask.into(),
        "--disable-cpumask-locks".into(),
        // No trace buffer: a killed app would leave a 3 MiB file in /dev/shm behind.
        "--num-trace-entries".into(),
        "0".into(),
    ]
}

/// Picks `dir/<file>` for a socket, or a short path under /tmp when that would not fit in
/// `sun_path`.
fn socket_path(dir: &TestDir) -> PathBuf {
    let p = dir.join("spdk.sock");
    if p.as_os_str().len() <= MAX_SOCKET_PATH {
        p
    } else {
        let n = DIR_COUNTER.fetch_add(1, Ordering::Relaxed);
        PathBuf::from(format!("/tmp/spdk-mirror-{}-{n}.sock", std::process::id()))
    }
}

fn write_config(dir: &TestDir, file: &str, config: &Value) -> Result<PathBuf, String> {
    let path = dir.join(file);
    let text = serde_json::to_string_pretty(config).map_err(|e| format!("config: {e}"))?;
    fs::write(&path, text).map_err(|e| format!("write {}: {e}", path.display()))?;
    Ok(path)
}

/// One SPDK test at a time within a test binary, where they share a core and files.
pub fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// `method(params)` on `t`, which must succeed; the panic carries the app's log tail.
pub fn rpc_ok(t: &Target, method: &str, params: Value) -> Value {
    t.rpc(method, params.clone())
        .unwrap_or_else(|e| panic!("{method} {params}: {e}\nlog tail:\n{}", tail_lines(&t.log(), 40)))
}

/// The mirror registered as `name` (`bdev_mirror_get_bdevs` also lists mirrors still being
/// assembled, as `configuring`: not those), if there is one.
pub fn registered_mirror(t: &Target, name: &str) -> Option<Value> {
    let all = rpc_ok(t, "bdev_mirror_get_bdevs", json!({}));
    all.as_array()
        .expect("bdev_mirror_get_bdevs returns an array")
        .iter()
        .find(|m| m["name"] == json!(name) && m["state"] != json!("configuring"))
        .cloned()
}

/// Sparse leg files `leg0.img`.. of `bytes` each in `dir`.
pub fn leg_files(dir: &TestDir, n: usize, bytes: u64) -> Vec<PathBuf> {
    (0..n)
        .map(|i| {
            let f = dir.join(format!("leg{i}.img"));
            create_sparse_file(&f, bytes).unwrap();
            f
        })
        .collect()
}

/// An aio bdev `name` over `file`.
pub fn create_aio(t: &Target, name: &str, file: &Path, block_size: u32) {
    rpc_ok(
        t,
        "bdev_aio_create",
        json!({"name": name, "filename": file.to_string_lossy(), "block_size": block_size}),
    );
}

/// Mask of the first CPU this process may use (CI runners do not always offer CPU 0).
pub fn core_mask() -> String {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let first = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .and_then(|l| {
            l.trim()
                .split([',', '-'])
                .next()
                .and_then(|c| c.trim().parse::<u32>().ok())
        })
        .filter(|&c| c < 64)
        .unwrap_or(0);
    format!("{:#x}", 1u64 << first)
}

/// Polls `f` every 50 ms until it returns true, for at most `timeout`. The error names `what`.
pub fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("timed out after {timeout:?} waiting for {what}"));
        }
        std::thread::sleep(POLL);
    }
}

// ------------------------------------------------------------------------------------------------
// Long-running SPDK applications (spdk_tgt, bdevperf -z)
// ------------------------------------------------------------------------------------------------

/// Options for [`Target::start`]. Use `..Default::default()` for the rest.
#[derive(Debug, Clone)]
pub struct TargetOpts<'a> {
    /// Used in the temp dir name; pass the test's name.
    pub name: &'a str,
    /// `-s`: DPDK memory in MB (spdk_tgt needs 2048 with `--no-huge`).
    pub mem_mb: u32,
    /// `-m`: reactor core mask.
    pub cores_mask: &'a str,
    /// Put the module library in `LD_PRELOAD`.
    pub preload: bool,
    /// Start with `--wait-for-rpc` (then call `framework_start_init` yourself).
    pub wait_for_rpc: bool,
    /// Appended to the command line (e.g. `-L bdev_raid`).
    pub extra_args: Vec<String>,
    /// Extra environment variables for the process.
    pub env: Vec<(String, String)>,
    /// Bound on waiting for the RPC socket to answer.
    pub startup_timeout: Duration,
    /// Deadline of each [`Target::rpc`] call.
    pub rpc_timeout: Duration,
}

impl Default for TargetOpts<'_> {
    fn default() -> Self {
        TargetOpts {
            name: "spdk_tgt",
            mem_mb: 2048,
            cores_mask: "0x1",
            preload: true,
            wait_for_rpc: false,
            extra_args: Vec::new(),
            env: Vec::new(),
            startup_timeout: STARTUP_TIMEOUT,
            rpc_timeout: RPC_TIMEOUT,
        }
    }
}

/// A running SPDK application with an RPC socket: `spdk_tgt` from [`Target::start`], or
/// `bdevperf -z` from [`bdevperf_server`]. All methods take `&self` (the type is `Sync`), so one
/// thread may block in an RPC such as `perform_tests` while another issues more RPCs.
///
/// Dropping it stops the process: SIGTERM, up to 10 s grace, then SIGKILL; always reaped.
pub struct Target {
    app: String,
    child: Mutex<Child>,
    pid: u32,
    socket: PathBuf,
    log_path: PathBuf,
    next_id: AtomicU64,
    rpc_timeout: Duration,
    // Last, so that it is dropped after the process is gone.
    dir: TestDir,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("app", &self.app)
            .field("pid", &self.pid)
            .field("socket", &self.socket)
            .field("log", &self.log_path)
            .finish()
    }
}

impl Target {
    /// Spawns `spdk_tgt --no-huge -s <mem> --no-pci -m <mask> --disable-cpumask-locks
    /// -r <socket> [--wait-for-rpc] <extra_args>` (with the module preloaded when
    /// `opts.preload`), output to `<dir>/spdk_tgt.log`, and waits until `spdk_get_version`
    /// answers. On failure the process is killed and the error includes its log tail.
    pub fn start(env: &SpdkEnv, opts: TargetOpts<'_>) -> Result<Target, String> {
        let dir = TestDir::new(opts.name)?;
        let socket = socket_path(&dir);
        let mut args = app_base_args(opts.mem_mb, opts.cores_mask);
        args.push("-r".into());
        args.push(socket.to_string_lossy().into_owned());
        if opts.wait_for_rpc {
            args.push("--wait-for-rpc".into());
        }
        args.extend(opts.extra_args.iter().cloned());
        let cmd = app_command(&env.spdk_tgt, &args, &opts.env, opts.preload.then_some(&env.module_lib));
        launch("spdk_tgt", cmd, dir, socket, opts.startup_timeout, opts.rpc_timeout)
    }

    /// Calls `method` with `params` (`Value::Null` = no params) within the default RPC deadline
    /// (60 s). JSON-RPC errors come back as `Err(RpcError{code, message})`.
    pub fn rpc(&self, method: &str, params: Value) -> Result<Value, RpcError> {
        self.rpc_timeout(method, params, self.rpc_timeout)
    }

    /// [`Target::rpc`] with an explicit deadline.
    pub fn rpc_timeout(&self, method: &str, params: Value, timeout: Duration) -> Result<Value, RpcError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        rpc_call(&self.socket, id, method, params, timeout)
    }

    /// Sends arbitrary bytes on a fresh connection and reads one JSON value back (60 s bound).
    /// SPDK answers a request it cannot parse as JSON by closing the connection without a
    /// response; that comes back as `Err("connection closed without a response")`. Responses
    /// to well-formed but invalid requests (e.g. `{"a":1}` → -32600 "Invalid request") come
    /// back as `Ok(response object)`, unlike [`Target::rpc`] which decodes them.
    /// `bdev_mirror_get_bdevs {name}`: that one mirror's object (panics with the log otherwise).
    pub fn mirror_info(&self, name: &str) -> Value {
        let all = self
            .rpc("bdev_mirror_get_bdevs", json!({ "name": name }))
            .unwrap_or_else(|e| panic!("bdev_mirror_get_bdevs {name}: {e}\n{}", tail_lines(&self.log(), 30)));
        let arr = all.as_array().expect("bdev_mirror_get_bdevs returns an array");
        assert_eq!(arr.len(), 1, "bdev_mirror_get_bdevs {{name: {name}}} returned {all}");
        assert_eq!(arr[0]["name"], json!(name));
        arr[0].clone()
    }

    pub fn rpc_raw(&self, bytes: &[u8]) -> Result<Value, String> {
        exchange(&self.socket, bytes, self.rpc_timeout, true)
    }

    /// `bdevperf -z` only: runs the tests (RPC `perform_tests`, `params` may set
    /// `time_in_sec`, `workload_type`, `queue_depth`, `io_size`, `rw_percentage`, or be Null for
    /// the command-line values) and returns bdevperf's `{"results":[...], "core_count":N}`.
    pub fn perform_tests(&self, params: Value, timeout: Duration) -> Result<Value, RpcError> {
        self.rpc_timeout("perform_tests", params, timeout)
    }

    /// Everything the process wrote to stdout/stderr so far.
    pub fn log(&self) -> String {
        read_lossy(&self.log_path)
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The per-run temp dir (log, socket, configs). Tests may put files here.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// True while the process has not exited.
    pub fn is_alive(&self) -> bool {
        let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        matches!(child.try_wait(), Ok(None))
    }

    /// SIGKILL and reap (simulates a crash). Idempotent.
    pub fn kill9(&self) {
        let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        kill_and_reap(&mut child);
    }

    /// Waits (bounded) for the process to exit by itself, e.g. after `spdk_kill_instance`.
    /// `None` if it is still running after `timeout`.
    pub fn wait_exit(&self, timeout: Duration) -> Option<ExitStatus> {
        let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        wait_child(&mut child, timeout)
    }

    /// Graceful stop: SIGTERM, then wait up to `timeout`. `Ok(status)` if it exited in time;
    /// otherwise it is SIGKILLed and the error says so (a shutdown hang is a bug worth a test).
    pub fn shutdown(&self, timeout: Duration) -> Result<ExitStatus, String> {
        let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        if let Ok(Some(st)) = child.try_wait() {
            return Ok(st);
        }
        send_sigterm(self.pid);
        match wait_child(&mut child, timeout) {
            Some(st) => Ok(st),
            None => {
                kill_and_reap(&mut child);
                Err(format!(
                    "{} (pid {}) did not exit within {timeout:?} of SIGTERM; killed. Log tail:\n{}",
                    self.app,
                    self.pid,
                    tail_lines(&read_lossy(&self.log_path), 40)
                ))
            }
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown(SHUTDOWN_TIMEOUT) {
            eprintln!("[support] {e}");
        }
        if std::thread::panicking() {
            eprintln!(
                "[support] {} log ({}), last 60 lines:\n{}",
                self.app,
                self.log_path.display(),
                tail_lines(&read_lossy(&self.log_path), 60)
            );
        }
        let _ = fs::remove_file(&self.socket);
    }
}

/// Spawns `cmd` (output to `<dir>/<app>.log`) and waits until `socket` answers
/// `spdk_get_version`, the process dies, or `startup_timeout` passes.
fn launch(
    app: &str,
    mut cmd: Command,
    dir: TestDir,
    socket: PathBuf,
    startup_timeout: Duration,
    rpc_timeout: Duration,
) -> Result<Target, String> {
    let log_path = dir.join(format!("{app}.log"));
    let (out, err) = log_stdio(&log_path)?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    let cmdline = describe(&cmd);
    let child = cmd.spawn().map_err(|e| format!("spawn `{cmdline}`: {e}"))?;
    let pid = child.id();
    // From here on the Target owns the child, so every early return below cleans it up.
    let target = Target {
        app: app.to_owned(),
        child: Mutex::new(child),
        pid,
        socket,
        log_path,
        next_id: AtomicU64::new(1),
        rpc_timeout,
        dir,
    };
    let deadline = Instant::now() + startup_timeout;
    loop {
        let exited = {
            let mut child = target.child.lock().unwrap_or_else(|p| p.into_inner());
            child.try_wait().ok().flatten()
        };
        if let Some(st) = exited {
            return Err(format!(
                "`{cmdline}` exited during start-up ({st}). Log tail:\n{}",
                tail_lines(&target.log(), 40)
            ));
        }
        if target.socket.exists() {
            let id = target.next_id.fetch_add(1, Ordering::Relaxed);
            let probe = rpc_call(
                &target.socket,
                id,
                "spdk_get_version",
                Value::Null,
                Duration::from_secs(2),
            );
            if probe.is_ok() {
                return Ok(target);
            }
        }
        if Instant::now() >= deadline {
            let log = target.log();
            target.kill9();
            return Err(format!(
                "`{cmdline}` did not answer spdk_get_version within {startup_timeout:?}. Log tail:\n{}",
                tail_lines(&log, 40)
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ------------------------------------------------------------------------------------------------
// bdevperf
// ------------------------------------------------------------------------------------------------

/// Options for [`bdevperf`] / [`bdevperf_server`]. Use `..Default::default()` for the rest.
#[derive(Debug, Clone)]
pub struct BdevperfOpts<'a> {
    /// Used in the temp dir name.
    pub name: &'a str,
    /// A full SPDK JSON config (`{"subsystems":[...]}`), see [`bdev_subsystem`]. bdevperf runs
    /// one job per bdev it finds (or per bdev per core with `-C`), unless `-T <bdev>` is given.
    pub config: Value,
    /// `-q`
    pub queue_depth: u32,
    /// `-o`, bytes
    pub io_size: u64,
    /// `-w`: read, write, randread, randwrite, rw, randrw (these two need `-M <pct>`), verify,
    /// reset, unmap, flush, write_zeroes, ...
    pub workload: &'a str,
    /// `-t`, seconds
    pub time_s: u32,
    /// `-m`
    pub cores_mask: &'a str,
    /// Appended verbatim, e.g. `-C`, `-U`, `-f`, `-M 50`, `-T <bdev>`, `-k <timeout>`.
    pub extra_args: Vec<String>,
    /// Put the module library in `LD_PRELOAD`.
    pub preload: bool,
    /// Hard bound on the whole run; past it bdevperf is SIGKILLed and the run is an
    /// `Err("bdevperf hung: ...")`. `Duration::ZERO` means `time_s` + 60 s.
    pub timeout: Duration,
    /// `-s`: DPDK memory in MB.
    pub mem_mb: u32,
    /// Extra environment variables for the process.
    pub env: Vec<(String, String)>,
}

impl Default for BdevperfOpts<'_> {
    fn default() -> Self {
        BdevperfOpts {
            name: "bdevperf",
            config: bdev_subsystem(Vec::new()),
            queue_depth: 32,
            io_size: 4096,
            workload: "verify",
            time_s: 3,
            cores_mask: "0x1",
            extra_args: Vec::new(),
            preload: true,
            timeout: Duration::ZERO,
            mem_mb: 1024,
            env: Vec::new(),
        }
    }
}

impl BdevperfOpts<'_> {
    fn effective_timeout(&self) -> Duration {
        if self.timeout.is_zero() {
            Duration::from_secs(self.time_s as u64) + BDEVPERF_GRACE
        } else {
            self.timeout
        }
    }
}

/// Throughput and latency numbers of one row of bdevperf's final table. Latencies in µs.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BdevperfStats {
    pub iops: f64,
    pub mib_s: f64,
    pub fail_per_s: f64,
    pub timeout_per_s: f64,
    pub avg_lat_us: f64,
    pub min_lat_us: f64,
    pub max_lat_us: f64,
}

/// One job of bdevperf's final table (with `-C` one bdev has one job per core).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BdevperfJob {
    /// The bdev name.
    pub name: String,
    /// From the `Job: ...` header line, when present: "0x1".
    pub core_mask: Option<String>,
    pub workload: Option<String>,
    pub depth: Option<u32>,
    pub io_size: Option<u64>,
    /// `-M` percentage for rw/randrw.
    pub percentage: Option<u32>,
    /// bdevperf printed "Job: <name> ended in about N seconds with error" (an I/O failed and
    /// the job stopped early).
    pub ended_with_error: bool,
    pub runtime_s: f64,
    pub stats: BdevperfStats,
}

/// The parsed outcome of a bdevperf run.
#[derive(Debug, Clone, Default)]
pub struct BdevperfResult {
    /// Rows of the final table, in output order.
    pub jobs: Vec<BdevperfJob>,
    /// The `Total` row; `None` if bdevperf never got to print it (start-up failure, crash).
    pub total: Option<BdevperfStats>,
    /// Lines "Buffer mismatch! Target: <bdev> Disk Offset: <n>" (verify miscompares).
    pub miscompares: usize,
    /// Lines "task offset: <n> on job bdev=<bdev> fails" (an I/O completed with failure).
    pub io_failures: usize,
    /// Exit status; `None` when the result was parsed from text only.
    pub status: Option<ExitStatus>,
    /// Exit code (`None` if killed by a signal or parsed from text only).
    pub exit_code: Option<i32>,
    /// stdout+stderr of the run.
    pub output: String,
    /// The command line that was run.
    pub command: String,
}

impl BdevperfResult {
    /// Exited with status 0.
    pub fn exited_ok(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// Any sign of failed I/O: failure lines, jobs that ended with error, or Fail/s > 0.
    pub fn failed_io(&self) -> bool {
        self.io_failures > 0
            || self.jobs.iter().any(|j| j.ended_with_error || j.stats.fail_per_s > 0.0)
            || self.total.is_some_and(|t| t.fail_per_s > 0.0)
    }

    /// Any I/O timed out (TO/s > 0; needs `-k`).
    pub fn timed_out_io(&self) -> bool {
        self.jobs.iter().any(|j| j.stats.timeout_per_s > 0.0) || self.total.is_some_and(|t| t.timeout_per_s > 0.0)
    }

    /// Clean run: exit 0, a Total row, no failed/timed-out I/O, no miscompares.
    pub fn success(&self) -> bool {
        self.exited_ok() && self.total.is_some() && !self.failed_io() && !self.timed_out_io() && self.miscompares == 0
    }

    /// `Ok(self)` for a clean run, else an error that says why, with the output tail.
    pub fn ok(&self) -> Result<&Self, String> {
        if self.success() {
            return Ok(self);
        }
        let mut why = Vec::new();
        if !self.exited_ok() {
            why.push(format!("exit status {:?}", self.status));
        }
        if self.total.is_none() {
            why.push("no Total row".to_string());
        }
        if self.failed_io() {
            why.push(format!("failed I/O ({} failure lines)", self.io_failures));
        }
        if self.timed_out_io() {
            why.push("timed-out I/O".to_string());
        }
        if self.miscompares > 0 {
            why.push(format!("{} verify miscompares", self.miscompares));
        }
        Err(format!(
            "bdevperf run not clean: {}\ncommand: {}\noutput tail:\n{}",
            why.join(", "),
            self.command,
            tail_lines(&self.output, 40)
        ))
    }

    /// Total IOPS (0 when there is no Total row).
    pub fn iops(&self) -> f64 {
        self.total.map(|t| t.iops).unwrap_or(0.0)
    }

    /// The first job on bdev `name`.
    pub fn job(&self, name: &str) -> Option<&BdevperfJob> {
        self.jobs.iter().find(|j| j.name == name)
    }
}

/// Parses the numbers after the colon of a table row; `None` unless all are numbers.
fn parse_numbers(s: &str) -> Option<Vec<f64>> {
    s.split_whitespace().map(|t| t.parse::<f64>().ok()).collect()
}

/// Parses a `Job: <name> (Core Mask 0x1, workload: verify, [percentage: 50, ]depth: 8,
/// IO size: 4096)` header into a job skeleton.
fn parse_job_header(rest: &str) -> Option<BdevperfJob> {
    let open = rest.rfind(" (Core Mask ")?;
    let name = rest[..open].to_string();
    let inner = rest[open + 2..].trim_end().strip_suffix(')')?;
    let mut job = BdevperfJob {
        name,
        ..Default::default()
    };
    for part in inner.split(", ") {
        if let Some(mask) = part.strip_prefix("Core Mask ") {
            job.core_mask = Some(mask.trim().to_string());
        } else if let Some((k, v)) = part.split_once(": ") {
            let v = v.trim();
            match k.trim() {
                "workload" => job.workload = Some(v.to_string()),
                "depth" => job.depth = v.parse().ok(),
                "IO size" => job.io_size = v.parse().ok(),
                "percentage" => job.percentage = v.parse().ok(),
                _ => {}
            }
        }
    }
    Some(job)
}

/// Parses bdevperf's stdout (see the format notes in the body). The exit fields of the result
/// are left empty. Public so that the log of a `bdevperf -z` [`Target`] can be parsed too.
///
/// The final table bdevperf prints looks like this (lines may be prefixed by `\r`; the live
/// progress line `  485576.00 IOPS,  1896.78 MiB/s` ends in `\r`, not `\n`):
///
/// ```text
///                                                         Latency(us)
///  Device Information          : runtime(s)       IOPS      MiB/s     Fail/s     TO/s    Average        min        max
/// Job: r1 (Core Mask 0x1, workload: verify, depth: 8, IO size: 4096)
/// Job: r1 ended in about 0.52 seconds with error          <- only when an I/O failed
/// \t Verification LBA range: start 0x0 length 0x800       <- verify only
/// \t r1                  :       2.00  483169.10    1887.38       0.00     0.00      15.63       2.24     614.40
///  =================================================================================================================
///  Total                       :             495217.29    1934.44       0.00     0.00      15.63       0.82     614.40
/// ```
///
/// A job row has 8 numbers after the last `:` (runtime, IOPS, MiB/s, Fail/s, TO/s, avg, min,
/// max), the Total row 7 (no runtime). With `-S` the table is repeated periodically; the last
/// block (rows since the previous Total, up to the last Total) wins.
pub fn parse_bdevperf_output(output: &str) -> BdevperfResult {
    let mut res = BdevperfResult {
        output: output.to_string(),
        ..Default::default()
    };
    let mut pending: Option<BdevperfJob> = None; // header seen, row not yet
    let mut block: Vec<BdevperfJob> = Vec::new(); // rows since the last Total
    for raw in output.split(['\n', '\r']) {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        if line.starts_with("Buffer mismatch!") {
            res.miscompares += 1;
            continue;
        }
        if line.starts_with("task offset:") && line.ends_with(" fails") {
            res.io_failures += 1;
            continue;
        }
        if let Some(rest) = line.strip_prefix("Job: ") {
            if rest.ends_with(" seconds with error") {
                if let Some(p) = pending.as_mut() {
                    p.ended_with_error = true;
                } else if let Some(name) = rest.split(" ended in about ").next() {
                    pending = Some(BdevperfJob {
                        name: name.to_string(),
                        ended_with_error: true,
                        ..Default::default()
                    });
                }
            } else if let Some(job) = parse_job_header(rest) {
                pending = Some(job);
            }
            continue;
        }
        let Some((lhs, rhs)) = line.rsplit_once(':') else {
            continue;
        };
        let Some(nums) = parse_numbers(rhs) else {
            continue;
        };
        let name = lhs.trim();
        let stats = |n: &[f64]| BdevperfStats {
            iops: n[0],
            mib_s: n[1],
            fail_per_s: n[2],
            timeout_per_s: n[3],
            avg_lat_us: n[4],
            min_lat_us: n[5],
            max_lat_us: n[6],
        };
        if nums.len() == 7 && name == "Total" {
            res.total = Some(stats(&nums));
            res.jobs = std::mem::take(&mut block);
        } else if nums.len() == 8 && !name.is_empty() {
            let mut job = match pending.take() {
                Some(j) if j.name == name => j,
                _ => BdevperfJob {
                    name: name.to_string(),
                    ..Default::default()
                },
            };
            job.runtime_s = nums[0];
            job.stats = stats(&nums[1..]);
            block.push(job);
        }
    }
    if res.total.is_none() {
        res.jobs = block; // partial table of an interrupted run
    }
    res
}

/// Runs `bdevperf --no-huge -s <mem> --no-pci -m <mask> --disable-cpumask-locks -r <socket>
/// -c <config> -q -o -w -t <extra_args>` to completion (module preloaded when `opts.preload`).
///
/// `Ok` whenever bdevperf exited by itself, whatever its status: check
/// [`BdevperfResult::success`] / [`BdevperfResult::ok`] or the individual fields.
/// `Err` if it could not be started, or `Err("bdevperf hung: ...")` if it did not exit within
/// the timeout (it is SIGKILLed; the message carries the output tail).
pub fn bdevperf(env: &SpdkEnv, opts: BdevperfOpts<'_>) -> Result<BdevperfResult, String> {
    let dir = TestDir::new(opts.name)?;
    let socket = socket_path(&dir);
    let mut cmd = bdevperf_command(env, &opts, &dir, &socket, false)?;
    let log_path = dir.join("bdevperf.log");
    let (out, err) = log_stdio(&log_path)?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    let command = describe(&cmd);
    let mut child = cmd.spawn().map_err(|e| format!("spawn `{command}`: {e}"))?;
    let timeout = opts.effective_timeout();
    let status = wait_child(&mut child, timeout);
    let status = match status {
        Some(st) => st,
        None => {
            kill_and_reap(&mut child);
            let _ = fs::remove_file(&socket);
            return Err(format!(
                "bdevperf hung: no exit within {timeout:?}, killed with SIGKILL\ncommand: {command}\noutput tail:\n{}",
                tail_lines(&read_lossy(&log_path), 40)
            ));
        }
    };
    let _ = fs::remove_file(&socket);
    let mut res = parse_bdevperf_output(&read_lossy(&log_path));
    res.status = Some(status);
    res.exit_code = status.code();
    res.command = command;
    Ok(res)
}

/// Starts `bdevperf ... -z` (waits for the `perform_tests` RPC) and returns it as a [`Target`]
/// once its RPC socket answers. Drive it with [`Target::perform_tests`] (e.g. from a scoped
/// thread while the main thread issues other RPCs to the same socket), then parse
/// [`Target::log`] with [`parse_bdevperf_output`]. `opts.timeout` bounds start-up here.
pub fn bdevperf_server(env: &SpdkEnv, opts: BdevperfOpts<'_>) -> Result<Target, String> {
    let dir = TestDir::new(opts.name)?;
    let socket = socket_path(&dir);
    let cmd = bdevperf_command(env, &opts, &dir, &socket, true)?;
    let startup = if opts.timeout.is_zero() {
        STARTUP_TIMEOUT
    } else {
        opts.timeout
    };
    launch("bdevperf", cmd, dir, socket, startup, RPC_TIMEOUT)
}

fn bdevperf_command(
    env: &SpdkEnv,
    opts: &BdevperfOpts<'_>,
    dir: &TestDir,
    socket: &Path,
    server: bool,
) -> Result<Command, String> {
    let cfg = write_config(dir, "bdevperf.json", &opts.config)?;
    let mut args = app_base_args(opts.mem_mb, opts.cores_mask);
    args.extend([
        "-r".to_string(),
        socket.to_string_lossy().into_owned(),
        "-c".to_string(),
        cfg.to_string_lossy().into_owned(),
        "-q".to_string(),
        opts.queue_depth.to_string(),
        "-o".to_string(),
        opts.io_size.to_string(),
        "-w".to_string(),
        opts.workload.to_string(),
        "-t".to_string(),
        opts.time_s.to_string(),
    ]);
    if server {
        args.push("-z".into());
    }
    args.extend(opts.extra_args.iter().cloned());
    Ok(app_command(
        &env.bdevperf,
        &args,
        &opts.env,
        opts.preload.then_some(&env.module_lib),
    ))
}

// ------------------------------------------------------------------------------------------------
// spdk_dd
// ------------------------------------------------------------------------------------------------

/// Runs `spdk_dd --no-huge -s 1024 --no-pci -m 0x1 --disable-cpumask-locks --json <config>
/// <args>` (e.g. `&["--if", "/path", "--ob", "m0", "--bs", "4096"]`), module preloaded when
/// `preload`. `Ok(output)` on exit status 0; `Err` (with status and output tail) otherwise, or
/// when it does not finish within `timeout` (`Duration::ZERO` = 120 s; then it is SIGKILLed).
/// spdk_dd starts no RPC server.
pub fn spdk_dd(
    env: &SpdkEnv,
    config: Value,
    args: &[&str],
    preload: bool,
    timeout: Duration,
) -> Result<String, String> {
    let timeout = if timeout.is_zero() {
        SPDK_DD_DEFAULT_TIMEOUT
    } else {
        timeout
    };
    let dir = TestDir::new("spdk_dd")?;
    let cfg = write_config(&dir, "spdk_dd.json", &config)?;
    let log_path = dir.join("spdk_dd.log");
    let (out, err) = log_stdio(&log_path)?;
    let mut cmd = Command::new(&env.spdk_dd);
    cmd.args(app_base_args(1024, "0x1"))
        .arg("--json")
        .arg(&cfg)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    if preload {
        add_preload(&mut cmd, &env.module_lib);
    }
    let command = describe(&cmd);
    let mut child = cmd.spawn().map_err(|e| format!("spawn `{command}`: {e}"))?;
    match wait_child(&mut child, timeout) {
        Some(st) if st.success() => Ok(read_lossy(&log_path)),
        Some(st) => Err(format!(
            "spdk_dd failed ({st})\ncommand: {command}\noutput tail:\n{}",
            tail_lines(&read_lossy(&log_path), 40)
        )),
        None => {
            kill_and_reap(&mut child);
            Err(format!(
                "spdk_dd hung: no exit within {timeout:?}, killed with SIGKILL\ncommand: {command}\noutput tail:\n{}",
                tail_lines(&read_lossy(&log_path), 40)
            ))
        }
    }
}

// ------------------------------------------------------------------------------------------------
// JSON config builders
// ------------------------------------------------------------------------------------------------

/// One entry of a subsystem's `config` list: `{"method": method, "params": params}`.
pub fn config_entry(method: &str, params: Value) -> Value {
    json!({"method": method, "params": params})
}

/// `bdev_malloc_create {name, num_blocks, block_size}` (a RAM disk, zero-filled).
pub fn malloc_bdev_config(name: &str, blocks: u64, block_size: u32) -> Value {
    config_entry(
        "bdev_malloc_create",
        json!({"name": name, "num_blocks": blocks, "block_size": block_size}),
    )
}

/// `bdev_null_create {name, num_blocks, block_size}` (discards writes, reads are not data-
/// preserving: never use it with `-w verify`).
pub fn null_bdev_config(name: &str, blocks: u64, block_size: u32) -> Value {
    config_entry(
        "bdev_null_create",
        json!({"name": name, "num_blocks": blocks, "block_size": block_size}),
    )
}

/// `bdev_aio_create {name, filename, block_size}` over a file (see [`create_sparse_file`]).
pub fn aio_bdev_config(name: &str, file: impl AsRef<Path>, block_size: u32) -> Value {
    config_entry(
        "bdev_aio_create",
        json!({
            "name": name,
            "filename": file.as_ref().to_string_lossy(),
            "block_size": block_size,
        }),
    )
}

/// SPDK's own raid1 (`bdev_raid_create {name, raid_level, base_bdevs}`), handy as a reference.
pub fn raid1_bdev_config(name: &str, base_bdevs: &[&str]) -> Value {
    config_entry(
        "bdev_raid_create",
        json!({"name": name, "raid_level": "raid1", "base_bdevs": base_bdevs}),
    )
}

/// `bdev_wait_for_examine`: put it last so that the app starts I/O only after examine is done.
pub fn wait_for_examine_config() -> Value {
    json!({"method": "bdev_wait_for_examine"})
}

/// Wraps bdev config entries into a full SPDK JSON config:
/// `{"subsystems":[{"subsystem":"bdev","config":[...]}]}`.
pub fn bdev_subsystem(configs: Vec<Value>) -> Value {
    json!({"subsystems": [{"subsystem": "bdev", "config": configs}]})
}
