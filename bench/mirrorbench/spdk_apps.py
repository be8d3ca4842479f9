"""Finding SPDK's apps (as the tests do) and the module library, and what is recorded about the
machine, SPDK and the repo with every run."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import platform
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def spdk_app_dirs(spdk_dir: str | None, pkg_prefix: str | None, path: str | None) -> list[Path]:
    """Where SPDK's apps are looked for, in order (as the tests do, tests/support/mod.rs):
    SPDK_DIR as a built source tree (build/bin, build/examples) or an install prefix (bin), the
    bin of pkg-config's spdk_bdev prefix, then PATH."""
    dirs = []
    if spdk_dir:
        d = Path(spdk_dir)
        dirs += [d / "build" / "bin", d / "build" / "examples", d / "bin"]
    if pkg_prefix:
        dirs.append(Path(pkg_prefix) / "bin")
    dirs += [Path(d) for d in (path or "").split(os.pathsep) if d]
    return dirs


def spdk_pkg_prefix(spdk_dir: str | None) -> str | None:
    """pkg-config spdk_bdev's prefix variable, else the parent of its first -L directory (SPDK's
    .pc files define no prefix: an install says -L<prefix>/lib, a built source tree
    -L<tree>/build/lib). Searched as the build does: SPDK_DIR's pkgconfig directory first."""
    pc_path = [p for p in os.environ.get("PKG_CONFIG_PATH", "").split(os.pathsep) if p]
    for sub in ("build/lib/pkgconfig", "lib/pkgconfig", "lib64/pkgconfig"):
        if spdk_dir and (Path(spdk_dir) / sub / "spdk_bdev.pc").is_file():
            pc_path.insert(0, str(Path(spdk_dir) / sub))
            break
    env = dict(os.environ, PKG_CONFIG_PATH=os.pathsep.join(pc_path))

    def ask(arg: str) -> str:
        try:
            out = subprocess.run(["pkg-config", arg, "spdk_bdev"], capture_output=True, text=True,
                                 timeout=20, stdin=subprocess.DEVNULL, env=env)
        except (OSError, subprocess.SubprocessError):
            return ""
        return out.stdout.strip() if out.returncode == 0 else ""

    var = ask("--variable=prefix")
    if var:
        return var
    libs = ask("--libs-only-L").split()
    for arg in libs:
        if arg.startswith("-L") and len(arg) > 2:
            parent = str(Path(arg[2:]).parent)
            return parent if parent != "/" else None
    return None


def how_to_get(name: str) -> str:
    if name == "bdevperf":
        return ("not installed by SPDK's make install: set SPDK_DIR to the built SPDK source tree "
                "(build/examples/bdevperf) or copy it onto PATH")
    return (f"SPDK builds it into build/bin/{name} and make install copies it to <prefix>/bin: "
            "set SPDK_DIR to the built SPDK source tree or to the install prefix, or put it on PATH")


def find_spdk_app(name: str) -> tuple[Path | None, str]:
    """The first executable `name` in spdk_app_dirs(), or None and a message naming it, where it
    was looked for and how to get it."""
    spdk_dir = os.environ.get("SPDK_DIR") or None
    pkg_prefix = spdk_pkg_prefix(spdk_dir)
    for d in spdk_app_dirs(spdk_dir, pkg_prefix, os.environ.get("PATH")):
        p = d / name
        if p.is_file() and os.access(p, os.X_OK):
            return p, ""
    searched = [f"SPDK_DIR={spdk_dir} (build/bin, build/examples, bin)" if spdk_dir
                else "no SPDK_DIR",
                f"pkg-config prefix {pkg_prefix}/bin" if pkg_prefix else "no pkg-config prefix",
                "PATH"]
    return None, f"`{name}` not found (searched {', '.join(searched)}): {how_to_get(name)}"


def find_bdevperf(explicit: str | None) -> tuple[Path | None, str]:
    if explicit:
        p = Path(explicit)
        if p.is_file() and os.access(p, os.X_OK):
            return p, ""
        return None, f"SPDK's bdevperf was not found at {explicit} (--bdevperf)"
    return find_spdk_app("bdevperf")


def find_apps_or_refuse(prog: str, explicit_bdevperf: str | None, lib: Path) -> Path | None:
    """SPDK's bdevperf (found as `find_bdevperf` finds it), or None after saying on stderr what
    keeps `prog` from running: no bdevperf, no module at `lib` (both, when both are missing)."""
    bdevperf, why = find_bdevperf(explicit_bdevperf)
    missing = []
    if bdevperf is None:
        missing.append(why + ("" if explicit_bdevperf else " (or pass --bdevperf PATH)"))
    if not lib.is_file():
        missing.append(f"the mirror module {lib} does not exist "
                       "(run `cargo build --release` in the repo, or pass --lib PATH)")
    for m in missing:
        print(f"{prog}: refusing to run: {m}", file=sys.stderr)
    return None if missing else bdevperf


def stale_lib_warning(lib: Path) -> str | None:
    """Warns if any Rust source under src/ or spdk/ is newer than the module library."""
    try:
        lib_mtime = lib.stat().st_mtime
    except OSError:
        return None
    newest = None
    for top in (REPO / "src", REPO / "spdk"):
        for p in top.rglob("*"):
            if p.suffix in (".rs", ".c", ".h") and p.is_file():
                m = p.stat().st_mtime
                if m > lib_mtime and (newest is None or m > newest[0]):
                    newest = (m, p)
    if newest:
        return (f"warning: {newest[1].relative_to(REPO)} is newer than {lib}; "
                "the numbers may not be of the current source (run `cargo build --release`)")
    return None


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def run_text(cmd: list[str], timeout: float = 20) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                             stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    text = (out.stdout or "").strip() or (out.stderr or "").strip()
    return text if out.returncode == 0 and text else None


def machine_info(bdevperf: Path, lib: Path) -> dict:
    cpu = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    spdk = run_text([str(bdevperf), "--version"])
    if spdk:
        spdk = spdk.splitlines()[-1].strip()
    else:
        pc = run_text(["pkg-config", "--modversion", "spdk_bdev"])
        spdk = f"pkg-config spdk_bdev {pc}" if pc else "unknown"
    commit = run_text(["git", "-C", str(REPO), "rev-parse", "HEAD"]) or "unknown"
    dirty = run_text(["git", "-C", str(REPO), "diff", "--name-only", "HEAD"])
    try:
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "unknown"
    return {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "uname": run_text(["uname", "-a"]) or " ".join(platform.uname()),
        "cpu_model": cpu or "unknown",
        "cpus_online": os.cpu_count(),
        "load_average_at_start": load,
        "spdk_version": spdk,
        "git_commit": commit + (" + uncommitted changes to " + ", ".join(
            dirty.splitlines()[:8]) if dirty else ""),
        "module_lib": str(lib),
        "bdevperf": str(bdevperf),
        "python": platform.python_version(),
    }
