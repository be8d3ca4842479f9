"""The instruction counter's reading of callgrind output (bench/mirrorbench/instructions.py).

    python3 -m unittest discover bench
"""

import tempfile
import unittest
from collections import Counter
from pathlib import Path

from mirrorbench.instructions import per_io, self_cost_by_object

# The shape valgrind 3.19 writes with --compress-strings=no: self cost lines under ob=/fn=, and
# a call's inclusive cost on the line after calls=, which belongs to the callee, not the caller.
SAMPLE = """\
version: 1
creator: callgrind-3.19.0
positions: line
events: Ir
summary: 1175

ob=/usr/local/lib/libspdk_bdev.so.20.0
fl=/opt/spdk-src/lib/bdev/bdev.c
fn=spdk_bdev_writev_blocks
10 100
cob=/work/target/release/libspdk_mirror.so
cfi=/work/src/spdk/channel.rs
cfn=spdk_mirror::spdk::channel::child_done
calls=2 50
12 900
+2 25
ob=/work/target/release/libspdk_mirror.so
fl=/work/src/spdk/channel.rs
fn=spdk_mirror::spdk::channel::child_done
50 600
fi=/work/src/engine/direct_write.rs
120 300
ob=/usr/local/lib/libspdk_bdev_raid.so.8.0
fl=/opt/spdk-src/module/bdev/raid/raid1.c
fn=raid1_submit_rw_request
7 150

totals: 1175
"""


class SelfCost(unittest.TestCase):
    def test_each_object_gets_its_own_cost_and_a_call_is_not_counted_in_its_caller(self):
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / "x.callgrind"
            p.write_text(SAMPLE)
            total, objects = self_cost_by_object(p)
        self.assertEqual(total, 1175)
        self.assertEqual(objects["/usr/local/lib/libspdk_bdev.so.20.0"], 125)
        self.assertEqual(objects["/work/target/release/libspdk_mirror.so"], 900)
        self.assertEqual(objects["/usr/local/lib/libspdk_bdev_raid.so.8.0"], 150)
        self.assertEqual(sum(objects.values()), total)


class PerIo(unittest.TestCase):
    def test_the_difference_of_two_runs_over_the_difference_of_their_ios(self):
        lib = "libspdk_mirror.so"
        short = (1000, 50_000, Counter({f"/x/{lib}": 10_000, "/y/libspdk_bdev.so.20.0": 20_000,
                                        "/y/libspdk_bdev_raid.so.8.0": 0}))
        long = (3000, 90_000, Counter({f"/x/{lib}": 14_000, "/y/libspdk_bdev.so.20.0": 36_000,
                                       "/y/libspdk_bdev_raid.so.8.0": 0}))
        got = per_io(short, long, lib)
        self.assertEqual(got["total"], 20.0)
        self.assertEqual(got["module"], 2.0)
        # `libspdk_bdev.so` must not also count `libspdk_bdev_raid.so`, nor the other way.
        self.assertEqual(got["bdev layer"], 8.0)
        self.assertEqual(got["SPDK raid"], 0.0)

    def test_a_long_run_with_no_more_ios_is_an_error_not_a_division(self):
        c = Counter()
        with self.assertRaises(RuntimeError):
            per_io((10, 5, c), (10, 9, c), "libspdk_mirror.so")


if __name__ == "__main__":
    unittest.main()
