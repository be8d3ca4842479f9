//! bdevperf: [`BdevperfOpts`], the one-shot runner [`bdevperf`] and the `-z` server
//! [`bdevperf_server`]. The output parser and its types are the library's (`spdk_mirror::bdevperf`),
//! the one the benchmark uses too.

pub use spdk_mirror::bdevperf::{parse_bdevperf_output, BdevperfJob, BdevperfResult, BdevperfStats};

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::config::bdev_subsystem;
use super::cpu::{lease_core, CoreLease};
use super::dirs::TestDir;
use super::env::SpdkEnv;
use super::process::{
    app_base_args, app_command, describe, kill_and_reap, log_stdio, read_lossy, socket_path, tail_lines, wait_child,
    write_config,
};
use super::target::{launch, Target, RPC_TIMEOUT, STARTUP_TIMEOUT};

/// Extra time granted to a bdevperf run beyond its `-t` when `BdevperfOpts::timeout` is zero.
pub const BDEVPERF_GRACE: Duration = Duration::from_secs(60);

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
    /// `-m`. Empty (the default): a core leased for the run ([`super::lease_core`]).
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
            cores_mask: "",
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
    let lease = opts.cores_mask.is_empty().then(lease_core);
    let mask = lease.as_ref().map_or(opts.cores_mask, CoreLease::mask);
    let mut cmd = bdevperf_command(env, &opts, mask, &dir, &socket, false)?;
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
    let lease = opts.cores_mask.is_empty().then(lease_core);
    let mask = lease.as_ref().map_or(opts.cores_mask, CoreLease::mask);
    let cmd = bdevperf_command(env, &opts, mask, &dir, &socket, true)?;
    let startup = if opts.timeout.is_zero() {
        STARTUP_TIMEOUT
    } else {
        opts.timeout
    };
    launch("bdevperf", cmd, dir, socket, (startup, RPC_TIMEOUT), lease)
}

fn bdevperf_command(
    env: &SpdkEnv,
    opts: &BdevperfOpts<'_>,
    cores_mask: &str,
    dir: &TestDir,
    socket: &Path,
    server: bool,
) -> Result<Command, String> {
    let cfg = write_config(dir, "bdevperf.json", &opts.config)?;
    let mut args = app_base_args(opts.mem_mb, cores_mask);
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
