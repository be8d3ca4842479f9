#!/usr/bin/env python3
"""Benchmark the `mirror` bdev module against SPDK's own raid1 (and raid0-over-raid1 for RAID10).

Runs SPDK's stock `bdevperf` once per measurement with a JSON config, the module injected with
LD_PRELOAD, and reports IOPS, MiB/s, mean and p99 latency, and the ratio of each system to the
SPDK reference measured in the same run. Writes bench/results/<stamp>.{md,svg,json}.

Python 3.11 standard library only. Builds nothing: run `cargo build --release` first.
This file keeps the documented command line; the code is the package bench/mirrorbench/.
See bench/README.md.
"""

import sys

from mirrorbench.runner import main  # bench/ is sys.path[0] when this file is run

if __name__ == "__main__":
    sys.exit(main())
