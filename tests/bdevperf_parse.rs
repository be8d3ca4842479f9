//! The project's one bdevperf parser (`spdk_mirror::bdevperf`, which the tests use directly and
//! the benchmark through `spdk-mirror bdevperf-report`) against captured bdevperf outputs
//! (`bench/fixtures/bdevperf`, each with the answers read off the log by hand). Needs no SPDK.

mod support;

use std::fs;
use std::path::Path;

use serde_json::Value;
use support::parse_bdevperf_output;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

#[test]
fn the_tests_parser_reads_the_bench_fixtures_as_recorded() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/fixtures/bdevperf");
    let mut checked = 0;
    for entry in fs::read_dir(&dir).expect("bench/fixtures/bdevperf") {
        let path = entry.expect("entry").path();
        let Some(stem) = path.to_str().and_then(|p| p.strip_suffix(".expected.json")) else {
            continue;
        };
        let want: Value = serde_json::from_str(&fs::read_to_string(&path).expect("read")).expect("json");
        let got = parse_bdevperf_output(&fs::read_to_string(format!("{stem}.txt")).expect("captured output"));
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("?").to_string();
        let total = got
            .total
            .as_ref()
            .unwrap_or_else(|| panic!("{name}: no Total line parsed"));
        let t = &want["total"];
        for (field, value) in [
            ("iops", total.iops),
            ("mib_s", total.mib_s),
            ("fail_s", total.fail_per_s),
            ("to_s", total.timeout_per_s),
            ("avg_us", total.avg_lat_us),
            ("min_us", total.min_lat_us),
            ("max_us", total.max_lat_us),
        ] {
            let expected = t[field].as_f64().unwrap_or_else(|| panic!("{name}: total.{field}"));
            assert!(close(value, expected), "{name}: total.{field} {value} != {expected}");
        }
        let jobs = want["jobs"].as_array().expect("jobs");
        assert_eq!(got.jobs.len(), jobs.len(), "{name}: job rows");
        for (g, w) in got.jobs.iter().zip(jobs) {
            assert_eq!(g.name, w["name"].as_str().expect("name"), "{name}: job name");
            for (field, value) in [
                ("runtime_s", g.runtime_s),
                ("iops", g.stats.iops),
                ("mib_s", g.stats.mib_s),
                ("avg_us", g.stats.avg_lat_us),
            ] {
                let expected = w[field].as_f64().unwrap_or_else(|| panic!("{name}: jobs.{field}"));
                assert!(
                    close(value, expected),
                    "{name}: job {} {field} {value} != {expected}",
                    g.name
                );
            }
        }
        let failures = want["failures"].as_u64().expect("failures") as usize;
        assert_eq!(got.io_failures, failures, "{name}: failures");
        assert_eq!(got.p99_us, want["p99_us"].as_f64(), "{name}: p99_us");
        assert_eq!(got.p99_source, want["p99_source"].as_str(), "{name}: p99_source");
        if let Some(n) = want.get("histogram_ios") {
            assert_eq!(got.histogram_ios, n.as_u64(), "{name}: histogram_ios");
        }
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} fixtures in {}", dir.display());
}

/// The bench's own tests (the parser reached through `spdk-mirror bdevperf-report`, as the bench
/// does, on the same fixtures; the pressure sweep using it): run here, with the binary this test
/// run built, so that the README's test command covers the bench's way in too.
#[test]
fn the_bench_parser_passes_its_unittests() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new("python3")
        .args(["-m", "unittest", "discover", "-s", "bench", "-t", "bench"])
        .current_dir(root)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("SPDK_MIRROR_BIN", env!("CARGO_BIN_EXE_spdk-mirror"))
        .output()
        .expect("python3 (CPython 3, which the bench needs) is not on PATH");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "bench unittests failed:\n{text}");
    assert!(
        text.contains("OK") && !text.contains("Ran 0 tests"),
        "bench unittests ran nothing:\n{text}"
    );
}
