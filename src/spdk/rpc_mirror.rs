//! The RPC methods on whole mirrors: `bdev_mirror_create`, `_delete`, `_get_bdevs`,
//! `_set_options`, `_set_read_policy` and `_check`.

use std::ffi::CString;

use serde_json::{json, Value};
use spdk_sys as sys;

use super::create::{self, CreateSpec, PersistSpec};
use super::error::Fail;
use super::ffi::{errlog, noticelog};
use super::mirror::{self, MirrorOpts, DEFAULT_MAX_PARENTS, DEFAULT_POOL_SIZE};
use super::process::{self, Kind};
use super::rpc::{
    bad, bdev_exists, handle, handle_checked, mirror_named, no_mirror, not_a_waiting_leg, Params, Request,
};
use super::{deferred, examine, legs, rpc_wipe, stats, teardown};
use crate::engine::ReadPolicy;
use crate::placement::{no_such_leg, Geometry, GeometrySpec, Level, Raid10Layout, DEFAULT_CHUNK_KB, MAX_LEGS};
use crate::superblock::MetaLayout;

/// Default write-intent bitmap region (md's default for large arrays).
pub const DEFAULT_REGION_KB: u64 = 65536;

/// Superblocks hold names up to this long.
const SB_NAME_MAX: usize = 64;

/// Largest bandwidth cap accepted, MiB/s.
const MAX_RATE_MB: u64 = 1 << 30;

/// `read_policy` and `preferred_leg`, if given.
fn read_policy(p: &Params) -> Result<ReadPolicy, Fail> {
    let name = p.string("read_policy")?;
    let leg = p.uint("preferred_leg", 0, MAX_LEGS as u64 - 1)?.map(|l| l as u32);
    match (name, leg) {
        (None, None) => Ok(ReadPolicy::default()),
        (None, Some(_)) => Err(bad("preferred_leg", "only applies to read_policy preferred")),
        (Some(n), leg) => ReadPolicy::parse(&n, leg).map_err(|e| Fail::named(-libc::EINVAL, e)),
    }
}

