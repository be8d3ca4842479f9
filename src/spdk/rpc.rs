//! The `bdev_mirror_*` JSON-RPC methods, in SPDK's conventions: snake_case params, errors with a
//! negative errno and a message naming the field, nothing changed when a call fails.

use std::ffi::CString;
use std::os::raw::c_char;

use serde_json::{json, Map, Value};
use spdk_sys as sys;

use super::ffi::guard;
use super::json;
use super::mirror::{self, CreateSpec, Fail, MirrorOpts, PersistSpec, DEFAULT_MAX_PARENTS, DEFAULT_POOL_SIZE};
use super::process::{self, Kind};
use crate::engine::ReadPolicy;
use crate::placement::{Geometry, GeometrySpec, Level, Raid10Layout, MAX_LEGS};
use crate::superblock::MetaLayout;

/// Default RAID10 chunk for mirrors created over RPC.
pub const DEFAULT_CHUNK_KB: u64 = 64;
/// Default write-intent bitmap region (md's default for large arrays).
pub const DEFAULT_REGION_KB: u64 = 65536;
/// Superblocks hold names up to this long.
const SB_NAME_MAX: usize = 64;
/// Largest bandwidth cap accepted, MiB/s.
const MAX_RATE_MB: u64 = 1 << 30;

type Handler = unsafe extern "C" fn(*mut sys::spdk_jsonrpc_request, *const sys::spdk_json_val);

pub fn register() {
    let methods: [(&std::ffi::CStr, Handler); 8] = [
        (c"bdev_mirror_set_options", rpc_set_options),
        (c"bdev_mirror_check", rpc_check),
        (c"bdev_mirror_set_read_policy", rpc_set_read_policy),
        (c"bdev_mirror_create", rpc_create),
        (c"bdev_mirror_delete", rpc_delete),
        (c"bdev_mirror_get_bdevs", rpc_get_bdevs),
        (c"bdev_mirror_add_base_bdev", rpc_add_base_bdev),
        (c"bdev_mirror_remove_base_bdev", rpc_remove_base_bdev),
    ];
    for (name, f) in methods {
        // SAFETY: static name; the handler is a valid extern "C" function for the life of
        // the process.
        unsafe { sys::spdk_rpc_register_method(name.as_ptr(), Some(f), sys::SPDK_RPC_RUNTIME) };
    }
}

/// A pending JSON-RPC request (answered exactly once).
#[derive(Clone, Copy)]
struct Request(*mut sys::spdk_jsonrpc_request);

impl Request {
    fn reply(self, result: Result<Value, Fail>) {
        match result {
            Ok(v) => {
                // SAFETY: the request is live until answered, and this answers it.
                unsafe {
                    let w = sys::spdk_jsonrpc_begin_result(self.0);
                    if !w.is_null() {
                        json::write_value(w, &v);
                        sys::spdk_jsonrpc_end_result(self.0, w);
                    }
                }
            }
            Err(Fail(code, msg)) => {
                let msg = CString::new(msg.replace('\0', " ")).expect("NULs replaced");
                // SAFETY: as above; the message is NUL-terminated.
                unsafe { sys::spdk_jsonrpc_send_error_response(self.0, code, msg.as_ptr() as *const c_char) };
            }
        }
    }
}

/// Runs a handler body with params decoded, answering with an internal error if it panics.
fn handle(request: *mut sys::spdk_jsonrpc_request, params: *const sys::spdk_json_val, f: fn(Request, Params)) {
    let req = Request(request);
    let ok = guard("mirror RPC", false, || {
        // SAFETY: SPDK hands us the request's parsed params (or NULL).
        match unsafe { json::to_value(params) } {
            Ok(Value::Object(map)) => f(req, Params(map)),
            Ok(Value::Null) => f(req, Params(Map::new())),
            Ok(_) => req.reply(Err(Fail(-libc::EINVAL, "params: expected an object".into()))),
            Err(e) => req.reply(Err(Fail(-libc::EINVAL, format!("params: {e}")))),
        }
        true
    });
    if !ok {
        req.reply(Err(Fail(
            sys::SPDK_JSONRPC_ERROR_INTERNAL_ERROR,
            "internal error".into(),
        )));
    }
}

