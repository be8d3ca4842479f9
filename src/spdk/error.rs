//! The glue's error for management calls: a negative errno and a message naming the field at
//! fault (what an RPC reply carries).

/// An error for an RPC: negative errno and a message naming the field.
#[derive(Debug)]
pub struct Fail(pub i32, pub String);
