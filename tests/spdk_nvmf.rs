//! NVMe-oF: a mirror served over NVMe/TCP on 127.0.0.1, and a mirror whose leg is a replica on
//! another SPDK process reached over NVMe/TCP. Initiators never see an error when a leg fails.

mod support;

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{bdev_subsystem, config_entry, malloc_bdev_config, BdevperfOpts, Target, TargetOpts};

const NQN: &str = "nqn.2026-11.io.spdk-mirror:test";

/// A loopback port no other test of this run uses.
fn port(offset: u16) -> u16 {
    20000 + (std::process::id() % 2000) as u16 * 4 + offset
}

/// Exports bdev `bdev` of `t` over NVMe/TCP on 127.0.0.1:`port`.
fn export(t: &Target, bdev: &str, port: u16) {
    t.rpc("nvmf_create_transport", json!({"trtype": "TCP"}))
        .expect("transport");
    t.rpc(
        "nvmf_create_subsystem",
        json!({"nqn": NQN, "allow_any_host": true, "serial_number": "MIRROR0001"}),
    )
    .expect("subsystem");
    t.rpc(
        "nvmf_subsystem_add_ns",
        json!({"nqn": NQN, "namespace": {"bdev_name": bdev}}),
    )
    .expect("namespace");
    t.rpc(
        "nvmf_subsystem_add_listener",
        json!({"nqn": NQN, "listen_address": {"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": port.to_string()}}),
    )
    .expect("listener");
}

fn attach(name: &str, port: u16) -> Value {
    config_entry(
        "bdev_nvme_attach_controller",
        json!({"name": name, "trtype": "tcp", "adrfam": "ipv4", "traddr": "127.0.0.1",
               "trsvcid": port.to_string(), "subnqn": NQN}),
    )
}

/// Runs `perform_tests` in the background, waits `after`, runs `during`, and returns the
/// result of the run.
fn verify_while(t: &Target, after: Duration, during: impl FnOnce()) -> Value {
    thread::scope(|s| {
        let run = s.spawn(|| t.perform_tests(Value::Null, Duration::from_secs(90)));
        thread::sleep(after);
        during();
        run.join()
            .expect("perform_tests thread")
            .expect("perform_tests answers")
    })
}

fn assert_clean(r: &Value, what: &str) {
    let job = &r["results"][0];
    assert_eq!(job["status"], "finished", "{what}: {r}");
    assert_eq!(job["io_failed"], json!(0), "{what}: {r}");
    assert!(job["iops"].as_f64().unwrap_or(0.0) > 0.0, "{what}: {r}");
}

#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn a_mirror_served_over_nvme_tcp_survives_a_failed_leg() {
    let env = support::require_spdk();
    let perf = support::find_executable("spdk_nvme_perf").expect("spdk_nvme_perf is installed with SPDK");
    let tgt = Target::start(
        &env,
        TargetOpts {
            name: "nvmf_target",
            ..Default::default()
        },
    )
    .expect("target starts");
    for i in 0..3 {
        tgt.rpc(
            "bdev_malloc_create",
            json!({"name": format!("m{i}"), "num_blocks": 65536, "block_size": 512}),
        )
        .unwrap();
    }
    tgt.rpc(
        "bdev_mirror_create",
        json!({"name": "mir", "level": "raid1", "base_bdevs": ["m0", "m1", "m2"]}),
    )
    .unwrap();
    let p = port(0);
    export(&tgt, "mir", p);

    // spdk_nvme_perf over NVMe/TCP.
    let perf_core = support::lease_core();
    let out = Command::new(&perf)
        .args([
            "--no-huge",
            "-s",
            "1024",
            "-c",
            perf_core.mask(),
            "-q",
            "32",
            "-o",
            "4096",
            "-w",
            "randrw",
            "-M",
            "50",
            "-t",
            "2",
        ])
        .arg("-r")
        .arg(format!(
            "trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:{p} subnqn:{NQN}"
        ))
        .output()
        .expect("spdk_nvme_perf runs");
    drop(perf_core);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "spdk_nvme_perf: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let total = text
        .lines()
        .find(|l| l.trim_start().starts_with("Total"))
        .expect("a Total line");
    let iops: f64 = total
        .split(':')
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(iops > 0.0, "{text}");

    // bdevperf attached over NVMe/TCP, verifying, while a leg fails on the target.
    let initiator = support::bdevperf_server(
        &env,
        BdevperfOpts {
            name: "nvmf_initiator",
            config: bdev_subsystem(vec![attach("nv", p)]),
            time_s: 6,
            preload: false,
            ..Default::default()
        },
    )
    .expect("initiator starts");
    let r = verify_while(&initiator, Duration::from_secs(2), || {
        // The leg's device goes away (hot-remove) under load.
        tgt.rpc("bdev_malloc_delete", json!({"name": "m1"}))
            .expect("leg removed");
    });
    assert_clean(&r, "verify over NVMe/TCP while a leg failed");
    let m = tgt.mirror_info("mir");
    assert_eq!(m["state"], "degraded", "{m}");
    assert_eq!(m["legs"][1]["state"], "removed", "{m}");
}

