#!/usr/bin/env python3
"""A randomized sweep, by hand (not part of `cargo test`): a mirror served over NVMe/TCP by a
stock `nvmf_tgt` with the module preloaded, bdevperf `verify` attached over NVMe/TCP as the
host, and one random leg operation or fault while it runs.

Each run picks, from its seed: one or two cores (two: the target and the host on both, the host
with one job per core, so the mirror serves two channels); block size 512 or 4096; raid1 over 2-3
legs or raid10 n/f/o with 2-3 copies over up to 5 legs and a 4-128 KiB chunk; each leg a 64 MiB
malloc bdev, plain or under `bdev_error` or `bdev_delay`; pool size, max_parents, bitmap region,
superblock on or off, rebuild cap, read policy; host queue depth 1-128 and I/O size. The
operation, 0.5-4 s into an 8 s verify: none, a replace, remove then add, grow, remove then
shrink, a check, a hot remove, a leg failing every write (or read) from then on, a failing leg
removed and a spare added. Verdict `ok` when the host's verify saw no failed I/O, every
background process ended, the mirror is online or degraded, and `bdev_mirror_check` finds no
mismatched block, nor an unreadable one unless a leg was set to fail every read
(`ok-nocheck`: fewer than two in-sync copies left to compare). A refused operation is recorded
with its error.

    python3 tests/sweeps/nvmf_chaos.py --first 100 --runs 40 [--lib target/release/libspdk_mirror.so]

needs `nvmf_tgt` and `bdevperf` on PATH and `cargo build --release` first; prints one JSON line
per run. Leaves nothing running (every app it starts is killed at the end of its run).
"""

import argparse, json, os, random, signal, socket, subprocess, sys, tempfile, threading, time


class Rpc:
    def __init__(self, path):
        self.path = path
        self.id = 0

    def call(self, method, params=None, timeout=120):
        self.id += 1
        req = {"jsonrpc": "2.0", "id": self.id, "method": method}
        if params is not None:
            req["params"] = params
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(timeout)
        s.connect(self.path)
        s.sendall(json.dumps(req).encode())
        buf = b""
        dec = json.JSONDecoder()
        while True:
            d = s.recv(1 << 20)
            if not d:
                raise RuntimeError("closed")
            buf += d
            try:
                obj, _ = dec.raw_decode(buf.decode())
                break
            except ValueError:
                continue
        s.close()
        if "error" in obj:
            raise RpcError(method, obj["error"])
        return obj.get("result")


class RpcError(Exception):
    def __init__(self, m, e):
        super().__init__(f"{m}: {e}")
        self.err = e


def wait_sock(path, t=30):
    end = time.time() + t
    while time.time() < end:
        if os.path.exists(path):
            try:
                Rpc(path).call("spdk_get_version", timeout=2)
                return True
            except Exception:
                pass
        time.sleep(0.1)
    return False


LIB = D = None
LEG_OPS = False


def log(*a):
    print(*a, flush=True)


