//! The HTTP API of the heart: one `match` over method and path segments.
//!
//! | route | answers |
//! |---|---|
//! | `GET /health` | 200 `{"status":"ok","version":...}` (no token) |
//! | `GET /runtimes` | 200 `{name: [versions]}` |
//! | `GET /instances` | 200 `{"instances": [...]}` |
//! | `POST /instances` | 201 the instance (`REGISTERED`); 400 bad JSON, wrong field type, unknown field, bad id; 409 id in use or port range exhausted; 422 unknown runtime or version, bad runtime parameters, missing or unusable source |
//! | `GET /instances/ID` | 200 the instance; 404 |
//! | `POST /instances/ID/start` | 200 the instance (`RUNNING`); 404; 409 wrong state, or port already in use (then `ERROR`); 500 start failed (`ERROR`, the reason and the log tail in `error`) |
//! | `POST /instances/ID/stop` | 200 the instance (`STOPPED`); 404; 409 `REGISTERED` or `STOPPED`; 500 it could not be stopped |
//! | `DELETE /instances/ID` | 200 the instance (`DEREGISTERED`, then gone); 404; 409 `STARTING` or `RUNNING` |
//! | `GET /instances/ID/log[?tail=N]` | 200 text/plain (the whole log up to its last MiB, or its last N lines); 404 |
//! | `GET`/`POST /instance/exit/ID/KEY/CODE` | 200 `{"state": ...}` (no token); 403 stale or spent key; 404 unknown instance; 400 bad code |
//!
//! Every route but `/health` and the exit report needs `Authorization:
//! Bearer TOKEN` (401 without it, checked before anything else). Unknown
//! paths are 404, a known path with another method 405, a body over
//! [`BODY_LIMIT`] 413. Every error body is `{"error": "..."}`; a start
//! that ends in `ERROR` adds `"instance"`, the instance as it is then.
//! An instance id in a path that is not `[A-Za-z0-9-]{1,64}` is 400.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use serde::Serialize;
use serde_json::json;
use tiny_http::{Header, Method, Request, Response};

use super::instance::{Node, Origin};
use crate::error::{Error, Refusal};
use crate::protocol::{self, InstanceId, State};
use crate::secret::secret_eq;

/// The largest request body accepted.
pub(crate) const BODY_LIMIT: usize = 1 << 20;

/// The largest `tail` a log request may ask for.
const TAIL_MAX: usize = 1_000_000;

/// What a handler answers.
enum Reply {
    Json(u16, Vec<u8>),
    Text(String),
}

/// Why a request is not done: the HTTP edge's own refusals, or an error
/// of the node (a [`Refusal`], or a failure answered 500).
#[derive(Debug)]
enum Rejection {
    /// No `Authorization: Bearer TOKEN` with the right token.
    Unauthorised,
    /// A known path with another method.
    MethodNotAllowed(Method),
    /// What the node answered.
    Node(Error),
}

impl From<Error> for Rejection {
    fn from(err: Error) -> Rejection {
        Rejection::Node(err)
    }
}

fn json_reply(status: u16, value: &impl Serialize) -> Reply {
    match serde_json::to_vec(value) {
        Ok(bytes) => Reply::Json(status, bytes),
        Err(e) => error_reply(&Rejection::Node(Error::json("answer", e))),
    }
}

/// The HTTP status of a refusal: the one place that chooses it.
fn status_of(refusal: &Refusal) -> u16 {
    match refusal {
        Refusal::BadRequest(_) => 400,
        Refusal::Forbidden(_) => 403,
        Refusal::NotFound(_) => 404,
        Refusal::Conflict(_) => 409,
        Refusal::TooLarge(_) => 413,
        Refusal::Unprocessable(_) => 422,
        Refusal::Failed { .. } => 500,
    }
}

/// The status and message of an error answer.
fn status_and_message(rejection: &Rejection) -> (u16, String) {
    match rejection {
        Rejection::Unauthorised => (401, "missing or wrong API token".into()),
        Rejection::MethodNotAllowed(method) => (405, format!("method {method} not allowed here")),
        Rejection::Node(Error::Refused(refusal)) => (status_of(refusal), refusal.to_string()),
        Rejection::Node(other) => (500, other.to_string()),
    }
}

fn error_reply(rejection: &Rejection) -> Reply {
    if let Rejection::Node(Error::Refused(
        refusal @ Refusal::Failed {
            message,
            instance: Some(instance),
        },
    )) = rejection
    {
        return json_reply(
            status_of(refusal),
            &json!({"error": message, "instance": instance}),
        );
    }
    let (status, message) = status_and_message(rejection);
    let body = serde_json::to_vec(&protocol::ApiError { error: message })
        .unwrap_or_else(|_| b"{\"error\":\"internal error\"}".to_vec());
    Reply::Json(status, body)
}

