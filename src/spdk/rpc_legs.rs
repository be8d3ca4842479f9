//! The RPC methods on a mirror's legs: `bdev_mirror_add_base_bdev`, `_remove_base_bdev`,
//! `_replace_base_bdev` and `_set_num_legs`.

use spdk_sys as sys;

use super::error::Fail;
use super::mirror::{self};
use super::process::Kind;
use super::rpc::{bad, handle_checked, mirror_named, not_a_waiting_leg};
use super::{join, legs, removal, replace, teardown};

pub extern "C" fn rpc_remove_base_bdev(request: *mut sys::spdk_jsonrpc_request, params: *const sys::spdk_json_val) {
    handle_checked(
        request,
        params,
        |p| {
            p.only(&["base_bdev"])?;
            let b = p.required_string("base_bdev")?;
            let Some((m, leg)) = mirror::find_leg(&b) else {
                // The replacement of a running replace: removing it stops the replace.
                return match mirror::find_replacement(&b) {
                    Some(m) => Ok(Removing::Replacement(m)),
                    None => not_a_waiting_leg(&b, "base_bdev").and_then(|()| {
                        Err(Fail::new(
                            -libc::ENODEV,
                            "base_bdev",
                            format!("'{b}' is not a leg of any mirror"),
                        ))
                    }),
                };
            };
            // The leg a rebuild or recovery writes may go (that cancels it); any other leg could
            // be its source.
            let running = m
                .process
                .lock()
                .ok()
                .and_then(|p| p.as_ref().map(|p| (p.kind.name(), p.target)));
            if m.process_active.load(std::sync::atomic::Ordering::Acquire)
                && running.and_then(|(_, target)| target) != Some(leg)
            {
                return Err(Fail::new(
                    -libc::EBUSY,
                    "base_bdev",
                    format!(
                        "'{}' is running a {}; remove legs once it is done",
                        m.name(),
                        running.map_or("process", |(kind, _)| kind)
                    ),
                ));
            }
            // Never take the last good copy of any block (mdadm's "faillast" rule, per block).
            let left = m.in_sync_mask() & !(1 << leg);
            if !m.every_block_covered(left) {
                return Err(Fail::new(
                    -libc::EBUSY,
                    "base_bdev",
                    format!(
                        "'{}' holds the last in-sync copy of some blocks of '{}'",
                        m.slot(leg).name(),
                        m.name()
                    ),
                ));
            }
            Ok(Removing::Leg(m, leg))
        },
        |req, removing| match removing {
            Removing::Leg(m, leg) => removal::remove_leg_on_request(m, leg, req.answer_true()),
            Removing::Replacement(m) => replace::stop(m, req.answer_true()),
        },
    )
}

/// What `bdev_mirror_remove_base_bdev` takes out.
enum Removing {
    /// A leg (its slot).
    Leg(&'static mirror::Mirror, u32),
    /// The replacement of a running replace (it stops).
    Replacement(&'static mirror::Mirror),
}

pub extern "C" fn rpc_add_base_bdev(request: *mut sys::spdk_jsonrpc_request, params: *const sys::spdk_json_val) {
    handle_checked(
        request,
        params,
        |p| {
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
            not_a_waiting_leg(&base, "base_bdev")?;
            Ok((m, base))
        },
        |req, (m, base)| {
            let base2 = base.clone();
            let join = move |m: &'static mirror::Mirror, slot: u32, kind: Kind| {
                join::join_leg(m, slot, &base, kind, false, req.answer_true());
            };
            let first_free = m.legs().iter().find(|l| !l.present()).map(|l| l.index).unwrap_or(0);
            if m.persist.is_none() {
                return join(m, first_free, Kind::Rebuild);
            }
            // A leg that carries this mirror's superblock goes back to its slot, recovered from
            // the bitmap if it can be (md's re-add); any other bdev is rebuilt in full.
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
        },
    )
}

/// md's `--replace`: `base_bdev` keeps serving while `new_base_bdev` is copied, then the new
/// one takes its place. Answers once the copy has started.
pub extern "C" fn rpc_replace_base_bdev(request: *mut sys::spdk_jsonrpc_request, params: *const sys::spdk_json_val) {
    handle_checked(
        request,
        params,
        |p| {
            p.only(&["name", "base_bdev", "new_base_bdev"])?;
            let name = p.string("name")?;
            let base = p.required_string("base_bdev")?;
            let new = p.required_string("new_base_bdev")?;
            not_a_waiting_leg(&base, "base_bdev")?;
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
            not_a_waiting_leg(&new, "new_base_bdev")?;
            // A running process is refused by the reshape that starts the replacement.
            Ok((m, leg, new))
        },
        |req, (m, leg, new)| {
            super::replace::replace(m, leg, new, req.answer_true());
        },
    )
}

/// md's `--grow --raid-devices`: RAID1 gains or loses copies; new slots take `base_bdevs`.
pub extern "C" fn rpc_set_num_legs(request: *mut sys::spdk_jsonrpc_request, params: *const sys::spdk_json_val) {
    handle_checked(
        request,
        params,
        |p| {
            p.only(&["name", "num_legs", "base_bdevs"])?;
            let name = p.required_string("name")?;
            let n = p
                .uint("num_legs", 2, crate::placement::MAX_LEGS as u64)?
                .ok_or_else(|| bad("num_legs", "is required"))?;
            let bases = if p.has("base_bdevs") {
                p.strings("base_bdevs")?
            } else {
                Vec::new()
            };
            for b in &bases {
                not_a_waiting_leg(b, "base_bdevs")?;
            }
            Ok((mirror_named(&name)?, n as u32, bases))
        },
        |req, (m, n, bases)| {
            super::num_legs::set_num_legs(m, n, bases, req.answer_true());
        },
    )
}
