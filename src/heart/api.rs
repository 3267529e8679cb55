//! The HTTP API of the heart: one `match` over method and path segments.
//!
//! | route | answers |
//! |---|---|
//! | `GET /health` | 200 `{"status":"ok","version":...,"isolation":...}` (no token) |
//! | `GET /runtimes` | 200 `{name: [versions]}` |
//! | `GET /instances` | 200 `{"instances": [...]}` |
//! | `POST /instances` | 201 the instance (`REGISTERED`); 400 bad JSON, wrong field type, unknown field, bad id; 409 id in use or port range exhausted; 422 unknown runtime or version, bad runtime parameters, missing or unusable source |
//! | `GET /instances/ID` | 200 the instance; 404 |
//! | `POST /instances/ID/start` | 200 the instance (`RUNNING`; with `"already": true` when it was `RUNNING` already); 404; 409 wrong state, or port already in use (then `ERROR`); 500 start failed (`ERROR`, the reason and the log tail in `error`) |
//! | `POST /instances/ID/stop` | 200 the instance (`STOPPED`; with `"already": true` when it was `STOPPED` or `REGISTERED` already); 404; 500 it could not be stopped |
//! | `POST /instances/start-all` | 200 `{"started": [...], "failed": [{"instance_id", "error"}]}`: every instance whose desired state is `running` and that is not `RUNNING` |
//! | `POST /instances/ID/restart` | like start, after a stop; same port |
//! | `POST /instances/ID/signal` | `{"signal": "HUP"}` forwarded through the supervisor: 200 the instance; 400 a signal that may not be sent; 404; 409 not running under a live supervisor, or run by the managed Apache |
//! | `PATCH /instances/ID` | 200 the updated instance; 400 malformed or unknown field; 404; 422 version or parameters invalid |
//! | `PUT /instances/ID/source` | `{"source", "manifest"?}`: redeploy in place, answered like a start; 404; 422 bad source or manifest |
//! | `DELETE /instances/ID` | 200 the instance (`DEREGISTERED`, then gone); 404; 409 `STARTING` or `RUNNING` |
//! | `GET /instances/ID/log[?tail=N\|?since=T][&stream=access]` | 200 text/plain (the whole log up to its last MiB, or its last N lines, or its lines since T; with `stream=access` the access log of a php or static instance); 400 another stream; 404 |
//! | `GET /instances/ID/log?follow=1[&tail=N\|&since=T][&stream=access]` | 200 text/plain, streamed (chunked) as lines are written, until the client closes or the instance is deregistered; 404 |
//! | `GET /events[?tail=N\|?since=T][&follow=1]` | 200 text/plain: the heart's event log, streamed with `follow=1` |
//! | `GET /metrics` | 200 the Prometheus text format |
//! | `POST /uploads` | 201 `{"upload": ID, "sha256": ..., "size": N}` (gzip body, streamed to disk, at most `--max-source-size`); 413 too large; 422 not gzip |
//! | `GET`/`POST /instance/exit/ID/KEY/CODE` | 200 `{"state": ...}` (no token); 403 stale or spent key; 404 unknown instance; 400 bad code |
//!
//! Every route but `/health` and the exit report needs `Authorization:
//! Bearer TOKEN` (401 without it, checked before anything else). Unknown
//! paths are 404, a known path with another method 405, a body over
//! [`BODY_LIMIT`] 413. Every error body is `{"error": "..."}`; a start
//! that ends in `ERROR` adds `"instance"`, the instance as it is then.
//! An instance id in a path that is not `[A-Za-z0-9-]{1,64}` is 400.
//! Follows (`follow=1`) run on the stream pool (`api/follow.rs`).

mod follow;

use std::sync::Arc;

use serde::Serialize;
use serde_json::json;

use super::instance::{Done, Node};
use crate::error::{Error, Refusal};
use crate::http::{self, Body, Method, Plan, Pool, Response, Service};
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
    Metrics(String),
}