/// tiny_http reads a body up to this size before it hands the request
/// over; a larger one is read from the socket by whoever handles it.
const BUFFERED_BODY: usize = 1024;

/// Most requests whose body is read in a thread of its own at once.
const BODY_THREADS_MAX: usize = 64;

/// Threads reading a request body, and those of them past the read.
static BODY_THREADS: AtomicUsize = AtomicUsize::new(0);
static BODY_PROCESSING: AtomicUsize = AtomicUsize::new(0);

/// Handles one request and answers it; errors answering (a client that
/// hung up) are ignored.
///
/// A request whose body is still to be read from the socket is handled in
/// a thread of its own (up to [`BODY_THREADS_MAX`] at once), so that a
/// client that stalls in the middle of its body never holds one of the
/// bounded pool of workers.
pub(crate) fn handle(node: &Arc<Node>, mut request: Request) {
    if request.body_length().is_some_and(|n| n > BODY_LIMIT) {
        let rejection = if needs_token(request.url()) && !authorised(node, &request) {
            Rejection::Unauthorised
        } else {
            too_large().into()
        };
        refuse_oversized(request, &rejection);
        return;
    }
    let chunked = request
        .headers()
        .iter()
        .any(|h| h.field.equiv("Transfer-Encoding"));
    let unread = request.body_length().map_or(chunked, |n| n > BUFFERED_BODY);
    if !unread {
        let reply = route(node, &mut request, None);
        let _ = request.respond(response_of(reply));
        return;
    }
    if BODY_THREADS.fetch_add(1, Ordering::SeqCst) >= BODY_THREADS_MAX {
        BODY_THREADS.fetch_sub(1, Ordering::SeqCst);
        respond_after_body(node, request);
        return;
    }
    // The request goes to the thread through a channel, so that it stays
    // here when the thread cannot be started.
    let (tx, rx) = mpsc::channel::<Request>();
    let thread_node = Arc::clone(node);
    let spawned = thread::Builder::new()
        .name("request-body".into())
        .spawn(move || {
            if let Ok(request) = rx.recv() {
                respond_after_body(&thread_node, request);
            }
            BODY_THREADS.fetch_sub(1, Ordering::SeqCst);
        });
    match spawned {
        Ok(_) => {
            if let Err(mpsc::SendError(request)) = tx.send(request) {
                respond_after_body(node, request);
            }
        }
        Err(_) => {
            BODY_THREADS.fetch_sub(1, Ordering::SeqCst);
            respond_after_body(node, request);
        }
    }
}

/// Reads the body of `request`, then routes and answers it; counted in
/// [`BODY_PROCESSING`] once the body is in.
fn respond_after_body(node: &Node, mut request: Request) {
    let body = read_body(&mut request);
    BODY_PROCESSING.fetch_add(1, Ordering::SeqCst);
    let reply = route(node, &mut request, Some(body));
    let _ = request.respond(response_of(reply));
    BODY_PROCESSING.fetch_sub(1, Ordering::SeqCst);
}

/// Waits, at most `timeout`, for the requests whose body was read in a
/// thread of their own and which are still being handled (a register
/// copying its source); those still waiting for their body are dropped.
pub(crate) fn wait_for_body_requests(timeout: Duration) -> bool {
    crate::wait::until(timeout, || BODY_PROCESSING.load(Ordering::SeqCst) == 0)
}

fn response_of(reply: Reply) -> Response<std::io::Cursor<Vec<u8>>> {
    let (status, body, content_type) = match reply {
        Reply::Json(status, body) => (status, body, "application/json"),
        Reply::Text(text) => (200, text.into_bytes(), "text/plain; charset=utf-8"),
    };
    let mut response = Response::from_data(body).with_status_code(status);
    if let Ok(header) = Header::from_bytes(&b"Content-Type"[..], content_type.as_bytes()) {
        response.add_header(header);
    }
    response
}

/// The largest unread body that is drained after a 413.
const DRAIN_MAX: usize = 64 << 20;