/// Validates everything that does not need the base bdevs opened. `None`: valid as far as it
/// can be judged without legs, some of which are not registered yet, and `wait_for_legs`
/// asks to wait for them (`deferred`).
fn create_spec(p: &Params) -> Result<Option<CreateSpec>, Fail> {
    p.only(&[
        "name",
        "level",
        "layout",
        "chunk_kb",
        "base_bdevs",
        "uuid",
        "pool_size",
        "max_parents",
        "read_policy",
        "preferred_leg",
        "superblock",
        "bitmap_region_kb",
        "rebuild_max_mb_per_s",
        "leg_blocks",
        "wait_for_legs",
    ])?;
    let name = p.required_string("name")?;
    if name.len() > 200 {
        return Err(bad("name", "longer than 200 bytes"));
    }
    // Logs, RPC listings and the superblock print it: a newline or escape in it would forge
    // lines there.
    if name.chars().any(char::is_control) {
        return Err(bad("name", "contains a control character"));
    }
    let level = Level::parse(&p.required_string("level")?).map_err(|e| Fail::named(-libc::EINVAL, e))?;
    let layout = match (p.string("layout")?, level) {
        (None, _) => None,
        (Some(_), Level::Raid1) => return Err(bad("layout", "applies to raid10 only")),
        (Some(l), Level::Raid10) => Some(Raid10Layout::parse(&l).map_err(|e| Fail::named(-libc::EINVAL, e))?),
    };
    let chunk_kb = match (p.uint("chunk_kb", 1, 1 << 20)?, level) {
        (Some(_), Level::Raid1) => return Err(bad("chunk_kb", "applies to raid10 only")),
        (Some(c), Level::Raid10) => c,
        (None, _) => DEFAULT_CHUNK_KB,
    };
    // `null` marks a missing leg: its slot starts empty, to be filled by add_base_bdev.
    let base_bdevs = p.names_or_missing("base_bdevs")?;
    let present: Vec<&String> = base_bdevs.iter().flatten().collect();
    let uuid = match p.string("uuid")? {
        None => None,
        Some(s) => {
            let mut u = sys::spdk_uuid::default();
            let c = CString::new(s.clone()).map_err(|_| bad("uuid", "has a NUL"))?;
            // SAFETY: NUL-terminated input, output struct on our stack.
            if unsafe { sys::spdk_uuid_parse(&mut u, c.as_ptr()) } != 0 {
                return Err(bad("uuid", &format!("'{s}' is not a UUID")));
            }
            Some(u)
        }
    };
    let opts = MirrorOpts {
        pool_size: p.uint("pool_size", 1, 1 << 20)?.unwrap_or(DEFAULT_POOL_SIZE as u64) as u32,
        max_parents: p.uint("max_parents", 1, 1 << 16)?.unwrap_or(DEFAULT_MAX_PARENTS as u64) as u32,
    };
    let read_policy = read_policy(p)?;
    let superblock = p.boolean("superblock")?.unwrap_or(true);
    let region_kb = p.uint("bitmap_region_kb", 1, 1 << 30)?;
    if !superblock && region_kb.is_some() {
        return Err(bad(
            "bitmap_region_kb",
            "needs superblock: true (the bitmap lives on the legs)",
        ));
    }
    let region_kb = region_kb.unwrap_or(DEFAULT_REGION_KB) as u32;
    if present.len() < base_bdevs.len() {
        if superblock {
            // The superblocks would name no bdev for the slot; create it whole and remove it.
            return Err(bad("base_bdevs", "a missing leg (null) needs superblock: false"));
        }
        if present.is_empty() {
            return Err(bad("base_bdevs", "every leg is missing (null)"));
        }
    }
    let rebuild_max_mb = p.uint("rebuild_max_mb_per_s", 0, MAX_RATE_MB)?.unwrap_or(0);
    if superblock && name.len() > SB_NAME_MAX {
        return Err(bad(
            "name",
            &format!("longer than the {SB_NAME_MAX} bytes a superblock holds"),
        ));
    }
    if let ReadPolicy::Preferred(leg) = read_policy {
        if leg as usize >= base_bdevs.len() {
            return Err(bad("preferred_leg", &no_such_leg(leg, base_bdevs.len())));
        }
    }
    if let Some(u) = p.string("uuid")? {
        if bdev_exists(&u) {
            return Err(Fail::new(
                -libc::EEXIST,
                "uuid",
                format!("{u} is already used by another bdev"),
            ));
        }
    }
    if bdev_exists(&name) {
        return Err(Fail::new(
            -libc::EEXIST,
            "name",
            format!("a bdev named '{name}' already exists"),
        ));
    }
    if examine::waiting_named(&name) || deferred::named(&name) {
        return Err(Fail::new(
            -libc::EEXIST,
            "name",
            format!("a mirror named '{name}' waits for its legs (configuring): bdev_mirror_delete it first"),
        ));
    }
    // Legs not registered yet, to wait for: everything else is judged now.
    let wait = p.boolean("wait_for_legs")?.unwrap_or(false) && deferred::waits(&base_bdevs);
    for &b in &present {
        not_a_waiting_leg(b, "base_bdevs")?;
        if mirror::reaches(b, &name) {
            return Err(bad(
                "base_bdevs",
                &format!("'{b}' is the mirror '{name}' itself or is built on it"),
            ));
        }
        let Some(bdev) = mirror::bdev_by_name(b) else {
            if wait {
                continue;
            }
            return Err(Fail::new(-libc::ENODEV, "base_bdevs", format!("no bdev named '{b}'")));
        };
        // SAFETY: a registered bdev, read on the app thread where claims change.
        if unsafe { (*bdev).internal.claim_type } != sys::SPDK_BDEV_CLAIM_NONE {
            return Err(Fail::new(
                -libc::EBUSY,
                "base_bdevs",
                format!("'{b}' is already claimed"),
            ));
        }
        if let Some(msg) = mirror::superblock_hidden_by(b).filter(|_| superblock) {
            return Err(bad("base_bdevs", &msg));
        }
    }
    // The smallest leg decides; geometry errors name their field.
    let mut leg_blocks = u64::MAX;
    let mut block_size = None;
    for &b in &present {
        // (Checked above: only a leg waited for is not registered.)
        let Some(bdev) = mirror::bdev_by_name(b) else { continue };
        // Metadata first: an interleaved one's block size counts its bytes.
        if let Some(msg) = legs::unfit_metadata(bdev, b) {
            return Err(bad("base_bdevs", &msg));
        }
        // SAFETY: a registered bdev; queries only.
        let (bs, n) = unsafe { (sys::spdk_bdev_get_block_size(bdev), sys::spdk_bdev_get_num_blocks(bdev)) };
        match block_size {
            None => block_size = Some(bs),
            Some(first) if first != bs => {
                return Err(bad(
                    "base_bdevs",
                    &format!("block sizes differ ('{}' has {first}, '{b}' has {bs})", present[0]),
                ))
            }
            _ => {}
        }
        leg_blocks = leg_blocks.min(n);
    }
    let block_size = block_size.unwrap_or(512);
    let reserved = if superblock {
        MetaLayout::data_offset_blocks(block_size)
    } else {
        0
    };
    if !base_bdevs.is_empty() && leg_blocks != u64::MAX && leg_blocks <= reserved {
        return Err(bad(
            "base_bdevs",
            &format!("legs of {leg_blocks} blocks leave no room after the {reserved}-block superblock area"),
        ));
    }
    // What each leg holds data in: all the smallest offers, or less (mdadm's --size), which
    // save_config records so that a replay over other legs keeps the size and placement.
    let available = if base_bdevs.is_empty() {
        0
    } else if leg_blocks == u64::MAX {
        // No leg registered yet (a create that waits): a size any geometry takes, to judge
        // the rest by.
        1 << 30
    } else {
        leg_blocks - reserved
    };
    let wanted = p.uint("leg_blocks", 1, u64::MAX)?;
    if let Some(n) = wanted.filter(|&n| n > available && leg_blocks != u64::MAX) {
        return Err(bad(
            "leg_blocks",
            &format!("{n} blocks is more than the smallest leg offers ({available} after the metadata)"),
        ));
    }
    let geo = Geometry::new(&GeometrySpec {
        level,
        layout,
        legs: base_bdevs.len() as u32,
        chunk_bytes: Some(chunk_kb * 1024),
        block_size,
        leg_blocks: wanted.unwrap_or(available),
    })
    .map_err(|e| {
        // The legs are the base bdevs here (their count and, unless given, their size).
        let e = Fail::named(-libc::EINVAL, e);
        match &*e.field {
            "leg_blocks" if wanted.is_some() => e,
            "legs" | "leg_blocks" => e.in_field("base_bdevs"),
            _ => e,
        }
    })?;
    let given = (0u32..)
        .zip(&base_bdevs)
        .filter(|(_, b)| b.is_some())
        .fold(0, |m, (i, _)| m | 1 << i);
    if !geo.every_block_covered(given) {
        return Err(bad(
            "base_bdevs",
            "the legs missing (null) hold every copy of some blocks: the mirror would be offline",
        ));
    }
    if wait {
        return Ok(None);
    }
    let persist = if superblock {
        let layout =
            MetaLayout::new(block_size, geo.data_blocks(), region_kb).map_err(|e| Fail::named(-libc::EINVAL, e))?;
        Some(PersistSpec {
            region_kb,
            layout,
            found: None,
        })
    } else {
        None
    };
    Ok(Some(CreateSpec {
        name,
        geo,
        chunk_kb,
        uuid,
        base_bdevs,
        opts,
        read_policy,
        persist,
        rebuild_max_mb,
    }))
}

