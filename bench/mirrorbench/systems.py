"""What is measured: the workloads, the bdev stacks (SPDK JSON bdev configs) and the rows of the
run matrix, each row one workload on one base-bdev config at one core count."""

from __future__ import annotations

from dataclasses import dataclass, field

BLOCK = 4096
NULL_BLOCKS = (1 << 30) // BLOCK  # 1 GiB null bdevs
MALLOC_BLOCKS = (64 << 20) // BLOCK  # 64 MiB malloc bdevs
MIRROR_OPTS = {"pool_size": 256, "max_parents": 1024}
RAID10_CHUNK_KB = 64


@dataclass(frozen=True)
class Workload:
    label: str
    rw: str  # bdevperf -w
    io_size: int  # -o
    qd: int  # -q

    @property
    def small(self) -> bool:
        return self.io_size <= 4096


RANDWRITE_4K = Workload("4K randwrite QD128", "randwrite", 4096, 128)
RANDREAD_4K = Workload("4K randread QD128", "randread", 4096, 128)
SEQWRITE_128K = Workload("128K seq write QD32", "write", 128 * 1024, 32)


@dataclass(frozen=True)
class System:
    """One bdev stack to measure: a label, the bdev subsystem config and the bdev to drive."""

    label: str
    role: str  # "mirror", "reference" or "ceiling"
    config: tuple  # tuple of JSON-able dicts (frozen dataclass: keep it hashable-ish)
    target: str


def null_bdev(name: str) -> dict:
    return {"method": "bdev_null_create",
            "params": {"name": name, "num_blocks": NULL_BLOCKS, "block_size": BLOCK}}


def malloc_bdev(name: str) -> dict:
    return {"method": "bdev_malloc_create",
            "params": {"name": name, "num_blocks": MALLOC_BLOCKS, "block_size": BLOCK}}


BACKENDS = {
    "null": (null_bdev, "null 1 GiB"),
    "malloc": (malloc_bdev, "malloc 64 MiB"),
}


NO_BITMAP = "mirror raid1, no bitmap"


def mirror_raid1(backend: str, bitmap: bool = True) -> System:
    """The mirror as users create it (superblock and write-intent bitmap on the legs), or with
    `superblock: false` (data only), to measure what the bitmap costs."""
    make, _ = BACKENDS[backend]
    legs = [f"{backend}0", f"{backend}1"]
    cfg = [make(n) for n in legs] + [{
        "method": "bdev_mirror_create",
        "params": {"name": "m", "level": "raid1", "base_bdevs": legs, "superblock": bitmap,
                   **MIRROR_OPTS}}]
    return System("mirror raid1" if bitmap else NO_BITMAP, "mirror", tuple(cfg), "m")


def spdk_raid1(backend: str) -> System:
    make, _ = BACKENDS[backend]
    legs = [f"{backend}0", f"{backend}1"]
    cfg = [make(n) for n in legs] + [{
        "method": "bdev_raid_create",
        "params": {"name": "r", "raid_level": "raid1", "base_bdevs": legs}}]
    return System("SPDK raid1", "reference", tuple(cfg), "r")


def single(backend: str) -> System:
    make, _ = BACKENDS[backend]
    return System(f"single {backend} (ceiling)", "ceiling", (make(f"{backend}0"),), f"{backend}0")


def mirror_raid10() -> System:
    legs = [f"null{i}" for i in range(4)]
    cfg = [null_bdev(n) for n in legs] + [{
        "method": "bdev_mirror_create",
        "params": {"name": "m", "level": "raid10", "layout": "n2", "chunk_kb": RAID10_CHUNK_KB,
                   "base_bdevs": legs, **MIRROR_OPTS}}]
    return System("mirror raid10 n2", "mirror", tuple(cfg), "m")


def spdk_raid0_over_raid1() -> System:
    legs = [f"null{i}" for i in range(4)]
    cfg = [null_bdev(n) for n in legs] + [
        {"method": "bdev_raid_create",
         "params": {"name": "r1a", "raid_level": "raid1", "base_bdevs": legs[0:2]}},
        {"method": "bdev_raid_create",
         "params": {"name": "r1b", "raid_level": "raid1", "base_bdevs": legs[2:4]}},
        {"method": "bdev_raid_create",
         "params": {"name": "r0", "raid_level": "raid0", "strip_size_kb": RAID10_CHUNK_KB,
                    "base_bdevs": ["r1a", "r1b"]}},
    ]
    return System("SPDK raid0 over 2x raid1", "reference", tuple(cfg), "r0")


@dataclass
class Row:
    config: str  # e.g. "2x null 1 GiB"
    backend: str
    workload: Workload
    cores: int
    systems: list[System]
    samples: dict[str, list[dict]] = field(default_factory=dict)  # system label -> runs

    @property
    def key(self) -> str:
        return f"{self.config} | {self.workload.label} | {self.cores}c"

    @property
    def reference(self) -> System:
        return next(s for s in self.systems if s.role == "reference")


def build_rows(quick: bool) -> list[Row]:
    rows: list[Row] = []
    backends = ["null"] if quick else ["null", "malloc"]
    core_counts = [1] if quick else [1, 2]
    for backend in backends:
        for cores in core_counts:
            for wl in (RANDWRITE_4K, RANDREAD_4K, SEQWRITE_128K):
                systems = [mirror_raid1(backend), spdk_raid1(backend)]
                if wl.rw != "randread":
                    systems.append(mirror_raid1(backend, bitmap=False))
                if wl.small:
                    systems.append(single(backend))
                rows.append(Row(f"2x {BACKENDS[backend][1]}", backend, wl, cores, systems))
    for wl in (RANDWRITE_4K, RANDREAD_4K):
        rows.append(Row("4x null 1 GiB, RAID10 64K chunk", "null", wl, 1,
                        [mirror_raid10(), spdk_raid0_over_raid1(), single("null")]))
    return rows


def cores_of(row: Row, core: int) -> list[int]:
    """The CPUs a row's bdevperf runs on: `core` for one-core rows (-m 0x1 by default), CPUs 0
    and 1 for two-core rows (-m 0x3)."""
    return [core] if row.cores == 1 else list(range(row.cores))

