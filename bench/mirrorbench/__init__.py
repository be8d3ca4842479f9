"""The benchmark of the `mirror` bdev module against SPDK's own raid1 (and raid0 over raid1 for
RAID10), and the pool-pressure sweep, as a package. Python 3.11 standard library only; it builds
nothing. See bench/README.md.

    systems    what is measured: workloads, bdev stacks (JSON configs), the rows of the matrix
    spdk_apps  finding bdevperf and the module; machine, SPDK and git info recorded with a run
    bdevperf   running bdevperf, and the one parser of its output
    cpu        CPU accounting of a run's I/O phase
    runner     the benchmark's command line: the run matrix, results files, --replot
    report     medians, ratios, the text table and the markdown report
    svg        the IOPS bar chart
    pressure   the pool-pressure sweep

The entry points are bench/bench.py (runner.main) and bench/pressure.py (pressure.main), or
`python3 -m mirrorbench` from bench/ for the benchmark.
"""
