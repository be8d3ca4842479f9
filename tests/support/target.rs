//! Long-running SPDK applications with an RPC socket: [`Target`] (`spdk_tgt`, or `bdevperf -z`
//! from [`super::bdevperf_server`]) and the RPC shorthand [`rpc_ok`].

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::cpu::{lease_core, CoreLease};
use super::dirs::TestDir;
use super::env::SpdkEnv;
use super::process::{
    app_base_args, app_command, describe, kill_and_reap, log_stdio, read_lossy, send_sigterm, socket_path, tail_lines,
    wait_child,
};
use super::rpc::{exchange, rpc_call, RpcError};

/// How long `Target::start` waits for the RPC socket to answer `spdk_get_version`.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// Default deadline for one JSON-RPC round trip.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `Drop`/`shutdown` waits after SIGTERM before escalating to SIGKILL.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// Options for [`Target::start`]. Use `..Default::default()` for the rest.
#[derive(Debug, Clone)]
pub struct TargetOpts<'a> {
    /// Used in the temp dir name; pass the test's name.
    pub name: &'a str,
    /// `-s`: DPDK memory in MB (spdk_tgt needs 2048 with `--no-huge`).
    pub mem_mb: u32,
    /// `-m`: reactor core mask. Empty (the default): a core leased for the app's lifetime
    /// ([`super::lease_core`]).
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
            cores_mask: "",
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
    /// The core leased for this app when its options named none; given back after it is gone.
    lease: Option<CoreLease>,
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
        let lease = opts.cores_mask.is_empty().then(lease_core);
        let mask = lease.as_ref().map_or(opts.cores_mask, CoreLease::mask);
        let mut args = app_base_args(opts.mem_mb, mask);
        args.push("-r".into());
        args.push(socket.to_string_lossy().into_owned());
        if opts.wait_for_rpc {
            args.push("--wait-for-rpc".into());
        }
        args.extend(opts.extra_args.iter().cloned());
        let cmd = app_command(&env.spdk_tgt, &args, &opts.env, opts.preload.then_some(&env.module_lib));
        launch(
            "spdk_tgt",
            cmd,
            dir,
            socket,
            (opts.startup_timeout, opts.rpc_timeout),
            lease,
        )
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

    /// Sends arbitrary bytes on a fresh connection and reads one JSON value back (60 s bound).
    /// SPDK answers a request it cannot parse as JSON by closing the connection without a
    /// response; that comes back as `Err("connection closed without a response")`. Responses
    /// to well-formed but invalid requests (e.g. `{"a":1}` → -32600 "Invalid request") come
    /// back as `Ok(response object)`, unlike [`Target::rpc`] which decodes them.
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
/// `spdk_get_version`, the process dies, or `startup_timeout` passes. The [`Target`] keeps
/// `lease` (the app's core, if leased for it) until it is dropped.
pub(super) fn launch(
    app: &str,
    mut cmd: Command,
    dir: TestDir,
    socket: PathBuf,
    (startup_timeout, rpc_timeout): (Duration, Duration),
    lease: Option<CoreLease>,
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
        lease,
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

/// `method(params)` on `t`, which must succeed; the panic carries the app's log tail.
pub fn rpc_ok(t: &Target, method: &str, params: Value) -> Value {
    t.rpc(method, params.clone()).unwrap_or_else(|e| {
        panic!(
            "{method} {params} failed: {e}\n{} log tail:\n{}",
            t.log_path().display(),
            tail_lines(&t.log(), 40)
        )
    })
}