pub extern "C" fn rpc_create(request: *mut sys::spdk_jsonrpc_request, params: *const sys::spdk_json_val) {
    handle(request, params, |req, p| match create_spec(&p) {
        Err(e) => req.reply(Err(e)),
        Ok(Some(spec)) => create::create(spec, Box::new(move |r| req.reply(r.map(|m| json!(m.name()))))),
        Ok(None) => req.reply(Ok(json!(defer(p)))),
    })
}

/// Keeps a create whose legs are not all registered (`wait_for_legs`) for when they are;
/// its name.
fn defer(p: Params) -> String {
    let name = p.string("name").ok().flatten().unwrap_or_default();
    let legs = p.names_or_missing("base_bdevs").unwrap_or_default();
    let n = name.clone();
    deferred::defer(
        name.clone(),
        p.to_value(),
        legs,
        Box::new(move || create_when_ready(n, p)),
    );
    name
}

/// A create kept for its legs, now that they are registered.
fn create_when_ready(name: String, p: Params) {
    let refused = move |e: Fail| errlog!("mirror {name}: not created: {e}");
    match create_spec(&p) {
        Err(e) => refused(e),
        // A leg went away again meanwhile.
        Ok(None) => {
            defer(p);
        }
        Ok(Some(spec)) => create::create(
            spec,
            Box::new(move |r| {
                if let Err(e) = r {
                    refused(e)
                }
            }),
        ),
    }
}

