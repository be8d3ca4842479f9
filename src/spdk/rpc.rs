//! The `bdev_mirror_*` JSON-RPC methods, in SPDK's conventions: snake_case params, errors with a
//! negative errno and a message naming the field, nothing changed when a call fails.

use std::ffi::CString;
use std::os::raw::c_char;
use std::ptr;

use serde_json::{json, Map, Value};
use spdk_sys as sys;

use super::create::{self, CreateSpec, PersistSpec};
use super::error::Fail;
use super::ffi::{guard, noticelog};
use super::json;
use super::mirror::{self, MirrorOpts, DEFAULT_MAX_PARENTS, DEFAULT_POOL_SIZE};
use super::options;
use super::process::{self, Kind};
use super::{join, legs, removal, stats, teardown};
use crate::engine::ReadPolicy;
use crate::placement::{Geometry, GeometrySpec, Level, Raid10Layout, MAX_LEGS};
use crate::superblock::{MetaLayout, Superblock, MAGIC, SUPERBLOCK_BYTES};

/// Default RAID10 chunk for mirrors created over RPC.
pub const DEFAULT_CHUNK_KB: u64 = 64;
/// Default write-intent bitmap region (md's default for large arrays).
pub const DEFAULT_REGION_KB: u64 = 65536;
/// Superblocks hold names up to this long.
const SB_NAME_MAX: usize = 64;
/// Largest bandwidth cap accepted, MiB/s.
const MAX_RATE_MB: u64 = 1 << 30;

type Handler = extern "C" fn(*mut sys::spdk_jsonrpc_request, *const sys::spdk_json_val);

/// Methods that work once the bdev layer is up.
const RUNTIME: u32 = sys::SPDK_RPC_RUNTIME;
/// Also before `framework_start_init` (`--wait-for-rpc`), as SPDK's own `*_set_options`: the
/// module options must be in force when the startup config's bdevs appear and are examined.
const STARTUP_TOO: u32 = sys::SPDK_RPC_STARTUP | sys::SPDK_RPC_RUNTIME;

pub fn register() {
    let methods: [(&std::ffi::CStr, Handler, u32); 13] = [
        (c"bdev_mirror_set_options", rpc_set_options, RUNTIME),
        (c"bdev_mirror_check", rpc_check, RUNTIME),
        (c"bdev_mirror_set_read_policy", rpc_set_read_policy, RUNTIME),
        (c"bdev_mirror_create", rpc_create, RUNTIME),
        (c"bdev_mirror_delete", rpc_delete, RUNTIME),
        (c"bdev_mirror_get_bdevs", rpc_get_bdevs, RUNTIME),
        (c"bdev_mirror_add_base_bdev", rpc_add_base_bdev, RUNTIME),
        (c"bdev_mirror_remove_base_bdev", rpc_remove_base_bdev, RUNTIME),
        (c"bdev_mirror_wipe_superblock", rpc_wipe_superblock, RUNTIME),
        (c"bdev_mirror_replace_base_bdev", rpc_replace_base_bdev, RUNTIME),
        (c"bdev_mirror_set_num_legs", rpc_set_num_legs, RUNTIME),
        (c"bdev_mirror_set_module_options", rpc_set_module_options, STARTUP_TOO),
        (c"bdev_mirror_get_module_options", rpc_get_module_options, STARTUP_TOO),
    ];
    for (name, f, states) in methods {
        // SAFETY: static name; the handler is a valid extern "C" function for the life of
        // the process.
        unsafe { sys::spdk_rpc_register_method(name.as_ptr(), Some(f), states) };
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
            Err(e) => {
                let msg = CString::new(e.to_string().replace('\0', " ")).expect("NULs replaced");
                // SAFETY: as above; the message is NUL-terminated.
                unsafe { sys::spdk_jsonrpc_send_error_response(self.0, e.errno, msg.as_ptr() as *const c_char) };
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
            Ok(_) => req.reply(Err(Fail::invalid("params", "expected an object"))),
            Err(e) => req.reply(Err(e.in_field("params"))),
        }
        true
    });
    if !ok {
        req.reply(Err(Fail::plain(
            sys::SPDK_JSONRPC_ERROR_INTERNAL_ERROR,
            "internal error",
        )));
    }
}

