#!/usr/bin/env python3
"""The pressure sweep (bench/mirrorbench/pressure.py): the mirror and SPDK's raid1 with SPDK's
`spdk_bdev_io` pool starved. This file keeps the documented command line:

    cargo build --release && python3 bench/pressure.py [--time 3] [--pools 16,32,64,128,256] [--caches 1,16]
"""

import sys

from mirrorbench.pressure import main  # bench/ is sys.path[0] when this file is run

if __name__ == "__main__":
    sys.exit(main())
