//! The JSON-RPC client: written by hand over `UnixStream` (one connection per request, as
//! `rpc.py` does) so that tests need no Python and can send malformed bytes on purpose.

use std::fmt;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// A JSON-RPC error object returned by SPDK (`code` is a negative errno or a JSON-RPC code such
/// as -32601 "Method not found", -32602 invalid params, -32603 internal error, -32700 parse
/// error), or a transport failure, which carries [`RpcError::TRANSPORT`] as its code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
}

impl RpcError {
    /// Code used for failures that are not JSON-RPC error responses (connect failure, timeout,
    /// connection closed, unparsable response). Outside every range SPDK uses.
    pub const TRANSPORT: i64 = -1_000_000;
    /// JSON-RPC "Method not found".
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// JSON-RPC "Invalid params".
    pub const INVALID_PARAMS: i64 = -32602;
    /// JSON-RPC "Internal error" (SPDK also uses it for `spdk_json_decode_object failed`).
    pub const INTERNAL_ERROR: i64 = -32603;

    fn transport(message: impl Into<String>) -> RpcError {
        RpcError {
            code: Self::TRANSPORT,
            message: message.into(),
        }
    }

    /// True if this is not an answer from SPDK but a failure to get one.
    pub fn is_transport(&self) -> bool {
        self.code == Self::TRANSPORT
    }
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_transport() {
            write!(f, "RPC transport error: {}", self.message)
        } else {
            write!(f, "RPC error {}: {}", self.code, self.message)
        }
    }
}

impl std::error::Error for RpcError {}

/// Reads from `stream` until the accumulated bytes start with one complete JSON value, and
/// returns it. Bounded by `deadline`.
fn read_one_value(stream: &mut UnixStream, deadline: Instant) -> Result<Value, String> {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        if !buf.is_empty() {
            let mut values = serde_json::Deserializer::from_slice(&buf).into_iter::<Value>();
            match values.next() {
                Some(Ok(v)) => return Ok(v),
                Some(Err(e)) if e.is_eof() => {} // incomplete: keep reading
                Some(Err(e)) => return Err(format!("unparsable response ({e}): {}", String::from_utf8_lossy(&buf))),
                None => {} // only whitespace so far
            }
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(format!(
                "timed out waiting for a response (got so far: {:?})",
                String::from_utf8_lossy(&buf)
            ));
        }
        let remaining = (deadline - now).max(Duration::from_millis(1));
        stream
            .set_read_timeout(Some(remaining))
            .map_err(|e| format!("set_read_timeout: {e}"))?;
        match stream.read(&mut chunk) {
            Ok(0) if buf.is_empty() => return Err("connection closed without a response".into()),
            Ok(0) => {
                return Err(format!(
                    "connection closed with a partial response: {:?}",
                    String::from_utf8_lossy(&buf)
                ))
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                ) => {} // the deadline check above decides
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

/// Connects to `socket`, writes `bytes`, reads one JSON value. Everything within `timeout`.
/// With `then_eof` the sending side is closed after the write: a truncated request then ends in
/// EOF (the server drops the connection) instead of the server waiting for the rest of it.
pub(super) fn exchange(socket: &Path, bytes: &[u8], timeout: Duration, then_eof: bool) -> Result<Value, String> {
    let deadline = Instant::now() + timeout;
    let mut stream = UnixStream::connect(socket).map_err(|e| format!("connect {}: {e}", socket.display()))?;
    stream
        .set_write_timeout(Some(timeout.max(Duration::from_millis(1))))
        .map_err(|e| format!("set_write_timeout: {e}"))?;
    stream.write_all(bytes).map_err(|e| format!("write: {e}"))?;
    if then_eof {
        stream
            .shutdown(std::net::Shutdown::Write)
            .map_err(|e| format!("shutdown: {e}"))?;
    } else {
        stream.flush().map_err(|e| format!("flush: {e}"))?;
    }
    read_one_value(&mut stream, deadline)
}

/// Sends one JSON-RPC 2.0 request to `socket` and decodes the response.
/// `params` of `Value::Null` is omitted from the request.
pub fn rpc_call(socket: &Path, id: u64, method: &str, params: Value, timeout: Duration) -> Result<Value, RpcError> {
    let mut req = json!({"jsonrpc": "2.0", "method": method, "id": id});
    if !params.is_null() {
        req["params"] = params;
    }
    let bytes = serde_json::to_vec(&req).expect("serialising a Value cannot fail");
    let resp = exchange(socket, &bytes, timeout, false).map_err(|e| RpcError::transport(format!("{method}: {e}")))?;
    if resp.get("id") != Some(&json!(id)) {
        return Err(RpcError::transport(format!(
            "{method}: response id does not match request id {id}: {resp}"
        )));
    }
    if let Some(err) = resp.get("error") {
        return Err(RpcError {
            code: err.get("code").and_then(Value::as_i64).unwrap_or(RpcError::TRANSPORT),
            message: err
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| err.to_string()),
        });
    }
    match resp.get("result") {
        Some(r) => Ok(r.clone()),
        None => Err(RpcError::transport(format!(
            "{method}: response has neither result nor error: {resp}"
        ))),
    }
}