def run(seed):
    rnd = random.Random(seed)
    tsock, psock = f"{D}/t{seed}.sock", f"{D}/p{seed}.sock"
    for s in (tsock, psock):
        if os.path.exists(s):
            os.unlink(s)
    two = rnd.random() < 0.4
    tmask = "0x3" if two else "0x1"
    env = dict(os.environ, LD_PRELOAD=LIB)
    tlog = open(f"{D}/t{seed}.log", "w")
    tgt = subprocess.Popen(
        [
            "nvmf_tgt",
            "--no-huge",
            "-s",
            "2048",
            "--no-pci",
            "--disable-cpumask-locks",
            "-m",
            tmask,
            "-r",
            tsock,
        ],
        stdout=tlog,
        stderr=subprocess.STDOUT,
        env=env,
    )
    perf = None
    try:
        if not wait_sock(tsock):
            return "TGT_NOSTART", {}
        t = Rpc(tsock)
        bs = rnd.choice([512, 4096])
        level = "raid1" if LEG_OPS else rnd.choice(["raid1", "raid1", "raid10"])
        if level == "raid1":
            nlegs = rnd.choice([3] if LEG_OPS else [2, 2, 3])
            layout = None
            copies = nlegs
        else:
            layout = rnd.choice(["n2", "f2", "o2", "n3", "o3", "f3"])
            copies = int(layout[1])
            nlegs = rnd.randint(copies, copies + 2)
            if nlegs > 5:
                nlegs = 5
        chunk = rnd.choice([4, 8, 16, 64, 128]) if level == "raid10" else None
        blocks = (64 << 20) // bs
        names = []
        wrap = {}
        for i in range(nlegs + 2):
            m = f"m{i}"
            t.call("bdev_malloc_create", {"name": m, "num_blocks": blocks, "block_size": bs})
            kind = rnd.choice(["plain", "plain", "error", "delay"] + (["error"] * 3 if LEG_OPS else []))
            if kind == "error":
                t.call("bdev_error_create", {"base_name": m})
                n = f"EE_{m}"
            elif kind == "delay":
                n = f"d{i}"
                t.call(
                    "bdev_delay_create",
                    {
                        "base_bdev_name": m,
                        "name": n,
                        "avg_read_latency": 50,
                        "p99_read_latency": 200,
                        "avg_write_latency": 50,
                        "p99_write_latency": 200,
                    },
                )
            else:
                n = m
            wrap[n] = (m, kind)
            names.append(n)
        legs, spares = names[:nlegs], names[nlegs:]
        params = {"name": "mir", "level": level, "base_bdevs": legs}
        if layout:
            params["layout"] = layout
        if chunk:
            params["chunk_kb"] = chunk
        if rnd.random() < 0.5:
            params["pool_size"] = rnd.choice([1, 2, 4, 16, 64, 256])
        if rnd.random() < 0.3:
            params["max_parents"] = rnd.choice([1, 4, 32, 256])
        if rnd.random() < 0.25:
            params["superblock"] = False
        elif rnd.random() < 0.5:
            params["bitmap_region_kb"] = rnd.choice([64, 256, 1024])
        params["rebuild_max_mb_per_s"] = rnd.choice([0, 8, 32, 200])
        if rnd.random() < 0.3:
            params["read_policy"] = rnd.choice(["round_robin", "least_outstanding"])
        t.call("bdev_mirror_create", params)
        port = 30000 + seed % 5000
        nqn = "nqn.2026-12.io.test:m"
        t.call("nvmf_create_transport", {"trtype": "TCP"})
        t.call("nvmf_create_subsystem", {"nqn": nqn, "allow_any_host": True, "serial_number": "S1"})
        t.call("nvmf_subsystem_add_ns", {"nqn": nqn, "namespace": {"bdev_name": "mir"}})
        t.call(
            "nvmf_subsystem_add_listener",
            {
                "nqn": nqn,
                "listen_address": {
                    "trtype": "TCP",
                    "adrfam": "IPv4",
                    "traddr": "127.0.0.1",
                    "trsvcid": str(port),
                },
            },
        )
        cfg = {
            "subsystems": [
                {
                    "subsystem": "bdev",
                    "config": [
                        {
                            "method": "bdev_nvme_attach_controller",
                            "params": {
                                "name": "nv",
                                "trtype": "tcp",
                                "adrfam": "ipv4",
                                "traddr": "127.0.0.1",
                                "trsvcid": str(port),
                                "subnqn": nqn,
                            },
                        }
                    ],
                }
            ]
        }
        json.dump(cfg, open(f"{D}/c{seed}.json", "w"))
        qd = rnd.choice([1, 4, 16, 32, 64, 128])
        unit = rnd.choice([1, 2, 8, 32]) * 4096 if rnd.random() < 0.8 else bs
        if unit < bs:
            unit = bs
        secs = 8
        pmask = "0x3" if two else "0x2"
        plog = open(f"{D}/p{seed}.log", "w")
        perf = subprocess.Popen(
            [
                "bdevperf",
                "--no-huge",
                "-s",
                "1024",
                "--no-pci",
                "--disable-cpumask-locks",
                "-m",
                pmask,
                "-r",
                psock,
                "-z",
                "-c",
                f"{D}/c{seed}.json",
            ]
            + (["-C"] if two else [])
            + ["-q", str(qd), "-o", str(unit), "-w", "verify", "-t", str(secs)],
            stdout=plog,
            stderr=subprocess.STDOUT,
        )
        if not wait_sock(psock):
            return "PERF_NOSTART", {}
        res = {}

        def go():
            try:
                res["r"] = Rpc(psock).call("perform_tests", timeout=120)
            except Exception as e:
                res["e"] = str(e)

        th = threading.Thread(target=go)
        th.start()
        time.sleep(rnd.uniform(0.5, 4))
        action = (
            rnd.choice(["shrink", "fail_then_remove_add"])
            if LEG_OPS
            else rnd.choice(
                [
                    "none",
                    "replace",
                    "remove_add",
                    "grow",
                    "shrink",
                    "check",
                    "hotremove",
                    "fail_write",
                    "fail_read",
                    "policy",
                    "fail_then_remove_add",
                ]
            )
        )
        desc = dict(
            seed=seed,
            two=two,
            bs=bs,
            level=level,
            layout=layout,
            chunk=chunk,
            legs=[(n, wrap[n][1]) for n in legs],
            params={k: v for k, v in params.items() if k not in ("name", "level", "base_bdevs")},
            qd=qd,
            unit=unit,
            action=action,
        )
        err_legs = [n for n in legs if wrap[n][1] == "error"]
        try:
            if action == "replace":
                t.call(
                    "bdev_mirror_replace_base_bdev",
                    {"base_bdev": rnd.choice(legs), "new_base_bdev": spares[0]},
                )
            elif action == "remove_add":
                l = rnd.choice(legs)
                t.call("bdev_mirror_remove_base_bdev", {"base_bdev": l})
                time.sleep(0.5)
                t.call("bdev_mirror_add_base_bdev", {"name": "mir", "base_bdev": rnd.choice([l, spares[0]])})
            elif action == "grow":
                t.call(
                    "bdev_mirror_set_num_legs",
                    {"name": "mir", "num_legs": nlegs + 1, "base_bdevs": [spares[0]]},
                )
            elif action == "shrink":
                l = rnd.choice(legs)
                t.call("bdev_mirror_remove_base_bdev", {"base_bdev": l})
                time.sleep(0.3)
                t.call("bdev_mirror_set_num_legs", {"name": "mir", "num_legs": nlegs - 1})
                desc["removed"] = l
            elif action == "check":
                desc["check_during"] = t.call("bdev_mirror_check", {"name": "mir"})
            elif action == "hotremove":
                l = rnd.choice(legs)
                t.call("bdev_malloc_delete", {"name": wrap[l][0]})
                desc["removed"] = l
            elif action in ("fail_write", "fail_read", "fail_then_remove_add") and err_legs:
                l = rnd.choice(err_legs)
                t.call(
                    "bdev_error_inject_error",
                    {
                        "name": l,
                        "io_type": "write" if action != "fail_read" else "read",
                        "error_type": "failure",
                        "num": 1000000,
                    },
                )
                desc["failed"] = l
                if action == "fail_then_remove_add":
                    time.sleep(0.5)
                    t.call("bdev_mirror_remove_base_bdev", {"base_bdev": l})
                    time.sleep(0.2)
                    t.call("bdev_mirror_add_base_bdev", {"name": "mir", "base_bdev": spares[0]})
            elif action == "policy":
                t.call(
                    "bdev_mirror_set_read_policy",
                    {"name": "mir", "read_policy": "preferred", "preferred_leg": rnd.randrange(nlegs)},
                )
        except RpcError as e:
            desc["action_refused"] = str(e.err)[:200]
        th.join(150)
        if th.is_alive():
            return "HANG", desc
        if "e" in res:
            return "PERF_ERR:" + res["e"][:200], desc
        r = res["r"]
        jobs = r["results"]
        desc["iops"] = [int(j.get("iops", 0)) for j in jobs]
        desc["io_failed"] = [j.get("io_failed") for j in jobs]
        if any(j.get("io_failed", 0) != 0 or j.get("status") != "finished" for j in jobs):
            return "HOST_ERR", desc
        desc["channels"] = t.call("bdev_mirror_get_bdevs", {"name": "mir"})[0].get("io_channels")
        # Wait for processes to end, then check.
        end = time.time() + 120
        m = None
        while time.time() < end:
            m = t.call("bdev_mirror_get_bdevs", {"name": "mir"})[0]
            if "process" not in m:
                break
            time.sleep(0.5)
        desc["state"] = m.get("state")
        desc["process"] = m.get("process")
        desc["last"] = m.get("last_process")
        desc["legstates"] = [l.get("state") for l in m.get("legs", [])]
        if "process" in m:
            return "NOSETTLE", desc
        if m.get("state") not in ("online", "degraded"):
            return "STATE", desc
        try:
            c = t.call("bdev_mirror_check", {"name": "mir"}, timeout=150)
        except RpcError as e:
            desc["check_err"] = str(e.err)[:200]
            return ("ok-nocheck" if "fewer than two" in str(e.err) else "CHECK_REFUSED"), desc
        desc["check"] = c
        cd = desc.get("check_during") or {}
        if (
            c.get("mismatch_blocks")
            or (c.get("unreadable_blocks") and action != "fail_read")
            or cd.get("mismatch_blocks")
        ):
            return "MISMATCH", desc
        return "ok", desc
    finally:
        for p in (perf, tgt):
            if p and p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait()


def main():
    global LIB, D, LEG_OPS
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--first", type=int, default=100, help="seed of the first run")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument(
        "--lib",
        default=os.path.join(os.path.dirname(__file__), "..", "..", "target", "release", "libspdk_mirror.so"),
    )
    ap.add_argument("--dir", help="where the apps' logs and sockets go (default: a new temporary directory)")
    ap.add_argument(
        "--leg-ops",
        action="store_true",
        help="only raid1 over 3 legs, mostly bdev_error legs, and only remove-then-shrink or fail-remove-add",
    )
    a = ap.parse_args()
    LIB, LEG_OPS = os.path.abspath(a.lib), a.leg_ops
    if not os.path.exists(LIB):
        sys.exit(f"{LIB}: no such module library (cargo build --release with SPDK installed)")
    D = a.dir or tempfile.mkdtemp(prefix="nvmf_chaos.")
    os.makedirs(D, exist_ok=True)
    log(f"# logs in {D}")
    for s in range(a.first, a.first + a.runs):
        v, d = run(s)
        log(v, json.dumps(d, default=str))


if __name__ == "__main__":
    main()