pub extern "C" fn rpc_delete(request: *mut sys::spdk_jsonrpc_request, params: *const sys::spdk_json_val) {
    handle(request, params, |req, p| {
        let name = match p.only(&["name"]).and_then(|_| p.required_string("name")) {
            Ok(name) => name,
            Err(e) => return req.reply(Err(e)),
        };
        let Some(m) = mirror::find(&name) else {
            if deferred::withdraw(&name) {
                noticelog!("mirror {name}: deleted while its create waited for its legs");
                return req.reply(Ok(json!(true)));
            }
            return delete_pending(req, &name);
        };
        if m.deleting.load(std::sync::atomic::Ordering::Acquire) {
            return req.reply(Err(Fail::new(
                -libc::EBUSY,
                "name",
                format!("mirror '{}' is already being deleted", m.name()),
            )));
        }
        teardown::delete(
            m,
            Box::new(move |rc| {
                req.reply(if rc == 0 {
                    Ok(json!(true))
                } else {
                    Err(Fail::plain(rc, "delete failed"))
                })
            }),
        )
    })
}

/// `bdev_mirror_delete` of a mirror still waiting for legs (listed as `configuring`): it
/// stops waiting, and the superblock of each leg found for it is wiped, as a delete wipes a
/// running mirror's legs, so that it does not assemble again.
fn delete_pending(req: Request, name: &str) {
    match examine::withdraw_pending(name) {
        Ok(None) => req.reply(Err(no_mirror(name))),
        Err(n) => req.reply(Err(bad(
            "name",
            &format!(
                "{n} mirrors waiting for legs are named '{name}'; wipe their legs' superblocks one by one (bdev_mirror_wipe_superblock)"
            ),
        ))),
        Ok(Some(legs)) => {
            noticelog!(
                "mirror {name}: deleted while it waited for legs; wiping the superblocks of {} (a leg not found yet keeps its own: wipe it when it appears, with bdev_mirror_wipe_superblock)",
                legs.join(", ")
            );
            rpc_wipe::wipe_each(legs, None, req.answer_true())
        }
    }
}

/// `bdev_mirror_get_bdevs`'s `category`, as SPDK raid's `bdev_raid_get_bdevs`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Category {
    All,
    Online,
    Configuring,
    Offline,
}

impl Category {
    fn parse(p: &Params) -> Result<Category, Fail> {
        match p.string("category")?.as_deref() {
            None | Some("all") => Ok(Category::All),
            Some("online") => Ok(Category::Online),
            Some("configuring") => Ok(Category::Configuring),
            Some("offline") => Ok(Category::Offline),
            Some(other) => Err(bad(
                "category",
                &format!("'{other}' is not one of all, online, configuring, offline"),
            )),
        }
    }

    /// Whether a registered mirror in `state` is listed. A degraded mirror serves every block,
    /// so it is `online`, as SPDK raid lists a degraded raid1.
    fn lists(self, state: &str) -> bool {
        match self {
            Category::All => true,
            Category::Online => state != "offline",
            Category::Offline => state == "offline",
            Category::Configuring => false,
        }
    }

    /// Whether mirrors still waiting for legs (not registered yet) are listed.
    fn lists_waiting(self) -> bool {
        matches!(self, Category::All | Category::Configuring)
    }
}

pub extern "C" fn rpc_get_bdevs(request: *mut sys::spdk_jsonrpc_request, params: *const sys::spdk_json_val) {
    handle_checked(request, params, select, |req, (mirrors, waiting)| {
        gather(
            req,
            mirrors.into_iter().map(teardown::Pin::new).collect(),
            Vec::new(),
            waiting,
        )
    })
}