/// Params of one call; every accessor names the field in its error.
struct Params(Map<String, Value>);

fn bad(field: &str, what: &str) -> Fail {
    Fail(-libc::EINVAL, format!("{field}: {what}"))
}

impl Params {
    fn only(&self, allowed: &[&str]) -> Result<(), Fail> {
        match self.0.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(k) => Err(bad(k, "unknown parameter")),
            None => Ok(()),
        }
    }

    fn string(&self, field: &str) -> Result<Option<String>, Fail> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Err(bad(field, "must not be empty")),
            Some(Value::String(s)) if s.contains('\0') => Err(bad(field, "must not contain NUL")),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(bad(field, "must be a string")),
        }
    }

    fn required_string(&self, field: &str) -> Result<String, Fail> {
        self.string(field)?.ok_or_else(|| bad(field, "required"))
    }

    fn uint(&self, field: &str, min: u64, max: u64) -> Result<Option<u64>, Fail> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(v) if (min..=max).contains(&v) => Ok(Some(v)),
                _ => Err(bad(field, &format!("must be an integer from {min} to {max}"))),
            },
            Some(_) => Err(bad(field, "must be an integer")),
        }
    }

    fn boolean(&self, field: &str) -> Result<Option<bool>, Fail> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(bad(field, "must be true or false")),
        }
    }

    fn strings(&self, field: &str) -> Result<Vec<String>, Fail> {
        let Some(v) = self.0.get(field) else {
            return Err(bad(field, "required"));
        };
        let Value::Array(items) = v else {
            return Err(bad(field, "must be an array of bdev names"));
        };
        let mut out: Vec<String> = Vec::with_capacity(items.len());
        for item in items {
            match item {
                Value::String(s) if !s.is_empty() && !s.contains('\0') => {
                    if out.contains(s) {
                        return Err(bad(field, &format!("'{s}' is listed twice")));
                    }
                    out.push(s.clone());
                }
                _ => return Err(bad(field, "must be an array of non-empty bdev names")),
            }
        }
        Ok(out)
    }
}

/// The mirror called `name`, or an error naming the field.
fn mirror_named(name: &str) -> Result<&'static mirror::Mirror, Fail> {
    mirror::find(name).ok_or_else(|| Fail(-libc::ENODEV, format!("name: no mirror named '{name}'")))
}

fn bdev_exists(name: &str) -> bool {
    let Ok(c) = CString::new(name) else {
        return false;
    };
    // SAFETY: NUL-terminated name; lookup only.
    !unsafe { sys::spdk_bdev_get_by_name(c.as_ptr()) }.is_null()
}

/// `read_policy` and `preferred_leg`, if given.
fn read_policy(p: &Params) -> Result<ReadPolicy, Fail> {
    let name = p.string("read_policy")?;
    let leg = p.uint("preferred_leg", 0, MAX_LEGS as u64 - 1)?.map(|l| l as u32);
    match (name, leg) {
        (None, None) => Ok(ReadPolicy::default()),
        (None, Some(_)) => Err(bad("preferred_leg", "only applies to read_policy preferred")),
        (Some(n), leg) => ReadPolicy::parse(&n, leg).map_err(|e| Fail(-libc::EINVAL, e)),
    }
}

