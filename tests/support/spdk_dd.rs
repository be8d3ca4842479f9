//! `spdk_dd`: one bounded run of SPDK's copy tool.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::cpu::lease_core;
use super::dirs::TestDir;
use super::env::SpdkEnv;
use super::process::{
    add_preload, app_base_args, describe, kill_and_reap, log_stdio, read_lossy, tail_lines, wait_child, write_config,
};

/// Deadline for an `spdk_dd` run when the caller passes `Duration::ZERO`.
pub const SPDK_DD_DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `spdk_dd --no-huge -s 1024 --no-pci -m <a leased core> --disable-cpumask-locks --json
/// <config> <args>` (e.g. `&["--if", "/path", "--ob", "m0", "--bs", "4096"]`), module preloaded when
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
    let core = lease_core();
    let mut cmd = Command::new(&env.spdk_dd);
    cmd.args(app_base_args(1024, core.mask()))
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

/// [`spdk_dd`] with the module preloaded and a 120 s bound; panics with its output on failure
/// and prints how long it took.
pub fn run_dd(env: &SpdkEnv, config: &Value, args: &[&str]) -> String {
    let started = Instant::now();
    let out = spdk_dd(env, config.clone(), args, true, Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("spdk_dd {args:?}: {e}"));
    eprintln!("spdk_dd {args:?}: {:?}", started.elapsed());
    out
}