/// The registered mirrors and the waiting ones (as JSON) that `name` and `category` select.
/// A name that matches no mirror at all is an error; one in another category lists nothing.
fn select(p: &Params) -> Result<(Vec<&'static mirror::Mirror>, Vec<Value>), Fail> {
    p.only(&["name", "category"])?;
    let name = p.string("name")?;
    let category = Category::parse(p)?;
    let named = |n: &str| name.as_deref().is_none_or(|want| want == n);
    let mirrors: Vec<_> = mirror::all().into_iter().filter(|m| named(m.name())).collect();
    let waiting: Vec<Value> = super::examine::pending_mirrors()
        .into_iter()
        .chain(deferred::listing())
        .filter(|w| named(w["name"].as_str().unwrap_or_default()))
        .collect();
    if let Some(n) = &name {
        if mirrors.is_empty() && waiting.is_empty() {
            return Err(Fail::new(-libc::ENODEV, "name", format!("no mirror named '{n}'")));
        }
    }
    let mirrors = mirrors.into_iter().filter(|m| category.lists(m.state())).collect();
    let waiting = if category.lists_waiting() { waiting } else { Vec::new() };
    Ok((mirrors, waiting))
}

/// Collects each mirror's counters from its channels, one mirror after the other. Each is
/// pinned until its turn is over, so a delete meanwhile cannot free it under us. `waiting`
/// (mirrors not registered yet, already described) comes last.
fn gather(req: Request, mut rest: std::collections::VecDeque<teardown::Pin>, mut out: Vec<Value>, waiting: Vec<Value>) {
    let Some(pin) = rest.pop_front() else {
        out.extend(waiting);
        return req.reply(Ok(Value::Array(out)));
    };
    let m = pin.mirror();
    stats::collect_stats(
        m,
        Box::new(move |stats| {
            out.push(m.info(Some(&stats)));
            drop(pin);
            gather(req, rest, out, waiting);
        }),
    );
}

pub extern "C" fn rpc_set_options(request: *mut sys::spdk_jsonrpc_request, params: *const sys::spdk_json_val) {
    handle_checked(
        request,
        params,
        |p| {
            p.only(&["name", "rebuild_max_mb_per_s"])?;
            let name = p.required_string("name")?;
            let m = mirror_named(&name)?;
            Ok((m, p.uint("rebuild_max_mb_per_s", 0, MAX_RATE_MB)?))
        },
        |req, (m, rate)| {
            let Some(rate) = rate else {
                return req.reply(Ok(json!(true)));
            };
            m.rebuild_max_mb.store(rate, std::sync::atomic::Ordering::Release);
            super::persist::record_tunables(m, req.answer_recorded("rebuild_max_mb_per_s"));
        },
    )
}

pub extern "C" fn rpc_check(request: *mut sys::spdk_jsonrpc_request, params: *const sys::spdk_json_val) {
    handle_checked(
        request,
        params,
        |p| {
            p.only(&["name", "repair"])?;
            let name = p.required_string("name")?;
            let repair = p.boolean("repair")?.unwrap_or(false);
            let m = mirror_named(&name)?;
            if m.in_sync_mask().count_ones() < 2 {
                return Err(Fail::new(
                    -libc::ENODEV,
                    "name",
                    format!("mirror '{name}' has fewer than two in-sync legs to compare"),
                ));
            }
            Ok((m, repair))
        },
        |req, (m, repair)| {
            let started = process::start(
                m,
                Kind::Check { repair },
                None,
                vec![(0, m.geo().data_blocks())],
                Some(Box::new(move |r| {
                    req.reply(
                        r.map(|o| {
                            json!({
                                "mismatch_blocks": o.mismatch_blocks,
                                "unreadable_blocks": o.unreadable_blocks,
                                "blocks_checked": o.blocks_checked,
                                "repaired_blocks": o.repaired_blocks,
                            })
                        })
                        .map_err(|e| Fail::plain(-libc::EIO, format!("check stopped: {e}"))),
                    )
                })),
            );
            if let Err(e) = started {
                req.reply(Err(e.in_field("name")));
            }
        },
    )
}

pub extern "C" fn rpc_set_read_policy(request: *mut sys::spdk_jsonrpc_request, params: *const sys::spdk_json_val) {
    handle_checked(
        request,
        params,
        |p| {
            p.only(&["name", "read_policy", "preferred_leg"])?;
            let name = p.required_string("name")?;
            let m = mirror_named(&name)?;
            p.required_string("read_policy")?;
            let policy = read_policy(p)?;
            if let ReadPolicy::Preferred(leg) = policy {
                if leg >= m.geo().legs() {
                    return Err(bad("preferred_leg", &no_such_leg(leg, m.geo().legs())));
                }
            }
            Ok((m, policy))
        },
        |req, (m, policy)| {
            m.set_read_policy(policy);
            super::persist::record_tunables(m, req.answer_recorded("read_policy"));
        },
    )
}
