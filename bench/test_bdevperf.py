"""The bench's bdevperf parser against real captured bdevperf outputs.

    python3 -m unittest discover bench

Each fixtures/bdevperf/<name>.txt is a bdevperf run's stdout and stderr as captured (`.txt`, as
`*.log` is git-ignored); <name>.expected.json says how it was run (`command`, `bdev_config`),
what the case is for (`why`) and what it must parse to, read off the log by hand. The p99
values were computed apart from the parser (the histogram's buckets summed with awk and sort)
and, for one job, equal bdevperf's own 99 % summary line. The same files are meant for the
tests' Rust parser (tests/support) too, so that the two parsers of the one format are held to
the same answers (see bench/README.md).
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
        # The issue this package closed: bdevperf's output was parsed twice in bench/. The sweep
        # must use this parser, and nothing else under bench/ may define one.
        import mirrorbench.pressure
        self.assertIs(mirrorbench.pressure.parse_bdevperf, parse_bdevperf)
        bench = Path(__file__).resolve().parent
        defs = [f"{p.relative_to(bench)}" for p in bench.rglob("*.py")
                if re.search(r"^\s*def parse_bdevperf", p.read_text(), re.M)]
        self.assertEqual(defs, ["mirrorbench/bdevperf.py"])

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