impl Reply {
    fn status(&self) -> u16 {
        match self {
            Reply::Json(status, _) => *status,
            Reply::Text(_) | Reply::Metrics(_) => 200,
        }
    }
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
        Rejection::MethodNotAllowed(method) => {
            (405, format!("method {} not allowed here", method.as_str()))
        }
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

/// The heart's API as an HTTP service: [`Service::plan`] checks the token
/// and picks the pool from the head alone (starts, stops, registers and
/// deregisters may take seconds: the slow pool; everything else: the
/// quick one, so reads and health never wait behind them).
pub(crate) struct Api {
    node: Arc<Node>,
}

impl Api {
    /// The API of `node`.
    pub(crate) fn new(node: Arc<Node>) -> Api {
        Api { node }
    }
}

impl Service for Api {
    fn plan(&self, request: &http::Request) -> Plan {
        if needs_token(request.path()) && !authorised(&self.node, request) {
            let (status, reason) = status_and_message(&Rejection::Unauthorised);
            return Plan::Reject { status, reason };
        }
        if (request.method(), request.segments().as_slice()) == (&Method::Post, &["uploads"][..]) {
            return Plan::Stream {
                pool: Pool::Slow,
                limit: self.node.max_source_size(),
            };
        }
        let slow = matches!(
            (request.method(), request.segments().as_slice()),
            (Method::Post, ["instances"])
                | (Method::Post, ["instances", "start-all"])
                | (Method::Post, ["instances", _, "start" | "stop" | "restart"])
                | (Method::Put, ["instances", _, "source"])
                | (Method::Delete, ["instances", _])
        );
        let pool = if slow {
            Pool::Slow
        } else if follow::is_follow(request.method(), &request.segments(), request.query()) {
            Pool::Stream
        } else {
            Pool::Quick
        };
        Plan::Buffer {
            pool,
            limit: BODY_LIMIT,
        }
    }

    fn handle(&self, request: http::Request, body: Body<'_>) -> Response {
        let body = match body {
            Body::Bytes(bytes) => bytes,
            // Only an upload streams its body.
            Body::Stream(mut reader) => {
                let reply = match self.node.upload(&mut reader, request.body_length()) {
                    Ok(answer) => json_reply(201, &answer),
                    Err(e) => error_reply(&Rejection::Node(e)),
                };
                return response_of(reply);
            }
        };
        if follow::is_follow(request.method(), &request.segments(), request.query()) {
            return follow::respond(&self.node, &request);
        }
        let reply = route(&self.node, &request, body);
        response_of(reply)
    }

