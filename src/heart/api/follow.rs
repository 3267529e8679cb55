//! The API side of a follow (`GET /instances/ID/log?follow=1`, `GET
//! /events?follow=1`): each runs in a `follow` thread of its own (at most
//! [`FOLLOWS_MAX`] at once), so a follow never holds one of the HTTP
//! workers, and writes the lines a [`Follower`] hands out as they come.
//!
//! tiny_http's own streamed response buffers 8 KiB before it sends a
//! chunk, so a single line would wait; the answer is written here on the
//! connection instead: the status line and headers, then one chunk per
//! batch of lines, flushed at once (HTTP/1.0 clients get the lines as
//! they are, ended by the close). A client that went away is noticed at
//! the next write, which ends the follow; so is the end of the instance
//! (deregistered) and the heart's shutdown, within one poll.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

use tiny_http::{HTTPVersion, Method, Request};

use super::{authorised, error_response, needs_token, parse_id, route_pattern, tail_param};
use crate::error::{Error, Refusal};
use crate::heart::follow::{Follower, Start};
use crate::heart::instance::Node;
use crate::rfc3339;

/// Most follows streaming at once.
pub(crate) const FOLLOWS_MAX: usize = 32;

/// Follows streaming now.
static FOLLOWS: AtomicUsize = AtomicUsize::new(0);

/// Waits, at most `timeout`, for the follows to end (they end within a
/// poll once shutdown began), so that each ends its answer properly.
pub(crate) fn wait_for_follows(timeout: std::time::Duration) -> bool {
    crate::wait::until(timeout, || FOLLOWS.load(Ordering::SeqCst) == 0)
}

/// The path and query of `url`, split.
fn split(url: &str) -> (Vec<&str>, &str) {
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    (path.split('/').filter(|s| !s.is_empty()).collect(), query)
}

/// True for a `GET` of a log or of the events with `follow=1`.
pub(super) fn is_follow(method: &Method, url: &str) -> bool {
    let (segments, query) = split(url);
    *method == Method::Get
        && matches!(segments.as_slice(), ["events"] | ["instances", _, "log"])
        && query
            .split('&')
            .any(|p| p == "follow=1" || p == "follow=true")
}

/// `%XX` escapes decoded (a `since` time may come with `:` or `+`
/// escaped).
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = (bytes[i] == b'%')
            .then(|| value.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
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
            let t = rfc3339::parse(&percent_decode(value))
                .map_err(|e| Error::refused(Refusal::BadRequest, e))?;
            return Ok(Some(Start::Since(t)));
        }
    }
    Ok(tail_param(query)?.map(Start::Tail))
}

/// Answers a follow: refusals at once, else the stream in a thread of
/// its own.
pub(super) fn handle(node: &Arc<Node>, request: Request) {
    let url = request.url().to_string();
    let (segments, query) = split(&url);
    let route = route_pattern(&segments);
    let refuse = |request: Request, err: Error| {
        let response = error_response(err);
        node.count_request(route, "GET", response.status_code().0);
        let _ = request.respond(response);
    };
    if needs_token(&url) && !authorised(node, &request) {
        let response = super::unauthorised_response();
        node.count_request(route, "GET", 401);
        let _ = request.respond(response);
        return;
    }
    let start = match start_param(query) {
        Ok(start) => start.unwrap_or(Start::End),
        Err(e) => return refuse(request, e),
    };
    let follower = match segments.as_slice() {
        ["instances", id, "log"] => match parse_id(id).and_then(|id| node.follow_log(&id, start)) {
            Ok(follower) => follower,
            Err(e) => return refuse(request, e),
        },
        _ => node.follow_events(start),
    };
    if FOLLOWS.fetch_add(1, Ordering::SeqCst) >= FOLLOWS_MAX {
        FOLLOWS.fetch_sub(1, Ordering::SeqCst);
        let err = Error::refused(
            Refusal::Conflict,
            format!("{FOLLOWS_MAX} follows are already streaming; try again later"),
        );
        return refuse(request, err);
    }
    node.count_request(route, "GET", 200);
    let spawned = thread::Builder::new()
        .name("follow".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            stream(request, follower);
            FOLLOWS.fetch_sub(1, Ordering::SeqCst);
        });
    if let Err(e) = spawned {
        FOLLOWS.fetch_sub(1, Ordering::SeqCst);
        crate::cli::warn(
            crate::heart::PROG,
            format!("unable to start a follow thread: {e}"),
        );
    }
}

/// Writes the answer: head, then the lines as they come, until the
/// follow ends or a write fails.
fn stream(request: Request, mut follower: Follower) {
    let chunked = *request.http_version() >= HTTPVersion(1, 1);
    let mut out = request.into_writer();
    let mut head = String::from(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Cache-Control: no-cache\r\nConnection: close\r\n",
    );
    if chunked {
        head.push_str("Transfer-Encoding: chunked\r\n");
    }
    head.push_str("\r\n");
    if out
        .write_all(head.as_bytes())
        .and_then(|()| out.flush())
        .is_err()
    {
        return;
    }
    while let Some(lines) = follower.next_chunk() {
        let written = if chunked {
            write!(out, "{:x}\r\n", lines.len())
                .and_then(|()| out.write_all(&lines))
                .and_then(|()| out.write_all(b"\r\n"))
        } else {
            out.write_all(&lines)
        };
        if written.and_then(|()| out.flush()).is_err() {
            return;
        }
    }
    if chunked {
        let _ = out.write_all(b"0\r\n\r\n").and_then(|()| out.flush());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_are_recognised_and_their_start_parsed() {
        assert!(is_follow(&Method::Get, "/instances/a/log?follow=1"));
        assert!(is_follow(&Method::Get, "/events?tail=3&follow=1"));
        assert!(!is_follow(&Method::Get, "/instances/a/log"));
        assert!(!is_follow(&Method::Post, "/events?follow=1"));
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
