//! The glue's one error type: what a management call (an RPC, a creation, a leg change) answers
//! when it fails: a negative errno and the field at fault, as SPDK's RPC errors carry them.

use std::borrow::Cow;

/// A failed management call. Shown as `field: message` (the JSON-RPC error message), or the
/// message alone when no single field is at fault; `errno` is the JSON-RPC error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{msg}", if field.is_empty() { String::new() } else { format!("{field}: ") })]
pub struct Fail {
    /// A negative errno (or a JSON-RPC error code).
    pub errno: i32,
    /// The parameter at fault (`base_bdevs`, `name`, ...); empty when none is.
    pub field: Cow<'static, str>,
    pub msg: String,
}

impl Fail {
    pub fn new(errno: i32, field: impl Into<Cow<'static, str>>, msg: impl Into<String>) -> Fail {
        Fail {
            errno,
            field: field.into(),
            msg: msg.into(),
        }
    }

    /// An invalid value of `field` (`-EINVAL`).
    pub fn invalid(field: impl Into<Cow<'static, str>>, msg: impl Into<String>) -> Fail {
        Fail::new(-libc::EINVAL, field, msg)
    }

    /// Not tied to one field (`-errno` from SPDK, an internal step that failed).
    pub fn plain(errno: i32, msg: impl Into<String>) -> Fail {
        Fail::new(errno, "", msg)
    }

    /// An error of the pure core (geometry, layout, read policy), whose text names its field
    /// first, `field: what`, as the RPC errors do.
    pub fn named(errno: i32, text: impl std::fmt::Display) -> Fail {
        let text = text.to_string();
        match text.split_once(": ") {
            Some((field, what)) if !field.is_empty() && field.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') => {
                Fail::new(errno, field.to_string(), what)
            }
            _ => Fail::plain(errno, text),
        }
    }

    /// The same failure reported against another field: a leg opened for the `base_bdev` of
    /// one call is the `base_bdevs` of another.
    pub fn in_field(self, field: impl Into<Cow<'static, str>>) -> Fail {
        Fail {
            field: field.into(),
            ..self
        }
    }
}