/// Answers 413 to a request whose declared body is over the limit.
///
/// tiny_http drains an unread body when the request is dropped, reading it
/// into a zeroed buffer as large as what is left to read; a buffer larger
/// than the kernel will map aborts the process. So the body is never left
/// to that drain unless it is small enough: up to [`DRAIN_MAX`] the answer
/// and the drain run in a short-lived thread (the worker goes on at once);
/// beyond it the request is turned into a raw stream that is never dropped
/// (its connection stays open until the heart exits) rather than risk the
/// abort. That answer has the status (413, or 401 without the token) and
/// the JSON error but, as a tiny_http upgrade, no `Content-Length`.
fn refuse_oversized(request: Request, rejection: &Rejection) {
    let declared = request.body_length().unwrap_or(0);
    if declared <= DRAIN_MAX {
        let reply = error_reply(rejection);
        let spawned = std::thread::Builder::new()
            .name("drain".into())
            .spawn(move || {
                let _ = request.respond(response_of(reply));
            });
        if let Err(e) = spawned {
            crate::cli::warn(super::PROG, format!("unable to start a drain thread: {e}"));
        }
    } else {
        // The status line and headers go out with the upgrade; the body
        // (whose length the client cannot know) follows on the raw stream.
        let (status, message) = status_and_message(rejection);
        let body = serde_json::to_vec(&protocol::ApiError { error: message }).unwrap_or_default();
        let head = Response::empty(status);
        let mut stream = request.upgrade("close", head);
        let _ = stream.write_all(&body).and_then(|()| stream.flush());
        std::mem::forget(stream);
    }
}

/// True for every path but `/health` and the exit reports.
fn needs_token(url: &str) -> bool {
    let path = url.split_once('?').map_or(url, |(path, _)| path);
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    !matches!(segments.as_slice(), ["health"] | ["instance", "exit", ..])
}

/// True when the request carries `Authorization: Bearer TOKEN`.
fn authorised(node: &Node, request: &Request) -> bool {
    request
        .headers()
        .iter()
        .filter(|h| h.field.equiv("Authorization"))
        .any(|h| {
            h.value
                .as_str()
                .strip_prefix("Bearer ")
                .is_some_and(|t| secret_eq(t.trim().as_bytes(), node.token().as_bytes()))
        })
}

/// Reads the body, at most [`BODY_LIMIT`] bytes (a declared length over
/// the limit never gets here: see [`refuse_oversized`]).
fn read_body(request: &mut Request) -> Result<Vec<u8>, Error> {
    let mut body = Vec::new();
    request
        .as_reader()
        .take(BODY_LIMIT as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| {
            Error::refused(
                Refusal::BadRequest,
                format!("unable to read the request body: {e}"),
            )
        })?;
    if body.len() > BODY_LIMIT {
        return Err(too_large());
    }
    Ok(body)
}

fn too_large() -> Error {
    Error::refused(
        Refusal::TooLarge,
        format!("request body larger than {BODY_LIMIT} bytes"),
    )
}

fn parse_id(id: &str) -> Result<InstanceId, Error> {
    id.parse()
        .map_err(|e: protocol::InvalidId| Error::refused(Refusal::BadRequest, e.to_string()))
}

/// `tail=N` from a query string.
fn tail_param(query: &str) -> Result<Option<usize>, Error> {
    for pair in query.split('&') {
        if let Some(value) = pair.strip_prefix("tail=") {
            return match value.parse::<usize>() {
                Ok(n) if n <= TAIL_MAX => Ok(Some(n)),
                _ => Err(Error::refused(
                    Refusal::BadRequest,
                    format!("invalid tail {value:?}: expected 0 to {TAIL_MAX}"),
                )),
            };
        }
    }
    Ok(None)
}

/// The exit code in the path of an exit report: 0 to 255, as a
/// supervisor reports it (the key is kept for a report refused here).
fn exit_code_param(code: &str) -> Result<i32, Error> {
    code.parse()
        .ok()
        .filter(|c| (0..=255).contains(c))
        .ok_or_else(|| {
            Error::refused(
                Refusal::BadRequest,
                format!("invalid exit code {code:?}: expected 0 to 255"),
            )
        })
}

/// The `state=STATE` filter of `GET /instances`.
fn state_param(query: &str) -> Result<Option<State>, Error> {
    for pair in query.split('&') {
        if let Some(value) = pair.strip_prefix("state=") {
            return serde_json::from_value(serde_json::Value::String(value.to_ascii_uppercase()))
                .map(Some)
                .map_err(|_| {
                    Error::refused(
                        Refusal::BadRequest,
                        format!("invalid state {value:?}: expected one of REGISTERED, STARTING, RUNNING, SUSPENDED, STOPPED, ERROR"),
                    )
                });
        }
    }
    Ok(None)
}