/// Params of one call; every accessor names the field in its error.
struct Params(Map<String, Value>);

fn bad(field: &str, what: &str) -> Fail {
    Fail::invalid(field.to_string(), what)
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
    mirror::find(name).ok_or_else(|| Fail::new(-libc::ENODEV, "name", format!("no mirror named '{name}'")))
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
        (Some(n), leg) => ReadPolicy::parse(&n, leg).map_err(|e| Fail::named(-libc::EINVAL, e)),
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
    for b in &base_bdevs {
        if mirror::reaches(b, &name) {
            return Err(bad(
                "base_bdevs",
                &format!("'{b}' is the mirror '{name}' itself or is built on it"),
            ));
        }
        if !bdev_exists(b) {
            return Err(Fail::new(-libc::ENODEV, "base_bdevs", format!("no bdev named '{b}'")));
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
        // The legs are the base bdevs here: their count and their size.
        let e = Fail::named(-libc::EINVAL, e);
        match &*e.field {
            "legs" | "leg_blocks" => e.in_field("base_bdevs"),
            _ => e,
        }
    })?;
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

extern "C" fn rpc_create(request: *mut sys::spdk_jsonrpc_request, params: *const sys::spdk_json_val) {
    handle(request, params, |req, p| match create_spec(&p) {
        Err(e) => req.reply(Err(e)),
        Ok(spec) => create::create(spec, Box::new(move |r| req.reply(r.map(|m| json!(m.name()))))),
    })
}

extern "C" fn rpc_delete(request: *mut sys::spdk_jsonrpc_request, params: *const sys::spdk_json_val) {
    handle(request, params, |req, p| {
        let found = p
            .only(&["name"])
            .and_then(|_| p.required_string("name"))
            .and_then(|name| mirror_named(&name));
        match found {
            Err(e) => req.reply(Err(e)),
            Ok(m) if m.deleting.load(std::sync::atomic::Ordering::Acquire) => req.reply(Err(Fail::new(
                -libc::EBUSY,
                "name",
                format!("mirror '{}' is already being deleted", m.name()),
            ))),
            Ok(m) => teardown::delete(
                m,
                Box::new(move |rc| {
                    req.reply(if rc == 0 {
                        Ok(json!(true))
                    } else {
                        Err(Fail::plain(rc, "delete failed"))
                    })
                }),
            ),
        }
    })
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

extern "C" fn rpc_get_bdevs(request: *mut sys::spdk_jsonrpc_request, params: *const sys::spdk_json_val) {
    handle(request, params, |req, p| match select(&p) {
        Err(e) => req.reply(Err(e)),
        Ok((mirrors, waiting)) => gather(
            req,
            mirrors.into_iter().map(teardown::Pin::new).collect(),
            Vec::new(),
            waiting,
        ),
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

extern "C" fn rpc_set_module_options(request: *mut sys::spdk_jsonrpc_request, params: *const sys::spdk_json_val) {
    handle(request, params, |req, p| {
        let result = (|| {
            p.only(&["degraded_grace_ms", "degraded_assembly"])?;
            // Every field is checked before any is stored: a refused call changes nothing.
            let mut o = options::get();
            if let Some(ms) = p.uint("degraded_grace_ms", 0, options::MAX_DEGRADED_GRACE_MS)? {
                o.degraded_grace_ms = ms;
            }
            if let Some(on) = p.boolean("degraded_assembly")? {
                o.degraded_assembly = on;
            }
            options::set(o);
            Ok(json!(true))
        })();
        if result.is_ok() {
            // Mirrors already waiting for legs decide again under the new options.
            super::examine::options_changed();
        }
        req.reply(result);
    })
}

extern "C" fn rpc_get_module_options(request: *mut sys::spdk_jsonrpc_request, params: *const sys::spdk_json_val) {
    handle(request, params, |req, p| {
        req.reply(p.only(&[]).map(|_| options::get().to_json()));
    })
}

extern "C" fn rpc_wipe_superblock(request: *mut sys::spdk_jsonrpc_request, params: *const sys::spdk_json_val) {
    handle(request, params, |req, p| {
        let checked = (|| {
            p.only(&["base_bdev"])?;
            let name = p.required_string("base_bdev")?;
            let c = CString::new(name.as_str()).map_err(|_| bad("base_bdev", "must not contain NUL"))?;
            // SAFETY: NUL-terminated name; lookup only.
            let bdev = unsafe { sys::spdk_bdev_get_by_name(c.as_ptr()) };
            if bdev.is_null() {
                return Err(Fail::new(-libc::ENODEV, "base_bdev", format!("no bdev named '{name}'")));
            }
            unclaimed(bdev, &name)?;
            Ok(name)
        })();
        match checked {
            Err(e) => req.reply(Err(e)),
            Ok(name) => Wipe::start(name, Box::new(move |r| req.reply(r.map(|_| json!(true))))),
        }
    })
}

/// Refuses a bdev some module (this one or another) holds: its owner writes it, and wiping
/// under a running mirror would destroy that mirror's record of itself.
fn unclaimed(bdev: *mut sys::spdk_bdev, name: &str) -> Result<(), Fail> {
    match claimed_by(bdev) {
        None => Ok(()),
        Some(module) => Err(Fail::new(
            -libc::EBUSY,
            "base_bdev",
            format!("'{name}' is claimed by module '{module}'; release it first"),
        )),
    }
}

/// The module that holds a claim on `bdev`, if one does. SPDK has no getter for it: the claim
/// lives in the bdev's public `internal` fields, which change on the app thread, where RPCs run.
fn claimed_by(bdev: *mut sys::spdk_bdev) -> Option<String> {
    // SAFETY: a live bdev, read on the app thread; the union member read is the one the claim
    // type says is in use, and module names are static strings.
    unsafe {
        let internal = &(*bdev).internal;
        let module = match internal.claim_type {
            sys::SPDK_BDEV_CLAIM_NONE => return None,
            sys::SPDK_BDEV_CLAIM_EXCL_WRITE => internal.claim.v1.module,
            _ => internal
                .claim
                .v2
                .claims
                .tqh_first
                .as_ref()
                .map_or(ptr::null_mut(), |c| c.module),
        };
        let name = module.as_ref().map(|m| super::ffi::cstr(m.name).into_owned());
        Some(name.unwrap_or_else(|| "unknown".into()))
    }
}

/// What a wipe answers once its bdev is closed again.
type WipeDone = Box<dyn FnOnce(Result<(), Fail>)>;

/// Where a wipe is: the superblock's blocks are read first (only a bdev that carries a mirror
/// superblock is wiped), then the metadata area is zeroed, then flushed where there is a cache.
#[derive(Clone, Copy, PartialEq, Eq)]
enum WipeStep {
    Read,
    Zero,
    Flush,
}

/// One `bdev_mirror_wipe_superblock` in flight (app thread), md's `--zero-superblock`: for a
/// leg that was away when its mirror was deleted (delete zeroes only the legs it holds), so
/// that it never brings that mirror back.
struct Wipe {
    name: String,
    desc: *mut sys::spdk_bdev_desc,
    ch: *mut sys::spdk_io_channel,
    buf: *mut std::os::raw::c_void,
    bs: u64,
    /// Blocks zeroed: the superblock's metadata area (superblock and bitmap) when it is
    /// readable, else just the superblock's blocks.
    blocks: u64,
    step: WipeStep,
    done: Option<WipeDone>,
}

extern "C" fn ignore_event(_: sys::spdk_bdev_event_type, _: *mut sys::spdk_bdev, _: *mut std::os::raw::c_void) {}

impl Wipe {
    /// Opens `name` read-write and reads its superblock's blocks.
    fn start(name: String, done: WipeDone) {
        let Ok(cname) = CString::new(name.as_str()) else {
            return done(Err(bad("base_bdev", "must not contain NUL")));
        };
        let mut desc = ptr::null_mut();
        // SAFETY: NUL-terminated name; the descriptor is closed in `finish`. A hot-remove
        // meanwhile fails our I/O, which ends the wipe and closes it.
        let rc =
            unsafe { sys::spdk_bdev_open_ext(cname.as_ptr(), true, Some(ignore_event), ptr::null_mut(), &mut desc) };
        if rc == -libc::EPERM {
            return done(Err(Fail::new(
                -libc::EBUSY,
                "base_bdev",
                format!("'{name}' is claimed; release it first"),
            )));
        }
        if rc != 0 {
            return done(Err(Fail::new(
                rc,
                "base_bdev",
                format!("cannot open '{name}': {}", errno_text(rc)),
            )));
        }
        // SAFETY: open descriptor.
        let (bdev, ch) = unsafe { (sys::spdk_bdev_desc_get_bdev(desc), sys::spdk_bdev_get_io_channel(desc)) };
        // SAFETY: open bdev.
        let bs = unsafe { sys::spdk_bdev_get_block_size(bdev) } as u64;
        let sb_blocks = (SUPERBLOCK_BYTES as u64).div_ceil(bs);
        // SAFETY: a plain DMA allocation, freed in `finish` (or replaced in `zero`).
        let buf = unsafe { sys::spdk_dma_zmalloc((sb_blocks * bs) as usize, 0x1000, ptr::null_mut()) };
        let w = Box::into_raw(Box::new(Wipe {
            name,
            desc,
            ch,
            buf,
            bs,
            blocks: sb_blocks,
            step: WipeStep::Read,
            done: Some(done),
        }));
        if ch.is_null() || buf.is_null() {
            return finish(
                w,
                Err(Fail::new(
                    -libc::ENOMEM,
                    "base_bdev",
                    "no memory to read the superblock",
                )),
            );
        }
        // SAFETY: open bdev.
        if unsafe { sys::spdk_bdev_get_num_blocks(bdev) } < sb_blocks {
            return finish(w, Err(no_superblock(w)));
        }
        submit_wipe(w);
    }
}

fn errno_text(rc: i32) -> std::io::Error {
    std::io::Error::from_raw_os_error(rc.abs())
}

fn no_superblock(w: *mut Wipe) -> Fail {
    // SAFETY: ours until `finish`.
    let name = unsafe { &(*w).name };
    bad(
        "base_bdev",
        &format!("'{name}' carries no mirror superblock; nothing to wipe"),
    )
}

/// Issues the wipe's current step.
fn submit_wipe(w: *mut Wipe) {
    // SAFETY: ours until `finish`.
    let wp = unsafe { &mut *w };
    let arg = w as *mut std::os::raw::c_void;
    // SAFETY: open descriptor, this thread's channel, a buffer of `blocks` blocks.
    let rc = unsafe {
        match wp.step {
            WipeStep::Read => sys::spdk_bdev_read_blocks(wp.desc, wp.ch, wp.buf, 0, wp.blocks, Some(wipe_io_done), arg),
            WipeStep::Zero => {
                sys::spdk_bdev_write_blocks(wp.desc, wp.ch, wp.buf, 0, wp.blocks, Some(wipe_io_done), arg)
            }
            WipeStep::Flush => sys::spdk_bdev_flush_blocks(wp.desc, wp.ch, 0, wp.blocks, Some(wipe_io_done), arg),
        }
    };
    if rc != 0 {
        let e = wipe_failed(w, &format!("cannot submit: {}", errno_text(rc)));
        finish(w, Err(e));
    }
}

/// The error of a failed step, saying what is left on the bdev.
fn wipe_failed(w: *mut Wipe, why: &str) -> Fail {
    // SAFETY: ours until `finish`.
    let wp = unsafe { &*w };
    let what = match wp.step {
        WipeStep::Read => "reading its superblock",
        WipeStep::Zero => "zeroing its superblock (it may still carry one)",
        WipeStep::Flush => "flushing the zeroed superblock",
    };
    Fail::new(-libc::EIO, "base_bdev", format!("'{}': {what}: {why}", wp.name))
}

extern "C" fn wipe_io_done(io: *mut sys::spdk_bdev_io, success: bool, arg: *mut std::os::raw::c_void) {
    guard("mirror wipe_superblock", (), || {
        // SAFETY: a completed I/O of ours.
        unsafe { sys::spdk_bdev_free_io(io) };
        let w = arg as *mut Wipe;
        if !success {
            let e = wipe_failed(w, "I/O error");
            return finish(w, Err(e));
        }
        // SAFETY: ours until `finish`.
        let wp = unsafe { &mut *w };
        match wp.step {
            WipeStep::Read => zero(w),
            // SAFETY: open descriptor's bdev.
            WipeStep::Zero if unsafe { sys::spdk_bdev_has_write_cache(sys::spdk_bdev_desc_get_bdev(wp.desc)) } => {
                // A volatile cache must not keep the superblock alive across a power loss.
                wp.step = WipeStep::Flush;
                submit_wipe(w);
            }
            WipeStep::Zero | WipeStep::Flush => finish(w, Ok(())),
        }
    })
}

/// The superblock's blocks are in: zero the metadata area if they hold a mirror superblock.
fn zero(w: *mut Wipe) {
    // SAFETY: ours until `finish`.
    let wp = unsafe { &mut *w };
    // SAFETY: the buffer holds at least the superblock's bytes, just read.
    let head = unsafe { std::slice::from_raw_parts(wp.buf as *const u8, SUPERBLOCK_BYTES) };
    if head[..MAGIC.len()] != MAGIC {
        return finish(w, Err(no_superblock(w)));
    }
    // SAFETY: open descriptor's bdev.
    let (bdev, n) = unsafe {
        let b = sys::spdk_bdev_desc_get_bdev(wp.desc);
        (b, sys::spdk_bdev_get_num_blocks(b))
    };
    // Claimed while we read (a mirror assembled with it): its owner's superblock now; leave it.
    if let Err(e) = unclaimed(bdev, &wp.name) {
        return finish(w, Err(e));
    }
    // Damaged or foreign-sized superblocks get their own blocks zeroed, which is what examine
    // reads; a readable one also loses its bitmap, as a delete leaves its legs.
    let meta = Superblock::decode(head)
        .ok()
        .filter(|sb| sb.block_size as u64 == wp.bs)
        .and_then(|sb| sb.geometry().ok().map(|(_, layout)| layout.meta_blocks()))
        .filter(|&m| m <= n);
    wp.blocks = meta.unwrap_or(wp.blocks).max(wp.blocks);
    noticelog!(
        "mirror: wiping the mirror superblock of bdev {} ({} blocks)",
        wp.name,
        wp.blocks
    );
    // From here on no waiting mirror may take it: a half-assembled mirror would otherwise
    // assemble from a leg that is about to lose its superblock.
    super::examine::forget(&wp.name);
    // SAFETY: the read is complete; the zeroed replacement is freed in `finish`.
    unsafe {
        sys::spdk_dma_free(wp.buf);
        wp.buf = sys::spdk_dma_zmalloc((wp.blocks * wp.bs) as usize, 0x1000, ptr::null_mut());
    }
    if wp.buf.is_null() {
        let e = wipe_failed(w, "no memory");
        return finish(w, Err(e));
    }
    wp.step = WipeStep::Zero;
    submit_wipe(w);
}

/// Releases everything the wipe holds, then answers.
fn finish(w: *mut Wipe, result: Result<(), Fail>) {
    // SAFETY: the last use of the wipe.
    let mut wp = unsafe { Box::from_raw(w) };
    // SAFETY: taken, allocated and opened in `Wipe::start` on this thread.
    unsafe {
        if !wp.ch.is_null() {
            sys::spdk_put_io_channel(wp.ch);
        }
        sys::spdk_dma_free(wp.buf);
        sys::spdk_bdev_close(wp.desc);
    }
    if let Some(done) = wp.done.take() {
        done(result);
    }
}

extern "C" fn rpc_remove_base_bdev(request: *mut sys::spdk_jsonrpc_request, params: *const sys::spdk_json_val) {
    handle(request, params, |req, p| {
        let target = p
            .only(&["base_bdev"])
            .and_then(|_| p.required_string("base_bdev"))
            .and_then(|b| {
                mirror::find_leg(&b)
                    .ok_or_else(|| Fail::new(-libc::ENODEV, "base_bdev", format!("'{b}' is not a leg of any mirror")))
            });
        let (m, leg) = match target {
            Ok(t) => t,
            Err(e) => return req.reply(Err(e)),
        };
        // The leg a rebuild or recovery writes may go (that cancels it); any other leg could be
        // its source.
        let target = m.process.lock().ok().and_then(|p| p.as_ref().and_then(|p| p.target));
        if m.process_active.load(std::sync::atomic::Ordering::Acquire) && target != Some(leg) {
            return req.reply(Err(Fail::new(
                -libc::EBUSY,
                "base_bdev",
                format!(
                    "'{}' is running a {}; remove legs once it is done",
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
            return req.reply(Err(Fail::new(
                -libc::EBUSY,
                "base_bdev",
                format!(
                    "'{}' holds the last in-sync copy of some blocks of '{}'",
                    m.slot(leg).name(),
                    m.name()
                ),
            )));
        }
        removal::remove_leg(
            m,
            leg,
            "removed over RPC",
            Box::new(move |r| req.reply(r.map(|_| json!(true)))),
        );
    })
}

extern "C" fn rpc_add_base_bdev(request: *mut sys::spdk_jsonrpc_request, params: *const sys::spdk_json_val) {
    handle(request, params, |req, p| {
        let checked = (|| {
            p.only(&["name", "base_bdev"])?;
            let name = p.required_string("name")?;
            let base = p.required_string("base_bdev")?;
            let m = mirror_named(&name)?;
            if m.process_active.load(std::sync::atomic::Ordering::Acquire) {
                return Err(Fail::new(
                    -libc::EBUSY,
                    "name",
                    format!("mirror '{name}' is already running a background process"),
                ));
            }
            if !m.legs().iter().any(|l| !l.present()) {
                return Err(Fail::new(
                    -libc::ENOSPC,
                    "name",
                    format!("mirror '{name}' has no free slot (remove a leg first)"),
                ));
            }
            if m.in_sync_mask() == 0 {
                return Err(Fail::new(
                    -libc::ENODEV,
                    "name",
                    format!("mirror '{name}' has no in-sync leg to rebuild from"),
                ));
            }
            legs::check_new_leg(m, &base, "base_bdev")?;
            Ok((m, base))
        })();
        let (m, base) = match checked {
            Ok(c) => c,
            Err(e) => return req.reply(Err(e)),
        };
        let join = move |m: &'static mirror::Mirror, slot: u32, kind: Kind| {
            join::join_leg(
                m,
                slot,
                &base.clone(),
                kind,
                false,
                Box::new(move |r| req.reply(r.map(|_| json!(true)))),
            );
        };
        let first_free = m.legs().iter().find(|l| !l.present()).map(|l| l.index).unwrap_or(0);
        if m.persist.is_none() {
            return join(m, first_free, Kind::Rebuild);
        }
        // A leg that carries this mirror's superblock goes back to its slot, recovered from
        // the bitmap if it can be (md's re-add); any other bdev is rebuilt in full.
        let base2 = p.string("base_bdev").ok().flatten().unwrap_or_default();
        let pin = teardown::Pin::new(m);
        super::examine::read_superblock(
            &base2,
            Box::new(move |r| {
                // The mirror may have been deleted while the superblock was read (the pin
                // keeps it from being freed until this is over).
                let _pin = pin;
                if m.deleting.load(std::sync::atomic::Ordering::Acquire) {
                    return req.reply(Err(Fail::new(
                        -libc::ENODEV,
                        "name",
                        "the mirror was deleted meanwhile",
                    )));
                }
                let mine = m.persist.as_ref().map(|p| p.superblock().mirror_uuid);
                let (slot, kind) = match r {
                    Ok(Some(f))
                        if Some(f.sb.mirror_uuid) == mine
                            && m.legs().get(f.sb.this_slot as usize).is_some_and(|l| !l.present()) =>
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

/// md's `--replace`: `base_bdev` keeps serving while `new_base_bdev` is copied, then the new
/// one takes its place. Answers once the copy has started.
extern "C" fn rpc_replace_base_bdev(request: *mut sys::spdk_jsonrpc_request, params: *const sys::spdk_json_val) {
    handle(request, params, |req, p| {
        let checked = (|| {
            p.only(&["name", "base_bdev", "new_base_bdev"])?;
            let name = p.string("name")?;
            let base = p.required_string("base_bdev")?;
            let new = p.required_string("new_base_bdev")?;
            let (m, leg) = mirror::find_leg(&base).ok_or_else(|| {
                Fail::new(
                    -libc::ENODEV,
                    "base_bdev",
                    format!("'{base}' is not a leg of any mirror"),
                )
            })?;
            if name.as_deref().is_some_and(|n| n != m.name()) {
                return Err(Fail::invalid(
                    "base_bdev",
                    format!(
                        "'{base}' is a leg of '{}', not of '{}'",
                        m.name(),
                        name.unwrap_or_default()
                    ),
                ));
            }
            // A running process is refused by the reshape that starts the replacement.
            Ok((m, leg, new))
        })();
        let (m, leg, new) = match checked {
            Ok(c) => c,
            Err(e) => return req.reply(Err(e)),
        };
        super::replace::replace(m, leg, new, Box::new(move |r| req.reply(r.map(|_| json!(true)))));
    })
}

/// md's `--grow --raid-devices`: RAID1 gains or loses copies; new slots take `base_bdevs`.
extern "C" fn rpc_set_num_legs(request: *mut sys::spdk_jsonrpc_request, params: *const sys::spdk_json_val) {
    handle(request, params, |req, p| {
        let checked = (|| {
            p.only(&["name", "num_legs", "base_bdevs"])?;
            let name = p.required_string("name")?;
            let n = p
                .uint("num_legs", 2, crate::placement::MAX_LEGS as u64)?
                .ok_or_else(|| bad("num_legs", "is required"))?;
            let bases = if p.0.contains_key("base_bdevs") {
                p.strings("base_bdevs")?
            } else {
                Vec::new()
            };
            Ok((mirror_named(&name)?, n as u32, bases))
        })();
        let (m, n, bases) = match checked {
            Ok(c) => c,
            Err(e) => return req.reply(Err(e)),
        };
        super::num_legs::set_num_legs(m, n, bases, Box::new(move |r| req.reply(r.map(|_| json!(true)))));
    })
}

extern "C" fn rpc_set_options(request: *mut sys::spdk_jsonrpc_request, params: *const sys::spdk_json_val) {
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
                    Fail::new(
                        -libc::EIO,
                        "rebuild_max_mb_per_s",
                        format!("in effect, but not recorded on the legs: {e}"),
                    )
                }))
            }),
        );
    })
}

extern "C" fn rpc_check(request: *mut sys::spdk_jsonrpc_request, params: *const sys::spdk_json_val) {
    handle(request, params, |req, p| {
        let checked = (|| {
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
        })();
        let (m, repair) = match checked {
            Ok(c) => c,
            Err(e) => return req.reply(Err(e)),
        };
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
    })
}

extern "C" fn rpc_set_read_policy(request: *mut sys::spdk_jsonrpc_request, params: *const sys::spdk_json_val) {
    handle(request, params, |req, p| {
        let checked = (|| {
            p.only(&["name", "read_policy", "preferred_leg"])?;
            let name = p.required_string("name")?;
            let m = mirror_named(&name)?;
            p.required_string("read_policy")?;
            let policy = read_policy(&p)?;
            if let ReadPolicy::Preferred(leg) = policy {
                if leg >= m.geo().legs() {
                    return Err(bad(
                        "preferred_leg",
                        &format!("leg {leg} does not exist (legs are 0..{})", m.geo().legs()),
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
                    Fail::new(
                        -libc::EIO,
                        "read_policy",
                        format!("in effect, but not recorded on the legs: {e}"),
                    )
                }))
            }),
        );
    })
}
