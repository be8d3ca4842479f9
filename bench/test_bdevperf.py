"""The project's bdevperf parser (the library's, through `spdk-mirror bdevperf-report`; build it
with `cargo build --release`, or name it with SPDK_MIRROR_BIN) against real captured outputs.

    python3 -m unittest discover bench

Each fixtures/bdevperf/<name>.txt is a bdevperf run's stdout and stderr as captured (`.txt`, as
`*.log` is git-ignored); <name>.expected.json says how it was run (`command`, `bdev_config`),
what the case is for (`why`) and what it must parse to, read off the log by hand. The p99
values were computed apart from the parser (the histogram's buckets summed with awk and sort)
and, for one job, equal bdevperf's own 99 % summary line. tests/bdevperf_parse.rs reads the same
files with the same parser from Rust, and runs these tests.
"""

import json
import re
import unittest
from pathlib import Path

from mirrorbench.bdevperf import parse_bdevperf

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "bdevperf"


def cases():
    for exp in sorted(FIXTURES.glob("*.expected.json")):
        out = exp.with_name(exp.name.replace(".expected.json", ".txt"))
        yield exp.name.replace(".expected.json", ""), out, json.loads(exp.read_text())


class ParseBdevperf(unittest.TestCase):
    def test_fixtures_exist(self):
        names = [n for n, _, _ in cases()]
        self.assertGreaterEqual(len(names), 5, names)
        for _, log, _ in cases():
            self.assertTrue(log.is_file(), log)

    def test_fixtures(self):
        for name, log, exp in cases():
            with self.subTest(name):
                got = parse_bdevperf(log.read_text(errors="replace"))
                self.assertEqual(got["total"], exp["total"])
                self.assertEqual([{k: j[k] for k in e} for j, e in zip(got["jobs"], exp["jobs"])],
                                 exp["jobs"])
                self.assertEqual(len(got["jobs"]), len(exp["jobs"]))
                self.assertEqual(got["failures"], exp["failures"])
                self.assertEqual(got["p99_us"], exp["p99_us"])
                self.assertEqual(got["p99_source"], exp["p99_source"])
                if "histogram_ios" in exp:
                    self.assertEqual(got["histogram_ios"], exp["histogram_ios"])

    def test_one_parser(self):
        # bdevperf's output has one parser (the library's): the sweep reads it through the same
        # function, and nothing under bench/ parses it on its own.
        import mirrorbench.pressure
        self.assertIs(mirrorbench.pressure.parse_bdevperf, parse_bdevperf)
        bench = Path(__file__).resolve().parent
        defs = [f"{p.relative_to(bench)}" for p in bench.rglob("*.py")
                if re.search(r"^\s*def parse_bdevperf", p.read_text(), re.M)]
        self.assertEqual(defs, ["mirrorbench/bdevperf.py"])

    def test_pressure_median_skips_missing_runs(self):
        # --repeat: a run that gave no figure (None) is left out of its row's median.
        from mirrorbench.pressure import median
        self.assertEqual(median([3.0, None, 1.0, 2.0]), 2.0)
        self.assertEqual(median([5]), 5)
        self.assertIsNone(median([None, None]))

    def test_carriage_returns(self):
        # The live progress line ends in \r, not \n; a table row after it must still be read.
        text = ("Running I/O for 1 seconds...\n  9433120.00 IOPS, 36848.12 MiB/s\r"
                " Total                       :            100.00   0.39       0.00     0.00"
                "       3.32       2.36     219.01\n")
        self.assertEqual(parse_bdevperf(text)["total"]["iops"], 100.0)

    def test_nothing(self):
        # A bdevperf that died at start-up: no Total row, no jobs, no p99.
        got = parse_bdevperf("[2026-11-30 19:14:49] app.c: spdk_app_start: *ERROR*: no\n")
        self.assertIsNone(got["total"])
        self.assertEqual(got["jobs"], [])
        self.assertIsNone(got["p99_us"])


if __name__ == "__main__":
    unittest.main()
