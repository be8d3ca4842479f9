//! The `spdk-mirror` binary: output formats and exit codes.

use std::process::{Command, Output};

fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_spdk-mirror"))
        .args(args)
        .output()
        .expect("binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn map_json_is_one_line_in_md_slot_order() {
    let o = cli(&[
        "map",
        "--level",
        "raid10",
        "--layout",
        "f2",
        "--legs",
        "4",
        "--chunk-kb",
        "4",
        "--block-size",
        "512",
        "--leg-blocks",
        "32",
        "--lba",
        "25",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // chunk 3 (blocks 24..32): leg 3 row 0, far copy on leg 0 in the second half.
    assert_eq!(
        stdout(&o),
        "{\"data_blocks\":64,\"copies\":[{\"leg\":3,\"lba\":1},{\"leg\":0,\"lba\":17}]}\n"
    );
}

/// `map` without `--chunk-kb` uses the chunk `bdev_mirror_create` defaults to (64 KiB), so it
/// describes a mirror created with defaults (it used md's 512 KiB, and placed blocks wrongly).
#[test]
fn map_defaults_to_the_create_rpcs_chunk() {
    let map = |extra: &[&str]| {
        let mut args = vec![
            "map",
            "--level",
            "raid10",
            "--layout",
            "n2",
            "--legs",
            "4",
            "--leg-blocks",
            "4096",
            "--lba",
            "200",
            "--json",
        ];
        args.extend_from_slice(extra);
        let o = cli(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
    };
    // Block 200 is in the second 64 KiB chunk (128 blocks): legs 2 and 3, row 0.
    assert_eq!(
        map(&[]),
        "{\"data_blocks\":8192,\"copies\":[{\"leg\":2,\"lba\":72},{\"leg\":3,\"lba\":72}]}\n"
    );
    assert_eq!(map(&[]), map(&["--chunk-kb", "64"]));
}

#[test]
fn map_raid1_lists_every_leg() {
    let o = cli(&[
        "map",
        "--level",
        "raid1",
        "--legs",
        "3",
        "--block-size",
        "4096",
        "--leg-blocks",
        "100",
        "--lba",
        "7",
        "--json",
    ]);
    assert_eq!(
        stdout(&o),
        "{\"data_blocks\":100,\"copies\":[{\"leg\":0,\"lba\":7},{\"leg\":1,\"lba\":7},{\"leg\":2,\"lba\":7}]}\n"
    );
    let text = cli(&[
        "map",
        "--level",
        "raid1",
        "--legs",
        "2",
        "--leg-blocks",
        "100",
        "--lba",
        "7",
    ]);
    assert!(stdout(&text).contains("leg 1 lba 7"), "{}", stdout(&text));
}

#[test]
fn bad_geometry_is_one_line_naming_the_problem_with_exit_2() {
    let base = [
        "map",
        "--level",
        "raid10",
        "--block-size",
        "512",
        "--leg-blocks",
        "1024",
        "--lba",
        "0",
    ];
    for (extra, needle) in [
        (vec!["--layout", "n3", "--legs", "2", "--chunk-kb", "4"], "legs"),
        (vec!["--layout", "n2", "--legs", "4", "--chunk-kb", "3"], "power of two"),
        (vec!["--layout", "q2", "--legs", "4", "--chunk-kb", "4"], "layout"),
        (vec!["--layout", "n2", "--legs", "4", "--chunk-kb", "0"], "chunk"),
    ] {
        let args: Vec<&str> = base.iter().copied().chain(extra.iter().copied()).collect();
        let o = cli(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(stdout(&o).is_empty());
    }
    let o = cli(&[
        "map",
        "--level",
        "raid10",
        "--legs",
        "4",
        "--chunk-kb",
        "2",
        "--block-size",
        "4096",
        "--leg-blocks",
        "64",
        "--lba",
        "0",
    ]);
    assert_eq!(o.status.code(), Some(2), "chunk smaller than a block");
    let o = cli(&[
        "map",
        "--level",
        "raid1",
        "--legs",
        "2",
        "--leg-blocks",
        "100",
        "--lba",
        "100",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("lba"));
    let o = cli(&[
        "map",
        "--level",
        "raid5",
        "--legs",
        "2",
        "--leg-blocks",
        "100",
        "--lba",
        "1",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("level"));
}

fn last_json(o: &Output) -> serde_json::Value {
    let out = stdout(o);
    serde_json::from_str(out.lines().last().expect("output")).expect("last line is JSON")
}

#[test]
fn simulate_immediate_succeeds_and_batch_stalls_with_exit_3() {
    let common = [
        "--level",
        "raid1",
        "--legs",
        "3",
        "--qd",
        "8",
        "--ios",
        "2000",
        "--leg-pool",
        "1",
        "--io-pool",
        "9",
        "--seed",
        "4",
    ];
    let ok = cli(&[&["simulate", "--strategy", "immediate"][..], &common].concat());
    assert_eq!(ok.status.code(), Some(0), "{}", stdout(&ok));
    let j = last_json(&ok);
    for key in [
        "strategy",
        "submitted",
        "completed",
        "stalled",
        "mismatches",
        "sim_time_us",
        "iops_sim",
    ] {
        assert!(j.get(key).is_some(), "missing {key}: {j}");
    }
    assert_eq!(j["completed"], j["submitted"]);
    assert_eq!(j["stalled"], false);
    assert_eq!(j["mismatches"], 0);

    let stall = cli(&[&["simulate", "--strategy", "batch", "--json"][..], &common].concat());
    assert_eq!(stall.status.code(), Some(3), "{}", stdout(&stall));
    let j = last_json(&stall);
    assert_eq!(j["stalled"], true);
    assert_eq!(j["strategy"], "batch");
    assert_eq!(stdout(&stall).lines().count(), 1, "--json prints only the JSON line");
}

#[test]
fn simulate_bad_parameters_exit_2() {
    let o = cli(&["simulate", "--io-pool", "4", "--max-parents", "4"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).starts_with("spdk-mirror: io_pool:"), "{}", stderr(&o));
    let o = cli(&["simulate", "--legs", "2", "--fail-leg", "5"]);
    assert_eq!(o.status.code(), Some(2));
    // Sizes and times the simulator cannot hold, and a percent above 100, name their field
    // (they aborted on allocation, wrapped into a false stall, or ran).
    for (args, field) in [
        (&["--leg-blocks", "18446744073709551615"][..], "leg_blocks:"),
        (&["--legs", "32", "--leg-blocks", "100000000"][..], "leg_blocks:"),
        (&["--leg-pool", "4000000000"][..], "leg_pool:"),
        (&["--qd", "4000000000", "--io-pool", "4000000001"][..], "qd:"),
        (&["--max-parents", "70000", "--io-pool", "80000"][..], "max_parents:"),
        (&["--latency-us", "18446744073709551615"][..], "latency_us:"),
        (&["--jitter-us", "60000001"][..], "jitter_us:"),
        (
            &["--bitmap-region-kb", "64", "--bitmap-flush-us", "18446744073709551615"][..],
            "bitmap_flush_us:",
        ),
        (&["--error-leg", "1", "--error-pct", "101"][..], "error_pct:"),
        (&["--read-error-leg", "1", "--error-pct", "200"][..], "error_pct:"),
    ] {
        let o = cli(&[&["simulate", "--ios", "100"][..], args].concat());
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stdout(&o));
        assert!(
            stderr(&o).starts_with(&format!("spdk-mirror: {field}")),
            "{args:?}: {}",
            stderr(&o)
        );
    }
    // RAID10 over 8-block chunks: 63 chunks and a block is the longest request at any offset.
    let r10 = [
        "simulate",
        "--level",
        "raid10",
        "--legs",
        "4",
        "--chunk-kb",
        "4",
        "--ios",
        "500",
    ];
    let o = cli(&[&r10[..], &["--max-io-blocks", "506"]].concat());
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    assert!(
        stderr(&o).starts_with("spdk-mirror: max_io_blocks: 506 blocks") && stderr(&o).contains("at most 505"),
        "{}",
        stderr(&o)
    );
    let o = cli(&[&r10[..], &["--max-io-blocks", "505"]].concat());
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
}

#[test]
fn simulate_degraded_run_reports_the_failed_leg() {
    let o = cli(&[
        "simulate",
        "--level",
        "raid10",
        "--layout",
        "o2",
        "--legs",
        "3",
        "--ios",
        "3000",
        "--fail-leg",
        "1",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert_eq!(last_json(&o)["legs_failed"], serde_json::json!([1]));
}
