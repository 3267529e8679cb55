//! Reading logs as they grow: an instance's log or access log (`GET
//! /instances/ID/log?follow=1[&stream=access]`) and the heart's event log (`GET /events`),
//! through [`crate::heart::follow::Follower`]. A follow ends when the
//! instance is deregistered or the heart shuts down (and, in the API,
//! when the client is gone).

use std::sync::Arc;

use super::Node;
use crate::error::Result;
use crate::fsutil;
use crate::heart::follow::{self, Follower, Start};
use crate::heart::layout::LogStream;
use crate::protocol::InstanceId;

impl Node {
    /// Follows the log of `id` from `start`, until it is deregistered or
    /// the heart shuts down.
    ///
    /// # Errors
    ///
    /// `NotFound` when there is no such instance.
    pub(crate) fn follow_log(
        self: &Arc<Self>,
        id: &InstanceId,
        stream: LogStream,
        start: Start,
    ) -> Result<Follower> {
        self.record(id)?;
        let node = Arc::clone(self);
        let watched = id.clone();
        Ok(Follower::new(
            self.layout.log_of(id, stream),
            start,
            move || !node.is_shutting_down() && node.record(&watched).is_ok(),
        ))
    }

    /// Follows the event log from `start`, until the heart shuts down.
    pub(crate) fn follow_events(self: &Arc<Self>, start: Start) -> Follower {
        let node = Arc::clone(self);
        Follower::new(self.events.path().to_path_buf(), start, move || {
            !node.is_shutting_down()
        })
    }

    /// The log of `id` (up to its last MiB), or its last `lines` lines,
    /// or its lines since a time.
    ///
    /// # Errors
    ///
    /// `NotFound` when there is no such instance.
    pub(crate) fn log_from(
        &self,
        id: &InstanceId,
        stream: LogStream,
        start: Option<Start>,
    ) -> Result<String> {
        match start {
            Some(Start::Tail(n)) => self.log(id, stream, Some(n)),
            Some(Start::Since(t)) => {
                let text = self.log(id, stream, None)?;
                let from = follow::offset_in(text.as_bytes(), Start::Since(t));
                Ok(text[from..].to_string())
            }
            None | Some(Start::End) => self.log(id, stream, None),
        }
    }

    /// The event log (up to its last MiB), or its last `lines` lines, or
    /// its lines since a time.
    pub(crate) fn events_text(&self, start: Option<Start>) -> String {
        let text = fsutil::tail(self.events.path(), super::LOG_MAX, None);
        match start {
            None | Some(Start::End) => text,
            Some(start) => text[follow::offset_in(text.as_bytes(), start)..].to_string(),
        }
    }
}