#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn a_replica_on_another_node_is_lost_and_recovered() {
    let env = support::require_spdk();
    let p = port(1);
    let start_remote = || {
        let r = Target::start(
            &env,
            TargetOpts {
                name: "replica_node",
                preload: false,
                ..Default::default()
            },
        )
        .expect("remote target starts");
        r.rpc(
            "bdev_malloc_create",
            json!({"name": "rm", "num_blocks": 65536, "block_size": 512}),
        )
        .unwrap();
        export(&r, "rm", p);
        r
    };
    let remote = start_remote();

    // The mirror lives in bdevperf: a local leg and a leg on the remote node.
    let host = support::bdevperf_server(
        &env,
        BdevperfOpts {
            name: "replica_host",
            config: bdev_subsystem(vec![
                malloc_bdev_config("local", 65536, 512),
                attach("rep", p),
                config_entry(
                    "bdev_mirror_create",
                    json!({"name": "mir", "level": "raid1", "base_bdevs": ["local", "repn1"]}),
                ),
            ]),
            queue_depth: 16,
            time_s: 6,
            ..Default::default()
        },
    )
    .expect("host starts");
    assert_eq!(host.mirror_info("mir")["state"], "online");

    let r = verify_while(&host, Duration::from_secs(2), || remote.kill9());
    assert_clean(&r, "verify while the replica node died");
    let m = host.mirror_info("mir");
    assert_eq!(m["state"], "degraded", "{m}");
    assert_ne!(m["legs"][1]["state"], "online", "{m}");
    drop(remote);

    // The node comes back (empty); its namespace is attached again and rebuilt as the leg.
    let remote = start_remote();
    host.rpc("bdev_mirror_remove_base_bdev", json!({"base_bdev": "repn1"}))
        .or_else(|e| {
            // A hot-removed NVMe bdev may already have left the mirror by itself.
            if e.code == -19 {
                Ok(Value::Null)
            } else {
                Err(e)
            }
        })
        .expect("failed replica leaves the mirror");
    // The old controller still holds the address: detach it, attach the node afresh.
    host.rpc("bdev_nvme_detach_controller", json!({"name": "rep"}))
        .expect("old controller detached");
    let params = attach("rep2", p)["params"].clone();
    host.rpc("bdev_nvme_attach_controller", params)
        .expect("replica attached again");
    host.rpc(
        "bdev_mirror_add_base_bdev",
        json!({"name": "mir", "base_bdev": "rep2n1"}),
    )
    .expect("re-added");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let m = host.mirror_info("mir");
        if m["state"] == "online" && m.get("process").is_none() {
            break;
        }
        assert!(Instant::now() < deadline, "rebuild did not finish: {m}");
        thread::sleep(Duration::from_millis(200));
    }
    let r = host
        .perform_tests(Value::Null, Duration::from_secs(60))
        .expect("verify after recovery");
    assert_clean(&r, "verify after the replica was recovered");
    drop(remote);
}
