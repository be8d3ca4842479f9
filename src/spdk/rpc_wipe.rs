//! `bdev_mirror_wipe_superblock`: zeroes the superblock of a bdev that is no mirror's leg, so
//! it stops assembling (mdadm's `--zero-superblock`).

use std::ffi::CString;
use std::ptr;

use spdk_sys as sys;

use super::callback::{end_chain, start_chain};
use super::error::Fail;
use super::ffi::{guard, noticelog};
use super::mirror::bdev_by_name;
use super::rpc::{bad, handle_checked};
use super::scratch::ScratchBdev;
use crate::superblock::{Superblock, MAGIC, SUPERBLOCK_BYTES};

pub extern "C" fn rpc_wipe_superblock(request: *mut sys::spdk_jsonrpc_request, params: *const sys::spdk_json_val) {
    handle_checked(
        request,
        params,
        |p| {
            p.only(&["base_bdev"])?;
            let name = p.required_string("base_bdev")?;
            let Some(bdev) = bdev_by_name(&name) else {
                return Err(Fail::new(-libc::ENODEV, "base_bdev", format!("no bdev named '{name}'")));
            };
            unclaimed(bdev, &name)?;
            Ok(name)
        },
        |req, name| Wipe::start(name, req.answer_true()),
    )
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
pub type WipeDone = Box<dyn FnOnce(Result<(), Fail>)>;

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
    io: ScratchBdev,
    /// Blocks zeroed: the superblock's metadata area (superblock and bitmap) when it is
    /// readable, else just the superblock's blocks.
    blocks: u64,
    step: WipeStep,
    done: Option<WipeDone>,
}

impl Wipe {
    /// Opens `name` read-write and reads its superblock's blocks.
    fn start(name: String, done: WipeDone) {
        let Ok(cname) = CString::new(name.as_str()) else {
            return done(Err(bad("base_bdev", "must not contain NUL")));
        };
        let sb_blocks = |bs: u64| (SUPERBLOCK_BYTES as u64).div_ceil(bs);
        let io = match ScratchBdev::open(&cname, true, sb_blocks) {
            Ok(io) => io,
            Err(rc) if rc == -libc::EPERM => {
                return done(Err(Fail::new(
                    -libc::EBUSY,
                    "base_bdev",
                    format!("'{name}' is claimed; release it first"),
                )))
            }
            Err(rc) => {
                return done(Err(Fail::new(
                    rc,
                    "base_bdev",
                    format!("cannot open '{name}': {}", errno_text(rc)),
                )))
            }
        };
        let (ready, n, blocks) = (io.ready(), io.num_blocks(), sb_blocks(io.bs));
        let w = start_chain(Wipe {
            name,
            io,
            blocks,
            step: WipeStep::Read,
            done: Some(done),
        });
        if !ready {
            return finish(
                w,
                Err(Fail::new(
                    -libc::ENOMEM,
                    "base_bdev",
                    "no memory to read the superblock",
                )),
            );
        }
        if n < blocks {
            return finish(w, Err(no_superblock(w)));
        }
        submit_wipe(w);
    }
}

/// Wipes the superblocks of `names`, one after the other; `done` gets the first failure once
/// every one was tried.
pub fn wipe_each(mut names: Vec<String>, failed: Option<Fail>, done: WipeDone) {
    let Some(name) = names.pop() else {
        return done(failed.map_or(Ok(()), Err));
    };
    Wipe::start(name, Box::new(move |r| wipe_each(names, failed.or(r.err()), done)));
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
            WipeStep::Read => {
                sys::spdk_bdev_read_blocks(wp.io.desc, wp.io.ch, wp.io.buf, 0, wp.blocks, Some(wipe_io_done), arg)
            }
            WipeStep::Zero => {
                sys::spdk_bdev_write_blocks(wp.io.desc, wp.io.ch, wp.io.buf, 0, wp.blocks, Some(wipe_io_done), arg)
            }
            WipeStep::Flush => sys::spdk_bdev_flush_blocks(wp.io.desc, wp.io.ch, 0, wp.blocks, Some(wipe_io_done), arg),
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
            WipeStep::Zero if unsafe { sys::spdk_bdev_has_write_cache(wp.io.bdev()) } => {
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
    let head = unsafe { std::slice::from_raw_parts(wp.io.buf as *const u8, SUPERBLOCK_BYTES) };
    if head[..MAGIC.len()] != MAGIC {
        return finish(w, Err(no_superblock(w)));
    }
    let (bdev, n) = (wp.io.bdev(), wp.io.num_blocks());
    // Claimed while we read (a mirror assembled with it): its owner's superblock now; leave it.
    if let Err(e) = unclaimed(bdev, &wp.name) {
        return finish(w, Err(e));
    }
    // Damaged or foreign-sized superblocks get their own blocks zeroed, which is what examine
    // reads; a readable one also loses its bitmap, as a delete leaves its legs.
    let meta = Superblock::decode(head)
        .ok()
        .filter(|sb| sb.block_size as u64 == wp.io.bs)
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
    // (The read is complete.) A zeroed buffer of the blocks to wipe.
    if !wp.io.regrow(wp.blocks) {
        let e = wipe_failed(w, "no memory");
        return finish(w, Err(e));
    }
    wp.step = WipeStep::Zero;
    submit_wipe(w);
}

/// Releases everything the wipe holds, then answers.
fn finish(w: *mut Wipe, result: Result<(), Fail>) {
    // SAFETY: the last use of the wipe.
    let mut wp = unsafe { end_chain(w) };
    let done = wp.done.take();
    // The bdev is let go of before the answer.
    drop(wp);
    if let Some(done) = done {
        done(result);
    }
}
