"""`python3 -m mirrorbench` (from bench/): the benchmark, as bench/bench.py runs it."""

import sys

from .runner import main

sys.exit(main())
