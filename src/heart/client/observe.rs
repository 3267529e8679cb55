//! `pm-heart log ID` and `pm-heart events`: a log read once, or followed
//! (`--follow`, `-f`) as it is written until the heart ends the answer
//! (the instance was deregistered, the heart shut down) or the user
//! presses Ctrl-C (SIGINT ends the client as it ends `tail -f`: by the
//! signal, status 130 in a shell). `--tail N` starts N lines back,
//! `--since TIME` at the first line stamped at or after TIME. `log
//! --access` reads the access log of a php or static instance instead.

use std::io::Write;

use super::args::Args;
use super::http::Heart;
use super::render::print;
use super::{Failed, Outcome};
use crate::error::Error;

/// Lines a follow shows first when neither `--tail` nor `--since` is
/// given, as `tail -f` does.
const FOLLOW_TAIL: u64 = 10;

/// The query of a log or events request.
fn query(args: &Args) -> String {
    let mut params = Vec::new();
    if args.access {
        params.push("stream=access".to_string());
    }
    if let Some(since) = &args.since {
        params.push(format!("since={}", since.replace('+', "%2B")));
    } else if let Some(n) = args.tail {
        params.push(format!("tail={n}"));
    } else if args.follow {
        params.push(format!("tail={FOLLOW_TAIL}"));
    }
    if args.follow {
        params.push("follow=1".to_string());
    }
    if params.is_empty() {
        String::new()
    } else {
        format!("?{}", params.join("&"))
    }
}

/// Prints the log at `path` (`/instances/ID/log`, `/events`), or follows
/// it.
pub(super) fn show_log(heart: &Heart, path: &str, args: &Args) -> Outcome<()> {
    let path = format!("{path}{}", query(args));
    if !args.follow {
        return print(&heart.get(&path)?);
    }
    heart.stream(&path, |piece| {
        let mut out = std::io::stdout().lock();
        match out.write_all(piece).and_then(|()| out.flush()) {
            Ok(()) => Ok(true),
            // The reader went away (`| head`): done.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
            Err(e) => Err(Failed::Other(Error::io("write to", "standard output", e))),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::super::args::{parse, Environment};
    use super::*;

    #[test]
    fn queries_say_where_to_start_and_whether_to_follow() {
        let args = parse("log", ["a"], Environment::default()).unwrap();
        assert_eq!(query(&args), "");
        let args = parse("log", ["a", "-f"], Environment::default()).unwrap();
        assert_eq!(query(&args), "?tail=10&follow=1");
        let args = parse(
            "log",
            ["a", "--access", "--tail", "3"],
            Environment::default(),
        )
        .unwrap();
        assert_eq!(query(&args), "?stream=access&tail=3");
        assert!(parse("events", ["--access"], Environment::default()).is_err());
        let args = parse(
            "events",
            ["--since", "2026-01-01T00:00:00+01:00", "--follow"],
            Environment::default(),
        )
        .unwrap();
        assert_eq!(query(&args), "?since=2026-01-01T00:00:00%2B01:00&follow=1");
    }
}