    fn refusal(&self, status: u16, reason: &str) -> Response {
        let body = serde_json::to_vec(&protocol::ApiError {
            error: reason.to_string(),
        })
        .unwrap_or_default();
        Response::new(status, "application/json", body)
    }
}

fn response_of(reply: Reply) -> Response {
    match reply {
        Reply::Json(status, body) => Response::new(status, "application/json", body),
        Reply::Text(text) => Response::new(200, "text/plain; charset=utf-8", text.into_bytes()),
        Reply::Metrics(text) => Response::new(200, crate::metrics::CONTENT_TYPE, text.into_bytes()),
    }
}

/// True for every path but `/health` and the exit reports.
fn needs_token(path: &str) -> bool {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    !matches!(segments.as_slice(), ["health"] | ["instance", "exit", ..])
}

/// True when the request carries `Authorization: Bearer TOKEN`.
fn authorised(node: &Node, request: &http::Request) -> bool {
    request
        .header("Authorization")
        .and_then(|value| value.strip_prefix("Bearer "))
        .is_some_and(|t| secret_eq(t.trim().as_bytes(), node.token().as_bytes()))
}

/// A JSON body of type `T`; `what` names it in the refusal.
fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, Error> {
    serde_json::from_slice(body)
        .map_err(|e| Error::refused(Refusal::BadRequest, format!("invalid {what}: {e}")))
}

/// The answer to an idempotent start or stop: the instance, with
/// `"already": true` when it already was as asked.
fn done_reply(done: &Done) -> Reply {
    match serde_json::to_value(&done.view) {
        Ok(mut value) => {
            if done.already {
                if let Some(map) = value.as_object_mut() {
                    map.insert("already".into(), serde_json::Value::Bool(true));
                }
            }
            json_reply(200, &value)
        }
        Err(e) => error_reply(&Rejection::Node(Error::json("answer", e))),
    }
}

pub(super) fn parse_id(id: &str) -> Result<InstanceId, Error> {
    id.parse()
        .map_err(|e: protocol::InvalidId| Error::refused(Refusal::BadRequest, e.to_string()))
}

/// `tail=N` from a query string.
pub(super) fn tail_param(query: &str) -> Result<Option<usize>, Error> {
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

/// Routes a request (its token was checked by the plan).
fn route(node: &Node, request: &http::Request, body: Vec<u8>) -> Reply {
    let segments = request.segments();
    let result = dispatch(node, body, request.method(), &segments, request.query());
    let reply = result.unwrap_or_else(|rejection| error_reply(&rejection));
    node.count_request(
        route_pattern(&segments),
        request.method().as_str(),
        reply.status(),
    );
    reply
}

/// The route a path matches, as a pattern (`/instances/{id}/log`): the
/// label of `paasmaker_heart_requests_total`, which must not grow with
/// the ids asked for.
pub(super) fn route_pattern(segments: &[&str]) -> &'static str {
    match segments {
        ["health"] => "/health",
        ["runtimes"] => "/runtimes",
        ["metrics"] => "/metrics",
        ["events"] => "/events",
        ["uploads"] => "/uploads",
        ["instances"] => "/instances",
        ["instances", _] => "/instances/{id}",
        ["instances", _, "start"] => "/instances/{id}/start",
        ["instances", _, "stop"] => "/instances/{id}/stop",
        ["instances", _, "log"] => "/instances/{id}/log",
        ["instance", "exit", _, _, _] => "/instance/exit/{id}/{key}/{code}",
        _ => "other",
    }
}

fn dispatch(
    node: &Node,
    body: Vec<u8>,
    method: &Method,
    segments: &[&str],
    query: &str,
) -> Result<Reply, Rejection> {
    use Method::{Delete, Get, Patch, Post, Put};
    match (method, segments) {
        (Get, ["health"]) => Ok(json_reply(
            200,
            &json!({
                "status": "ok",
                "version": env!("CARGO_PKG_VERSION"),
                "isolation": node.isolation_summary(),
            }),
        )),
        (Get, ["runtimes"]) => Ok(json_reply(200, &node.runtimes())),
        (Get, ["metrics"]) => Ok(Reply::Metrics(node.metrics())),
        (Get, ["events"]) => Ok(Reply::Text(node.events_text(follow::start_param(query)?))),
        (Get, ["instances"]) => Ok(json_reply(200, &node.list(state_param(query)?))),
        (Post, ["instances"]) => Ok(json_reply(201, &node.register(&body)?)),
        (Get, ["instances", id]) => {
            let id = &parse_id(id)?;
            Ok(json_reply(200, &node.show(id)?))
        }
        (Delete, ["instances", id]) => {
            let id = &parse_id(id)?;
            Ok(json_reply(200, &node.deregister(id)?))
        }
        (Post, ["instances", "start-all"]) => Ok(json_reply(200, &node.start_all())),
        (Post, ["instances", id, "start"]) => {
            let id = &parse_id(id)?;
            match node.ensure_running(id) {
                Ok(done) => Ok(done_reply(&done)),
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
            Ok(done_reply(&node.ensure_stopped(id)?))
        }
        (Post, ["instances", id, "restart"]) => {
            let id = &parse_id(id)?;
            Ok(json_reply(200, &node.restart(id)?))
        }
        (Post, ["instances", id, "signal"]) => {
            let id = &parse_id(id)?;
            let req: protocol::SignalRequest = parse_json(&body, "signal request")?;
            Ok(json_reply(200, &node.signal(id, req.signal)?))
        }
        (Patch, ["instances", id]) => {
            let id = &parse_id(id)?;
            Ok(json_reply(200, &node.patch(id, &body)?))
        }
        (Put, ["instances", id, "source"]) => {
            let id = &parse_id(id)?;
            Ok(json_reply(200, &node.replace_source(id, &body)?))
        }
        (Get, ["instances", id, "log"]) => {
            let id = &parse_id(id)?;
            let stream = follow::stream_param(query)?;
            Ok(Reply::Text(node.log_from(
                id,
                stream,
                follow::start_param(query)?,
            )?))
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
            | ["metrics"]
            | ["events"]
            | ["instances"]
            | ["instances", _]
            | ["instances", _, "start" | "stop" | "log" | "restart" | "signal" | "source"]
            | ["instance", "exit", _, _, _]
            | ["uploads"],
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
