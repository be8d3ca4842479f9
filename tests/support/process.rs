//! Starting, watching and stopping SPDK app processes: command lines, logs, bounded waits,
//! SIGTERM/SIGKILL. The only `unsafe` of the test support is here: `libc::kill` for SIGTERM.

use std::ffi::OsString;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::dirs::{TestDir, DIR_COUNTER};

/// Polling interval used by all bounded waits.
const POLL: Duration = Duration::from_millis(50);
/// `sun_path` is 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

/// Sends SIGTERM to `pid` (a child of ours that has not been reaped yet).
pub(super) fn send_sigterm(pid: u32) {
    // SAFETY: kill(2) takes plain integers and touches no memory of ours. `pid` is the id of a
    // child process we spawned and have not reaped (callers check `try_wait` first under the
    // child's mutex), so the id cannot have been recycled for an unrelated process.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGTERM);
    }
}

/// Polls `child` until it exits or `timeout` passes.
pub(super) fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
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
pub(super) fn kill_and_reap(child: &mut Child) -> Option<ExitStatus> {
    let _ = child.kill();
    child.wait().ok()
}

/// The last `n` lines of `s`.
pub fn tail_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

pub(super) fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Opens `path` as a log and returns (stdout, stderr) handles that both append to it.
pub(super) fn log_stdio(path: &Path) -> Result<(Stdio, Stdio), String> {
    let f = File::create(path).map_err(|e| format!("create log {}: {e}", path.display()))?;
    let f2 = f.try_clone().map_err(|e| format!("dup log fd: {e}"))?;
    Ok((Stdio::from(f), Stdio::from(f2)))
}

/// Adds `LD_PRELOAD=<lib>` (in front of any inherited value) to `cmd`.
/// An SPDK app's command line, its extra environment, and the module preloaded if asked.
pub(super) fn app_command(
    binary: &Path,
    args: &[String],
    env: &[(String, String)],
    preload: Option<&PathBuf>,
) -> Command {
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

pub(super) fn add_preload(cmd: &mut Command, lib: &Path) {
    let mut v = OsString::from(lib.as_os_str());
    if let Some(old) = std::env::var_os("LD_PRELOAD") {
        if !old.is_empty() {
            v.push(":");
            v.push(old);
        }
    }
    cmd.env("LD_PRELOAD", v);
}

pub(super) fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// The common SPDK application options every run here uses.
pub(super) fn app_base_args(mem_mb: u32, cores_mask: &str) -> Vec<String> {
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
pub(super) fn socket_path(dir: &TestDir) -> PathBuf {
    let p = dir.join("spdk.sock");
    if p.as_os_str().len() <= MAX_SOCKET_PATH {
        p
    } else {
        let n = DIR_COUNTER.fetch_add(1, Ordering::Relaxed);
        PathBuf::from(format!("/tmp/spdk-mirror-{}-{n}.sock", std::process::id()))
    }
}

pub(super) fn write_config(dir: &TestDir, file: &str, config: &Value) -> Result<PathBuf, String> {
    let path = dir.join(file);
    let text = serde_json::to_string_pretty(config).map_err(|e| format!("config: {e}"))?;
    fs::write(&path, text).map_err(|e| format!("write {}: {e}", path.display()))?;
    Ok(path)
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
