#!/usr/bin/env python3
"""Instructions per I/O under callgrind (bench/mirrorbench/instructions.py): the mirror and SPDK's
own RAID side by side. This file keeps the documented command line:

    cargo build --release && python3 bench/instructions.py [--short 1] [--long 3] [--only TEXT]
"""

import sys

from mirrorbench.instructions import main  # bench/ is sys.path[0] when this file is run

if __name__ == "__main__":
    sys.exit(main())