/// Routes a request; `body` is its body when already read.
fn route(node: &Node, request: &mut Request, body: Option<Result<Vec<u8>, Error>>) -> Reply {
    let url = request.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((url.as_str(), ""));
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let method = request.method().clone();
    if needs_token(path) && !authorised(node, request) {
        return error_reply(&Rejection::Unauthorised);
    }
    let result = dispatch(node, request, body, &method, &segments, query);
    result.unwrap_or_else(|rejection| error_reply(&rejection))
}

fn dispatch(
    node: &Node,
    request: &mut Request,
    body: Option<Result<Vec<u8>, Error>>,
    method: &Method,
    segments: &[&str],
    query: &str,
) -> Result<Reply, Rejection> {
    use Method::{Delete, Get, Post};
    match (method, segments) {
        (Get, ["health"]) => Ok(json_reply(
            200,
            &json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}),
        )),
        (Get, ["runtimes"]) => Ok(json_reply(200, &node.runtimes())),
        (Get, ["instances"]) => Ok(json_reply(200, &node.list(state_param(query)?))),
        (Post, ["instances"]) => {
            let body = match body {
                Some(body) => body?,
                None => read_body(request)?,
            };
            Ok(json_reply(201, &node.register(&body)?))
        }
        (Get, ["instances", id]) => {
            let id = &parse_id(id)?;
            Ok(json_reply(200, &node.show(id)?))
        }
        (Delete, ["instances", id]) => {
            let id = &parse_id(id)?;
            Ok(json_reply(200, &node.deregister(id)?))
        }
        (Post, ["instances", id, "start"]) => {
            let id = &parse_id(id)?;
            match node.start(id, Origin::Api) {
                Ok(view) => Ok(json_reply(200, &view)),
                Err(Error::Refused(
                    refusal @ (Refusal::Conflict(_) | Refusal::Unprocessable(_)),
                )) => {
                    let instance = node.show(id).ok();
                    Ok(json_reply(
                        status_of(&refusal),
                        &json!({"error": refusal.to_string(), "instance": instance}),
                    ))
                }
                Err(e) => Err(e.into()),
            }
        }
        (Post, ["instances", id, "stop"]) => {
            let id = &parse_id(id)?;
            Ok(json_reply(200, &node.stop(id)?))
        }
        (Get, ["instances", id, "log"]) => {
            let id = &parse_id(id)?;
            let tail = tail_param(query)?;
            Ok(Reply::Text(node.log(id, tail)?))
        }
        (Get | Post, ["instance", "exit", id, key, code]) => {
            let id = &id
                .parse()
                .map_err(|_| Error::refused(Refusal::NotFound, format!("no instance {id}")))?;
            let code = exit_code_param(code)?;
            let state = node.exit_report(id, key, code)?;
            Ok(json_reply(200, &json!({"state": state})))
        }
        (
            _,
            ["health"]
            | ["runtimes"]
            | ["instances"]
            | ["instances", _]
            | ["instances", _, "start" | "stop" | "log"]
            | ["instance", "exit", _, _, _],
        ) => Err(Rejection::MethodNotAllowed(method.clone())),
        _ => Err(Error::refused(Refusal::NotFound, "no such route").into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_is_parsed_and_bounded() {
        assert_eq!(tail_param("").unwrap(), None);
        assert_eq!(tail_param("x=1&tail=5").unwrap(), Some(5));
        assert!(tail_param("tail=-1").is_err());
        assert!(tail_param("tail=99999999999").is_err());
    }

    #[test]
    fn exit_codes_are_parsed_here() {
        assert_eq!(exit_code_param("3").unwrap(), 3);
        let err = exit_code_param("abc").unwrap_err();
        assert!(
            matches!(err, Error::Refused(Refusal::BadRequest(_))),
            "{err}"
        );
    }

    #[test]
    fn every_rejection_has_its_status() {
        let statuses = [
            (Rejection::Unauthorised, 401),
            (Rejection::MethodNotAllowed(Method::Put), 405),
            (Error::refused(Refusal::NotFound, "x").into(), 404),
            (Error::refused(Refusal::Conflict, "x").into(), 409),
            (Error::refused(Refusal::Unprocessable, "x").into(), 422),
            (Error::Http("x".into()).into(), 500),
        ];
        for (rejection, status) in statuses {
            assert_eq!(status_and_message(&rejection).0, status, "{rejection:?}");
        }
    }

    #[test]
    fn ids_in_paths_are_checked() {
        assert!(parse_id("web-1").is_ok());
        assert!(parse_id("..").is_err());
        assert!(parse_id("a%2Fb").is_err());
    }
}