/// Validates everything that does not need the base bdevs opened.
fn create_spec(p: &Params) -> Result<CreateSpec, Fail> {
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
    ])?;
    let name = p.required_string("name")?;
    if name.len() > 200 {
        return Err(bad("name", "longer than 200 bytes"));
    }
    let level = Level::parse(&p.required_string("level")?).map_err(|e| bad("level", &e.to_string()))?;
    let layout = match (p.string("layout")?, level) {
        (None, _) => None,
        (Some(_), Level::Raid1) => return Err(bad("layout", "applies to raid10 only")),
        (Some(l), Level::Raid10) => Some(Raid10Layout::parse(&l).map_err(|e| Fail(-libc::EINVAL, e.to_string()))?),
    };
    let chunk_kb = match (p.uint("chunk_kb", 1, 1 << 20)?, level) {
        (Some(_), Level::Raid1) => return Err(bad("chunk_kb", "applies to raid10 only")),
        (Some(c), Level::Raid10) => c,
        (None, _) => DEFAULT_CHUNK_KB,
    };
    let base_bdevs = p.strings("base_bdevs")?;
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
    let rebuild_max_mb = p.uint("rebuild_max_mb_per_s", 0, MAX_RATE_MB)?.unwrap_or(0);
    if superblock && name.len() > SB_NAME_MAX {
        return Err(bad(
            "name",
            &format!("longer than the {SB_NAME_MAX} bytes a superblock holds"),
        ));
    }
    if let ReadPolicy::Preferred(leg) = read_policy {
        if leg as usize >= base_bdevs.len() {
            return Err(bad(
                "preferred_leg",
                &format!("leg {leg} does not exist (legs are 0..{})", base_bdevs.len()),
            ));
        }
    }
    if let Some(u) = p.string("uuid")? {
        if bdev_exists(&u) {
            return Err(Fail(
                -libc::EEXIST,
                format!("uuid: {u} is already used by another bdev"),
            ));
        }
    }
    if bdev_exists(&name) {
        return Err(Fail(
            -libc::EEXIST,
            format!("name: a bdev named '{name}' already exists"),
        ));
    }
    for b in &base_bdevs {
        if mirror::reaches(b, &name) {
            return Err(bad("base_bdevs", &format!("'{b}' is the mirror '{name}' itself or is built on it")));
        }
        if !bdev_exists(b) {
            return Err(Fail(-libc::ENODEV, format!("base_bdevs: no bdev named '{b}'")));
        }
    }
    // The smallest leg decides; geometry errors name their field.
    let mut leg_blocks = u64::MAX;
    let mut block_size = None;
    for b in &base_bdevs {
        let c = CString::new(b.as_str()).expect("checked for NUL");
        // SAFETY: the bdev exists (checked above); lookups only.
        let (bs, n) = unsafe {
            let bdev = sys::spdk_bdev_get_by_name(c.as_ptr());
            (sys::spdk_bdev_get_block_size(bdev), sys::spdk_bdev_get_num_blocks(bdev))
        };
        match block_size {
            None => block_size = Some(bs),
            Some(first) if first != bs => {
                return Err(bad(
                    "base_bdevs",
                    &format!("block sizes differ ('{}' has {first}, '{b}' has {bs})", base_bdevs[0]),
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
    if !base_bdevs.is_empty() && leg_blocks <= reserved {
        return Err(bad(
            "base_bdevs",
            &format!("legs of {leg_blocks} blocks leave no room after the {reserved}-block superblock area"),
        ));
    }
    let geo = Geometry::new(&GeometrySpec {
        level,
        layout,
        legs: base_bdevs.len() as u32,
        chunk_bytes: Some(chunk_kb * 1024),
        block_size,
        leg_blocks: if base_bdevs.is_empty() {
            0
        } else {
            leg_blocks - reserved
        },
    })
    .map_err(|e| {
        let msg = e.to_string();
        Fail(
            -libc::EINVAL,
            msg.replacen("legs:", "base_bdevs:", 1)
                .replacen("leg_blocks:", "base_bdevs:", 1),
        )
    })?;
    let persist = if superblock {
        let layout = MetaLayout::new(block_size, geo.data_blocks(), region_kb)
            .map_err(|e| Fail(-libc::EINVAL, e.to_string()))?;
        Some(PersistSpec {
            region_kb,
            layout,
            found: None,
        })
    } else {
        None
    };
    Ok(CreateSpec {
        name,
        geo,
        chunk_kb,
        uuid,
        base_bdevs: base_bdevs.into_iter().map(Some).collect(),
        opts,
        read_policy,
        persist,
        rebuild_max_mb,
    })
}

unsafe extern "C" fn rpc_create(request: *mut sys::spdk_jsonrpc_request, params: *const sys::spdk_json_val) {
    handle(request, params, |req, p| match create_spec(&p) {
        Err(e) => req.reply(Err(e)),
        Ok(spec) => mirror::create(spec, Box::new(move |r| req.reply(r.map(|m| json!(m.name()))))),
    })
}

unsafe extern "C" fn rpc_delete(request: *mut sys::spdk_jsonrpc_request, params: *const sys::spdk_json_val) {
    handle(request, params, |req, p| {
        let found = p
            .only(&["name"])
            .and_then(|_| p.required_string("name"))
            .and_then(|name| mirror_named(&name));
        match found {
            Err(e) => req.reply(Err(e)),
            Ok(m) if m.deleting.load(std::sync::atomic::Ordering::Acquire) => req.reply(Err(Fail(
                -libc::EBUSY,
                format!("name: mirror '{}' is already being deleted", m.name()),
            ))),
            Ok(m) => mirror::delete(
                m,
                Box::new(move |rc| {
                    req.reply(if rc == 0 {
                        Ok(json!(true))
                    } else {
                        Err(Fail(rc, "delete failed".into()))
                    })
                }),
            ),
        }
    })
}

unsafe extern "C" fn rpc_get_bdevs(request: *mut sys::spdk_jsonrpc_request, params: *const sys::spdk_json_val) {
    handle(request, params, |req, p| {
        let selected = p
            .only(&["name"])
            .and_then(|_| p.string("name"))
            .and_then(|name| match name {
                None => Ok(mirror::all()),
                Some(n) => mirror_named(&n).map(|m| vec![m]),
            });
        match selected {
            Err(e) => req.reply(Err(e)),
            Ok(mirrors) => gather(req, mirrors.into_iter().map(mirror::Pin::new).collect(), Vec::new()),
        }
    })
}

/// Collects each mirror's counters from its channels, one mirror after the other. Each is
/// pinned until its turn is over, so a delete meanwhile cannot free it under us.
fn gather(req: Request, mut rest: std::collections::VecDeque<mirror::Pin>, mut out: Vec<Value>) {
    let Some(pin) = rest.pop_front() else {
        return req.reply(Ok(Value::Array(out)));
    };
    let m = pin.mirror();
    mirror::collect_stats(
        m,
        Box::new(move |stats| {
            out.push(m.info(Some(&stats)));
            drop(pin);
            gather(req, rest, out);
        }),
    );
}

unsafe extern "C" fn rpc_remove_base_bdev(request: *mut sys::spdk_jsonrpc_request, params: *const sys::spdk_json_val) {
    handle(request, params, |req, p| {
        let target = p
            .only(&["base_bdev"])
            .and_then(|_| p.required_string("base_bdev"))
            .and_then(|b| {
                mirror::find_leg(&b)
                    .ok_or_else(|| Fail(-libc::ENODEV, format!("base_bdev: '{b}' is not a leg of any mirror")))
            });
        let (m, leg) = match target {
            Ok(t) => t,
            Err(e) => return req.reply(Err(e)),
        };
        // The leg a rebuild or recovery writes may go (that cancels it); any other leg could be
        // its source.
        let target = m.process.lock().ok().and_then(|p| p.as_ref().and_then(|p| p.target));
        if m.process_active.load(std::sync::atomic::Ordering::Acquire) && target != Some(leg) {
            return req.reply(Err(Fail(
                -libc::EBUSY,
                format!(
                    "base_bdev: '{}' is running a {}; remove legs once it is done",
                    m.name(),
                    m.process
                        .lock()
                        .ok()
                        .and_then(|p| p.as_ref().map(|p| p.kind.name()))
                        .unwrap_or("process")
                ),
            )));
        }
        // Never take the last good copy of any block (mdadm's "faillast" rule, per block).
        let left = m.in_sync_mask() & !(1 << leg);
        if !m.every_block_covered(left) {
            return req.reply(Err(Fail(
                -libc::EBUSY,
                format!(
                    "base_bdev: '{}' holds the last in-sync copy of some blocks of '{}'",
                    m.legs[leg as usize].name(),
                    m.name()
                ),
            )));
        }
        mirror::remove_leg(
            m,
            leg,
            "removed over RPC",
            Box::new(move |r| req.reply(r.map(|_| json!(true)))),
        );
    })
}

unsafe extern "C" fn rpc_add_base_bdev(request: *mut sys::spdk_jsonrpc_request, params: *const sys::spdk_json_val) {
    handle(request, params, |req, p| {
        let checked = (|| {
            p.only(&["name", "base_bdev"])?;
            let name = p.required_string("name")?;
            let base = p.required_string("base_bdev")?;
            let m = mirror_named(&name)?;
            if m.process_active.load(std::sync::atomic::Ordering::Acquire) {
                return Err(Fail(
                    -libc::EBUSY,
                    format!("name: mirror '{name}' is already running a background process"),
                ));
            }
            if !m.legs.iter().any(|l| !l.present()) {
                return Err(Fail(
                    -libc::ENOSPC,
                    format!("name: mirror '{name}' has no free slot (remove a leg first)"),
                ));
            }
            if m.in_sync_mask() == 0 {
                return Err(Fail(
                    -libc::ENODEV,
                    format!("name: mirror '{name}' has no in-sync leg to rebuild from"),
                ));
            }
            if !bdev_exists(&base) {
                return Err(Fail(-libc::ENODEV, format!("base_bdev: no bdev named '{base}'")));
            }
            if mirror::reaches(&base, &name) {
                return Err(Fail(
                    -libc::EINVAL,
                    format!("base_bdev: '{base}' is the mirror '{name}' itself or is built on it"),
                ));
            }
            if mirror::find_leg(&base).is_some() {
                return Err(Fail(
                    -libc::EBUSY,
                    format!("base_bdev: '{base}' is already a leg of a mirror"),
                ));
            }
            Ok((m, base))
        })();
        let (m, base) = match checked {
            Ok(c) => c,
            Err(e) => return req.reply(Err(e)),
        };
        let join = move |m: &'static mirror::Mirror, slot: u32, kind: Kind| {
            mirror::join_leg(
                m,
                slot,
                &base.clone(),
                kind,
                false,
                Box::new(move |r| req.reply(r.map(|_| json!(true)))),
            );
        };
        let first_free = m.legs.iter().find(|l| !l.present()).map(|l| l.index).unwrap_or(0);
        if m.persist.is_none() {
            return join(m, first_free, Kind::Rebuild);
        }
        // A leg that carries this mirror's superblock goes back to its slot, recovered from
        // the bitmap if it can be (md's re-add); any other bdev is rebuilt in full.
        let base2 = p.string("base_bdev").ok().flatten().unwrap_or_default();
        let pin = mirror::Pin::new(m);
        super::examine::read_superblock(
            &base2,
            Box::new(move |r| {
                // The mirror may have been deleted while the superblock was read (the pin
                // keeps it from being freed until this is over).
                let _pin = pin;
                if m.deleting.load(std::sync::atomic::Ordering::Acquire) {
                    return req.reply(Err(Fail(
                        -libc::ENODEV,
                        "name: the mirror was deleted meanwhile".into(),
                    )));
                }
                let mine = m.persist.as_ref().map(|p| p.superblock().mirror_uuid);
                let (slot, kind) = match r {
                    Ok(Some(f))
                        if Some(f.sb.mirror_uuid) == mine
                            && m.legs.get(f.sb.this_slot as usize).is_some_and(|l| !l.present()) =>
                    {
                        (f.sb.this_slot, super::examine::rejoin_kind(m, &f))
                    }
                    _ => (first_free, Kind::Rebuild),
                };
                join(m, slot, kind);
            }),
        );
    })
}

unsafe extern "C" fn rpc_set_options(request: *mut sys::spdk_jsonrpc_request, params: *const sys::spdk_json_val) {
    handle(request, params, |req, p| {
        let checked = (|| {
            p.only(&["name", "rebuild_max_mb_per_s"])?;
            let name = p.required_string("name")?;
            let m = mirror_named(&name)?;
            Ok((m, p.uint("rebuild_max_mb_per_s", 0, MAX_RATE_MB)?))
        })();
        let (m, rate) = match checked {
            Ok((m, Some(rate))) => (m, rate),
            Ok((_, None)) => return req.reply(Ok(json!(true))),
            Err(e) => return req.reply(Err(e)),
        };
        m.rebuild_max_mb.store(rate, std::sync::atomic::Ordering::Release);
        // The answer waits until the superblocks hold the new cap, so it survives a crash.
        super::persist::record_tunables(
            m,
            Box::new(move |r| {
                req.reply(r.map(|_| json!(true)).map_err(|e| {
                    Fail(
                        -libc::EIO,
                        format!("rebuild_max_mb_per_s: in effect, but not recorded on the legs: {e}"),
                    )
                }))
            }),
        );
    })
}

unsafe extern "C" fn rpc_check(request: *mut sys::spdk_jsonrpc_request, params: *const sys::spdk_json_val) {
    handle(request, params, |req, p| {
        let checked = (|| {
            p.only(&["name", "repair"])?;
            let name = p.required_string("name")?;
            let repair = p.boolean("repair")?.unwrap_or(false);
            let m = mirror_named(&name)?;
            if m.in_sync_mask().count_ones() < 2 {
                return Err(Fail(
                    -libc::ENODEV,
                    format!("name: mirror '{name}' has fewer than two in-sync legs to compare"),
                ));
            }
            Ok((m, repair))
        })();
        let (m, repair) = match checked {
            Ok(c) => c,
            Err(e) => return req.reply(Err(e)),
        };
        let started = process::start(
            m,
            Kind::Check { repair },
            None,
            vec![(0, m.geo.data_blocks())],
            Some(Box::new(move |r| {
                req.reply(
                    r.map(|o| {
                        json!({
                            "mismatch_blocks": o.mismatch_blocks,
                            "blocks_checked": o.blocks_checked,
                            "repaired_blocks": o.repaired_blocks,
                        })
                    })
                    .map_err(|e| Fail(-libc::EIO, format!("check stopped: {e}"))),
                )
            })),
        );
        if let Err(e) = started {
            req.reply(Err(Fail(-libc::EBUSY, format!("name: {e}"))));
        }
    })
}

unsafe extern "C" fn rpc_set_read_policy(request: *mut sys::spdk_jsonrpc_request, params: *const sys::spdk_json_val) {
    handle(request, params, |req, p| {
        let checked = (|| {
            p.only(&["name", "read_policy", "preferred_leg"])?;
            let name = p.required_string("name")?;
            let m = mirror_named(&name)?;
            p.required_string("read_policy")?;
            let policy = read_policy(&p)?;
            if let ReadPolicy::Preferred(leg) = policy {
                if leg >= m.geo.legs() {
                    return Err(bad(
                        "preferred_leg",
                        &format!("leg {leg} does not exist (legs are 0..{})", m.geo.legs()),
                    ));
                }
            }
            Ok((m, policy))
        })();
        let (m, policy) = match checked {
            Ok(c) => c,
            Err(e) => return req.reply(Err(e)),
        };
        m.set_read_policy(policy);
        // The answer waits until the superblocks hold the new policy, so it survives a crash.
        super::persist::record_tunables(
            m,
            Box::new(move |r| {
                req.reply(r.map(|_| json!(true)).map_err(|e| {
                    Fail(
                        -libc::EIO,
                        format!("read_policy: in effect, but not recorded on the legs: {e}"),
                    )
                }))
            }),
        );
    })
}
