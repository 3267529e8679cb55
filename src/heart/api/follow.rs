//! The API side of a follow (`GET /instances/ID/log?follow=1`, `GET
//! /events?follow=1`): a streamed answer on the server's stream pool that
//! writes the lines a [`Follower`] hands out as they come, one chunk per
//! batch, flushed at once. Between two looks at the file it waits on the
//! connection ([`StreamWriter::closed_within`]) rather than sleeping, so
//! a client that closes ends the follow within one poll, as do the end of
//! the instance (deregistered) and the heart's shutdown.

use std::io::Write;
use std::sync::Arc;

use super::{error_reply, parse_id, response_of, route_pattern, tail_param, Rejection};
use crate::error::{Error, Refusal};
use crate::heart::follow::{Follower, Start, POLL};
use crate::heart::instance::Node;
use crate::heart::layout::LogStream;
use crate::http::{self, percent_decode, Method, Response, StreamWriter};
use crate::rfc3339;

/// True for a `GET` of a log or of the events with `follow=1`.
pub(super) fn is_follow(method: &Method, segments: &[&str], query: &str) -> bool {
    *method == Method::Get
        && matches!(segments, ["events"] | ["instances", _, "log"])
        && query
            .split('&')
            .any(|p| p == "follow=1" || p == "follow=true")
}

/// Where a log or event read starts: `since=RFC3339`, else `tail=N`;
/// `None` when neither is given.
///
/// # Errors
///
/// `BadRequest` for a `since` that is not an RFC 3339 time, or a bad
/// `tail`.
pub(super) fn start_param(query: &str) -> Result<Option<Start>, Error> {
    for pair in query.split('&') {
        if let Some(value) = pair.strip_prefix("since=") {
            let value = percent_decode(value, false).unwrap_or_else(|| value.to_string());
            let t = rfc3339::parse(&value).map_err(|e| Error::refused(Refusal::BadRequest, e))?;
            return Ok(Some(Start::Since(t)));
        }
    }
    Ok(tail_param(query)?.map(Start::Tail))
}

/// Which log of an instance a request reads: `stream=main` (the default)
/// or `stream=access`.
///
/// # Errors
///
/// `BadRequest` for another value.
pub(super) fn stream_param(query: &str) -> Result<LogStream, Error> {
    for pair in query.split('&') {
        if let Some(value) = pair.strip_prefix("stream=") {
            return match value {
                "main" => Ok(LogStream::Main),
                "access" => Ok(LogStream::Access),
                _ => Err(Error::refused(
                    Refusal::BadRequest,
                    format!("invalid stream {value:?}: expected main or access"),
                )),
            };
        }
    }
    Ok(LogStream::Main)
}

/// The answer to a follow: a refusal, or the stream.
pub(super) fn respond(node: &Arc<Node>, request: &http::Request) -> Response {
    let segments = request.segments();
    let route = route_pattern(&segments);
    let follower = start_param(request.query()).and_then(|start| {
        let start = start.unwrap_or(Start::End);
        match segments.as_slice() {
            ["instances", id, "log"] => {
                node.follow_log(&parse_id(id)?, stream_param(request.query())?, start)
            }
            _ => Ok(node.follow_events(start)),
        }
    });
    let mut follower = match follower {
        Ok(follower) => follower,
        Err(e) => {
            let reply = error_reply(&Rejection::Node(e));
            node.count_request(route, "GET", reply.status());
            return response_of(reply);
        }
    };
    node.count_request(route, "GET", 200);
    Response::stream(200, "text/plain; charset=utf-8", move |out| {
        stream(&mut follower, out)
    })
    .with_header("Cache-Control", "no-cache")
}

/// Writes the lines as they come, until the follow ends or the client is
/// gone.
fn stream(follower: &mut Follower, out: &mut StreamWriter<'_>) -> std::io::Result<()> {
    while let Some(lines) = follower.next_chunk_with(|| out.closed_within(POLL)) {
        out.write_all(&lines)?;
        out.flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_are_recognised_and_their_start_parsed() {
        assert!(is_follow(
            &Method::Get,
            &["instances", "a", "log"],
            "follow=1"
        ));
        assert!(is_follow(&Method::Get, &["events"], "tail=3&follow=1"));
        assert!(!is_follow(&Method::Get, &["instances", "a", "log"], ""));
        assert!(!is_follow(&Method::Post, &["events"], "follow=1"));
        assert_eq!(start_param("").unwrap(), None);
        assert_eq!(start_param("tail=3").unwrap(), Some(Start::Tail(3)));
        assert_eq!(
            start_param("since=1970-01-01T00%3A00%3A10Z").unwrap(),
            Some(Start::Since(10.0))
        );
        assert!(matches!(
            start_param("since=yesterday"),
            Err(Error::Refused(Refusal::BadRequest(_)))
        ));
    }
}
