//! SPDK bdevperf's output, parsed: [`parse_bdevperf_output`] and the types it fills
//! ([`BdevperfResult`], [`BdevperfJob`], [`BdevperfStats`]). The one parser of that format in
//! this project: the integration tests use it directly, the benchmark (`bench/`, Python)
//! through `spdk-mirror bdevperf-report`, which prints [`BdevperfResult::report`] as JSON. Both
//! are checked against the captured outputs in `bench/fixtures/bdevperf/`.

use std::process::ExitStatus;

use serde_json::{json, Value};

/// The percentile the latency reports give.
const P99: f64 = 99.0;

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
    /// p99 latency, µs: from the `-ll` histograms of all jobs merged (the end of the bucket
    /// where the cumulative count reaches 99 %, as bdevperf's own summary does for one job),
    /// else the worst job's 99 % summary line (`-l`), else `None`.
    pub p99_us: Option<f64>,
    /// Where `p99_us` came from.
    pub p99_source: Option<&'static str>,
    /// Each job's 99 % line of the `-l` latency summary, µs.
    pub job_p99_us: Vec<f64>,
    /// I/Os counted in the merged histogram (when there is one).
    pub histogram_ios: Option<u64>,
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

    /// What the benchmark reads of a run, as JSON (`spdk-mirror bdevperf-report`): `total`
    /// (`iops`, `mib_s`, `fail_s`, `to_s`, `avg_us`, `min_us`, `max_us`, or null), `jobs`
    /// (`name`, `runtime_s`, `iops`, `mib_s`, `avg_us`), `failures`, `p99_us`, `p99_source`,
    /// `job_p99_us`, and `histogram_ios` when there was a histogram.
    pub fn report(&self) -> Value {
        let total = self.total.map(|t| {
            json!({
                "iops": t.iops, "mib_s": t.mib_s, "fail_s": t.fail_per_s, "to_s": t.timeout_per_s,
                "avg_us": t.avg_lat_us, "min_us": t.min_lat_us, "max_us": t.max_lat_us,
            })
        });
        let jobs: Vec<Value> = self
            .jobs
            .iter()
            .map(|j| {
                json!({
                    "name": j.name, "runtime_s": j.runtime_s, "iops": j.stats.iops,
                    "mib_s": j.stats.mib_s, "avg_us": j.stats.avg_lat_us,
                })
            })
            .collect();
        let mut v = json!({
            "total": total,
            "jobs": jobs,
            "failures": self.io_failures,
            "p99_us": self.p99_us,
            "p99_source": self.p99_source,
            "job_p99_us": self.job_p99_us,
        });
        if let Some(n) = self.histogram_ios {
            v["histogram_ios"] = json!(n);
        }
        v
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
    let mut section = Section::Table;
    // Histogram buckets of every job, merged: (start, end) in µs -> I/Os.
    let mut buckets: Vec<((f64, f64), u64)> = Vec::new();
    for raw in output.split(['\n', '\r']) {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        if line.starts_with("Latency summary") {
            section = Section::Summary;
            continue;
        }
        if line.starts_with("Latency histogram") {
            section = Section::Histogram;
            continue;
        }
        match section {
            Section::Table => {}
            Section::Summary => {
                // `99.00000% :     4.232us`
                if let Some((pct, us)) = summary_line(line) {
                    if (pct - P99).abs() < 1e-9 {
                        res.job_p99_us.push(us);
                    }
                }
            }
            Section::Histogram => {
                // `    2.378 -     2.392:    0.0010%  (      114)`
                if let Some((range, n)) = bucket_line(line) {
                    match buckets.iter_mut().find(|(r, _)| *r == range) {
                        Some((_, count)) => *count += n,
                        None => buckets.push((range, n)),
                    }
                }
            }
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
    if !buckets.is_empty() {
        let total: u64 = buckets.iter().map(|(_, n)| n).sum();
        buckets.sort_by(|a, b| a.0 .1.total_cmp(&b.0 .1));
        let mut cum = 0u64;
        for ((_, end), n) in &buckets {
            cum += n;
            if cum as f64 * 100.0 >= P99 * total as f64 {
                res.p99_us = Some(*end);
                res.p99_source = Some("merged -ll histogram");
                break;
            }
        }
        res.histogram_ios = Some(total);
    } else if let Some(worst) = res.job_p99_us.iter().copied().reduce(f64::max) {
        res.p99_us = Some(worst);
        res.p99_source = Some("worst job's -l summary");
    }
    res
}

/// Where in bdevperf's output a line is: its table, or the `-l`/`-ll` latency reports after it.
#[derive(Clone, Copy)]
enum Section {
    Table,
    Summary,
    Histogram,
}

/// A `-l` summary line, `99.00000% :     4.232us`: (percent, µs).
fn summary_line(line: &str) -> Option<(f64, f64)> {
    let (pct, us) = line.split_once(':')?;
    let pct = pct.trim().strip_suffix('%')?.trim().parse().ok()?;
    let us = us.trim().strip_suffix("us")?.trim().parse().ok()?;
    Some((pct, us))
}

/// A `-ll` histogram line, `2.378 -     2.392:    0.0010%  (      114)`: ((start, end) µs,
/// I/Os in the bucket).
fn bucket_line(line: &str) -> Option<((f64, f64), u64)> {
    let (range, rest) = line.split_once(':')?;
    let (start, end) = range.split_once(" - ")?;
    let (start, end) = (start.trim().parse().ok()?, end.trim().parse().ok()?);
    let (pct, count) = rest.split_once('(')?;
    pct.trim().strip_suffix('%')?.trim().parse::<f64>().ok()?;
    let count = count.trim().strip_suffix(')')?.trim().parse().ok()?;
    Some(((start, end), count))
}

/// The last `n` lines of `s`.
fn tail_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
