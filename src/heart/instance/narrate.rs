//! What the event log says about a change of a record: [`describe`]
//! compares a record before and after a change and names the events in
//! between (registered, starting, running, exited with code N, restarting
//! in N s (attempt K), failed, stopped, suspended). [`Node::update`] calls
//! it for every change it makes, so no operation has to remember to log.

use super::Node;
use crate::heart::events::Level;
use crate::heart::record::Record;
use crate::protocol::State;

/// The first non-blank line of `text`.
fn first_line(text: &str) -> &str {
    text.trim().lines().next().unwrap_or_default()
}

/// The events between `old` and `new` of the same instance, at `now`.
pub(super) fn describe(old: &Record, new: &Record, now: f64) -> Vec<(Level, String)> {
    let id = &new.instance_id;
    let mut events = Vec::new();
    let entered = |state: State| new.state == state && old.state != state;
    if entered(State::Registered) && old.state == State::Allocated {
        events.push((
            Level::Info,
            format!(
                "{id}: registered ({} {}, runtime {} {})",
                new.application.name, new.version, new.runtime.name, new.runtime.version
            ),
        ));
    }
    if entered(State::Starting) {
        let how = if new.restarts > old.restarts {
            format!(" (restart {})", new.restarts)
        } else {
            String::new()
        };
        events.push((Level::Info, format!("{id}: starting{how}")));
    }
    if entered(State::Running) {
        events.push((
            Level::Info,
            format!("{id}: running: {}", first_line(&new.message)),
        ));
    }
    if new.last_exit != old.last_exit {
        if let Some(exit) = &new.last_exit {
            let (level, text) = match exit.code {
                Some(0) => (Level::Info, "exited with code 0".to_string()),
                Some(code) => (Level::Error, format!("exited with code {code}")),
                None => (Level::Error, first_line(&exit.reason).to_string()),
            };
            events.push((level, format!("{id}: {text}")));
        }
    } else if entered(State::Error) {
        events.push((
            Level::Error,
            format!("{id}: failed: {}", first_line(&new.message)),
        ));
    }
    if entered(State::Stopped) && new.stop_requested {
        events.push((Level::Info, format!("{id}: stopped")));
    }
    if entered(State::Suspended) {
        events.push((
            Level::Warning,
            format!("{id}: suspended: {}", first_line(&new.message)),
        ));
    }
    if let Some(at) = new.backoff.next_restart {
        if old.backoff.next_restart != Some(at) {
            events.push((
                Level::Info,
                format!(
                    "{id}: restarting in {} s (attempt {})",
                    (at - now).max(0.0).round(),
                    new.backoff.attempts
                ),
            ));
        }
    }
    events
}

impl Node {
    /// Writes the events between `old` and `new` to the event log.
    pub(super) fn narrate(&self, old: &Record, new: &Record) {
        for (level, text) in describe(old, new, super::now()) {
            self.events.log(level, text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::exits::apply_exit;
    use super::super::test_record;
    use super::*;
    use crate::protocol::Restart;

    #[test]
    fn a_crash_and_its_restart_are_told() {
        let old = test_record(Restart::OnFailure);
        let mut new = old.clone();
        apply_exit(&mut new, Some(3), "exited with code 3".into(), 110.0);
        let events = describe(&old, &new, 110.0);
        let texts: Vec<&str> = events.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(
            texts,
            ["a: exited with code 3", "a: restarting in 1 s (attempt 1)"]
        );
        assert_eq!(events[0].0, Level::Error);

        let mut again = new.clone();
        again.state = State::Starting;
        again.restarts = 1;
        again.backoff.next_restart = None;
        let texts: Vec<String> = describe(&new, &again, 111.0)
            .into_iter()
            .map(|(_, t)| t)
            .collect();
        assert_eq!(texts, ["a: starting (restart 1)"]);
    }
}
