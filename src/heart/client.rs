//! The `pm-heart` client commands: `list`, `show`, `register`, `start`,
//! `stop`, `deregister`, `log`, `runtimes` and `deploy`, talking to a
//! running heart whose address and token are read from its data directory
//! (`DATA_DIR/address`, `DATA_DIR/token`) or given as options.
//!
//! Every command is one or two requests through a single `ureq::Agent`
//! with a global timeout (a start may wait for a slow application) and
//! with HTTP statuses mapped here, not by ureq. Exit codes follow
//! `exit::Tool`: a request the heart refused is 1, misuse (a bad option,
//! argument or input file) is 100, a heart that cannot be reached, or
//! whose address or token file is missing, is 111.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::cli;
use crate::error::Error;
use crate::exit::Tool;
use crate::protocol::{
    ApiError, InstanceId, InstanceList, InstanceView, InvalidId, Manifest, RegisterRequest, State,
};

const PROG: &str = "pm-heart";

/// The data directory when `--data-dir` is not given.
pub(crate) const DEFAULT_DATA_DIR: &str = "./pm-data";

/// Bound on a whole request. A start answers only once the instance is
/// RUNNING or ERROR: after its startup commands (each up to
/// `startup_timeout`, 300 s by default) and its `start_timeout` (20 s by
/// default); a register copies the source first. So the bound is generous;
/// an unreachable heart is caught by the connect timeout instead.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(600);
/// Bound on connecting to the heart.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer read from the heart (a log can be long).
const ANSWER_LIMIT: u64 = 64 << 20;

/// The client part of `pm-heart --help`; identical to the man page
/// SYNOPSIS.
pub(crate) const USAGE: &str = "\
usage: pm-heart list [CLIENT-OPTIONS]
       pm-heart show ID [CLIENT-OPTIONS]
       pm-heart register FILE [CLIENT-OPTIONS]
       pm-heart start ID [CLIENT-OPTIONS]
       pm-heart stop ID [CLIENT-OPTIONS]
       pm-heart deregister ID [CLIENT-OPTIONS]
       pm-heart log ID [--tail N] [CLIENT-OPTIONS]
       pm-heart runtimes [CLIENT-OPTIONS]
       pm-heart deploy DIR [--id ID] [CLIENT-OPTIONS]
client options: [--data-dir DIR] [--address ADDR] [--token TOKEN] [--json] [--help]
";

/// The client subcommands.
pub(crate) const COMMANDS: [&str; 9] = [
    "list",
    "show",
    "register",
    "start",
    "stop",
    "deregister",
    "log",
    "runtimes",
    "deploy",
];

/// What a client subcommand does, with its positional argument.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Command {
    List,
    Show(InstanceId),
    Register(PathBuf),
    Start(InstanceId),
    Stop(InstanceId),
    Deregister(InstanceId),
    Log(InstanceId),
    Runtimes,
    Deploy(PathBuf),
}

/// The command line of a client subcommand, as parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Args {
    /// `None` with `--help`.
    command: Option<Command>,
    data_dir: PathBuf,
    address: Option<String>,
    token: Option<String>,
    json: bool,
    /// `log --tail N`.
    tail: Option<u64>,
    /// `deploy --id ID`.
    id: Option<InstanceId>,
}

/// A failed command: the error to print and the exit code it maps to.
#[derive(Debug)]
struct Failed {
    code: Tool,
    error: Error,
    /// The body of a refusal by the heart.
    answer: Option<String>,
}

impl Failed {
    fn usage(error: Error) -> Failed {
        Failed {
            code: Tool::Usage,
            error,
            answer: None,
        }
    }

    fn temporary(error: Error) -> Failed {
        Failed {
            code: Tool::Temporary,
            error,
            answer: None,
        }
    }

    fn failure(error: Error) -> Failed {
        Failed {
            code: Tool::Failure,
            error,
            answer: None,
        }
    }
}

type Outcome<T> = std::result::Result<T, Failed>;

/// Runs client subcommand `command` with the arguments that follow it.
pub(crate) fn run(command: &str, args: Vec<OsString>) -> ExitCode {
    let args = match parse_args(command, args) {
        Ok(args) => args,
        Err(err) => {
            cli::fatal(PROG, err);
            let known = COMMANDS.contains(&command);
            let _ = writeln!(
                std::io::stderr().lock(),
                "{PROG}: usage: see {PROG} {}--help",
                if known {
                    format!("{command} ")
                } else {
                    String::new()
                }
            );
            return Tool::Usage.into();
        }
    };
    let Some(command) = args.command.clone() else {
        return match cli::print(USAGE) {
            Ok(()) => Tool::Success.into(),
            Err(_) => Tool::Failure.into(),
        };
    };
    match execute(&args, command) {
        Ok(()) => Tool::Success.into(),
        Err(failed) => {
            cli::fatal(PROG, &failed.error);
            failed.code.into()
        }
    }
}

/// Parses the arguments after client subcommand `command`.
fn parse_args(
    command: &str,
    args: impl IntoIterator<Item = impl Into<OsString>>,
) -> Result<Args, Error> {
    use lexopt::prelude::*;

    let mut parser = lexopt::Parser::from_args(args);
    let mut data_dir = PathBuf::from(DEFAULT_DATA_DIR);
    let mut address = None;
    let mut token = None;
    let mut json = false;
    let mut tail = None;
    let mut id = None;
    let mut help = false;
    let mut positional: Option<OsString> = None;
    while let Some(arg) = parser.next().map_err(cli::usage_error)? {
        match arg {
            Long("data-dir") => data_dir = parser.value().map_err(cli::usage_error)?.into(),
            Long("address") => address = Some(string_value(&mut parser)?),
            Long("token") => token = Some(string_value(&mut parser)?),
            Long("json") => json = true,
            Long("tail") if command == "log" => {
                tail = Some(
                    parser
                        .value()
                        .and_then(|v| v.parse())
                        .map_err(cli::usage_error)?,
                );
            }
            Long("id") if command == "deploy" => {
                let value = string_value(&mut parser)?;
                id = Some(instance_id(value)?);
            }
            Short('h') | Long("help") => help = true,
            Value(value) if positional.is_none() => positional = Some(value),
            _ => return Err(cli::usage_error(arg.unexpected())),
        }
    }
    let mut args = Args {
        command: None,
        data_dir,
        address,
        token,
        json,
        tail,
        id,
    };
    if help {
        return Ok(args);
    }
    let needs = |what: &str| {
        positional
            .clone()
            .ok_or_else(|| Error::Usage(format!("{command}: missing {what}")))
    };
    let id_arg =
        || -> Result<InstanceId, Error> {
            let value = needs("instance ID")?;
            instance_id(value.into_string().map_err(|v| {
                Error::Usage(format!("invalid instance ID {}", v.to_string_lossy()))
            })?)
        };
    args.command = Some(match command {
        "list" | "runtimes" => {
            if let Some(extra) = &positional {
                return Err(Error::Usage(format!(
                    "{command}: unexpected argument {}",
                    extra.to_string_lossy()
                )));
            }
            if command == "list" {
                Command::List
            } else {
                Command::Runtimes
            }
        }
        "show" => Command::Show(id_arg()?),
        "start" => Command::Start(id_arg()?),
        "stop" => Command::Stop(id_arg()?),
        "deregister" => Command::Deregister(id_arg()?),
        "log" => Command::Log(id_arg()?),
        "register" => Command::Register(needs("FILE")?.into()),
        "deploy" => Command::Deploy(needs("DIR")?.into()),
        other => return Err(Error::Usage(format!("unknown command {other:?}"))),
    });
    Ok(args)
}

fn string_value(parser: &mut lexopt::Parser) -> Result<String, Error> {
    use lexopt::ValueExt;
    parser
        .value()
        .and_then(|v| v.string())
        .map_err(cli::usage_error)
}

fn instance_id(value: String) -> Result<InstanceId, Error> {
    value
        .parse()
        .map_err(|e: InvalidId| Error::Usage(e.to_string()))
}

fn execute(args: &Args, command: Command) -> Outcome<()> {
    // Input files are read before the heart is contacted: a bad file is
    // misuse whether or not a heart runs.
    let body = match &command {
        Command::Register(file) => Some(read_register_file(file)?),
        Command::Deploy(dir) => Some(read_manifest(dir, args.id.clone())?),
        _ => None,
    };
    let heart = Heart::connect(args)?;
    match command {
        Command::List => {
            let text = heart.get("/instances")?;
            if args.json {
                return print_json(&text);
            }
            let list: InstanceList = decode(&text)?;
            print(&list_table(&list.instances))
        }
        Command::Show(id) => {
            let text = heart.get(&format!("/instances/{id}"))?;
            if args.json {
                return print_json(&text);
            }
            let view: InstanceView = decode(&text)?;
            print(&show_lines(&view, &heart.app_host))
        }
        Command::Register(_) | Command::Deploy(_) => {
            let body = body.unwrap_or_default();
            let text = heart.post("/instances", Some(&body))?;
            let view: InstanceView = decode(&text)?;
            if matches!(command, Command::Register(_)) {
                if args.json {
                    return print_json(&text);
                }
                return print(&format!("{}\n", state_line(&view, &heart.app_host)));
            }
            if !args.json {
                print(&format!("{}\n", state_line(&view, &heart.app_host)))?;
            }
            start(&heart, &view.instance_id, args.json)
        }
        Command::Start(id) => start(&heart, &id, args.json),
        Command::Stop(id) => {
            let text = heart.post(&format!("/instances/{id}/stop"), None)?;
            if args.json {
                return print_json(&text);
            }
            print(&format!(
                "{id}: {}\n",
                answered_state(&text, State::Stopped)
            ))
        }
        Command::Deregister(id) => {
            let text = heart.delete(&format!("/instances/{id}"))?;
            if args.json {
                return print_json(&text);
            }
            print(&format!(
                "{id}: {}\n",
                answered_state(&text, State::Deregistered)
            ))
        }
        Command::Log(id) => {
            let path = match args.tail {
                Some(n) => format!("/instances/{id}/log?tail={n}"),
                None => format!("/instances/{id}/log"),
            };
            print(&heart.get(&path)?)
        }
        Command::Runtimes => {
            let text = heart.get("/runtimes")?;
            if args.json {
                return print_json(&text);
            }
            let runtimes: BTreeMap<String, Vec<String>> = decode(&text)?;
            print(&runtimes_table(&runtimes))
        }
    }
}

/// Starts `id` and prints where it ended; a start that ends in ERROR is
/// a failure with the instance's message.
fn start(heart: &Heart, id: &str, json: bool) -> Outcome<()> {
    let text = match heart.post(&format!("/instances/{id}/start"), None) {
        Ok(text) => text,
        Err(failed) => return Err(start_refused(heart, id, json, failed)),
    };
    let view: InstanceView = decode(&text)?;
    if json {
        print_json(&text)?;
    } else {
        print(&format!("{}\n", state_line(&view, &heart.app_host)))?;
    }
    if view.state == State::Error {
        return Err(Failed::failure(Error::invalid(format!(
            "unable to start {id}: {}",
            view.message.trim_end()
        ))));
    }
    Ok(())
}

/// A refused start. When it ended in ERROR the heart adds the instance
/// to its `{"error": ...}`: its state is printed like a successful
/// answer's, and the error names what failed. Other refusals (unknown
/// instance, wrong state) are passed on as they are.
fn start_refused(heart: &Heart, id: &str, json: bool, failed: Failed) -> Failed {
    let ended_in_error = failed
        .answer
        .as_deref()
        .and_then(|body| serde_json::from_str::<Value>(body).ok())
        .and_then(|body| serde_json::from_value::<InstanceView>(body.get("instance")?.clone()).ok())
        .filter(|view| view.state == State::Error);
    let (Some(view), Some(body)) = (ended_in_error, failed.answer.as_deref()) else {
        return failed;
    };
    let printed = if json {
        print_json(body)
    } else {
        print(&format!("{}\n", state_line(&view, &heart.app_host)))
    };
    if let Err(err) = printed {
        return err;
    }
    match failed.error {
        Error::Api { status, message } => Failed {
            error: Error::api(
                status,
                format!("unable to start {id}: {}", message.trim_end()),
            ),
            ..failed
        },
        _ => failed,
    }
}

/// Reads the body of `POST /instances` from `file`. A relative `source`
/// is taken relative to the directory of `file`, since the heart resolves
/// paths from its own working directory.
fn read_register_file(file: &Path) -> Outcome<Vec<u8>> {
    let text = fs::read_to_string(file)
        .map_err(|e| Failed::usage(Error::io("read register file", file, e)))?;
    let mut request: RegisterRequest = serde_json::from_str(&text)
        .map_err(|e| Failed::usage(Error::json(format!("register file {}", file.display()), e)))?;
    if request.source.is_relative() {
        let base = file.parent().unwrap_or(Path::new("."));
        request.source = absolute(&base.join(&request.source))?;
    }
    encode(&request)
}

/// Reads `DIR/paasmaker.json` and makes it a register request with `DIR`
/// (absolute) as the source.
fn read_manifest(dir: &Path, instance_id: Option<InstanceId>) -> Outcome<Vec<u8>> {
    let source = absolute(dir)?;
    let file = source.join("paasmaker.json");
    let text = fs::read_to_string(&file)
        .map_err(|e| Failed::usage(Error::io("read manifest", &file, e)))?;
    let manifest: Manifest = serde_json::from_str(&text)
        .map_err(|e| Failed::usage(Error::json(format!("manifest {}", file.display()), e)))?;
    encode(&RegisterRequest {
        instance_id,
        source,
        manifest,
    })
}

fn absolute(path: &Path) -> Outcome<PathBuf> {
    fs::canonicalize(path).map_err(|e| Failed::usage(Error::io("resolve", path, e)))
}

fn encode<T: serde::Serialize>(value: &T) -> Outcome<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| Failed::failure(Error::json("register request", e)))
}

fn decode<T: DeserializeOwned>(text: &str) -> Outcome<T> {
    serde_json::from_str(text).map_err(|e| Failed::failure(Error::json("answer from the heart", e)))
}

/// The state in an answer, or `default` when the answer names none.
fn answered_state(text: &str, default: State) -> &'static str {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| serde_json::from_value::<State>(v.get("state")?.clone()).ok())
        .unwrap_or(default)
        .as_str()
}

fn print(text: &str) -> Outcome<()> {
    cli::print(text).map_err(|e| Failed::failure(Error::io("write to", "standard output", e)))
}

fn print_json(text: &str) -> Outcome<()> {
    if text.ends_with('\n') {
        print(text)
    } else {
        print(&format!("{text}\n"))
    }
}

/// The URL an instance answers on, when it runs on a port.
fn app_url(view: &InstanceView, host: &str) -> Option<String> {
    match (view.state, view.port) {
        (State::Running, Some(port)) => Some(format!("http://{host}:{port}/")),
        _ => None,
    }
}

/// `ID: STATE`, then the URL to open, or the reason for an ERROR.
fn state_line(view: &InstanceView, host: &str) -> String {
    let mut line = format!("{}: {}", view.instance_id, view.state.as_str());
    if let Some(url) = app_url(view, host) {
        line.push_str(&format!("\n{url}"));
    } else if let (State::Registered, Some(port)) = (view.state, view.port) {
        line.push_str(&format!(" (port {port})"));
    } else if view.state == State::Error && !view.message.is_empty() {
        line.push_str(&format!(": {}", first_line(&view.message)));
    }
    line
}

fn first_line(text: &str) -> &str {
    text.trim().lines().next().unwrap_or_default()
}

fn runtime_name(view: &InstanceView) -> String {
    format!("{} {}", view.runtime.name, view.runtime.version)
}

/// The `list` table: one row per instance, columns padded to fit.
fn list_table(instances: &[InstanceView]) -> String {
    let mut rows =
        vec![["ID", "STATE", "PORT", "RUNTIME", "APPLICATION", "MESSAGE"].map(String::from)];
    for view in instances {
        rows.push([
            view.instance_id.to_string(),
            view.state.as_str().to_string(),
            view.port.map_or_else(|| "-".to_string(), |p| p.to_string()),
            runtime_name(view),
            view.application.name.clone(),
            first_line(&view.message).to_string(),
        ]);
    }
    table(&rows)
}

fn runtimes_table(runtimes: &BTreeMap<String, Vec<String>>) -> String {
    let mut rows = vec![["RUNTIME", "VERSIONS"].map(String::from)];
    for (name, versions) in runtimes {
        let versions = if versions.is_empty() {
            "(not on this node)".to_string()
        } else {
            versions.join(" ")
        };
        rows.push([name.clone(), versions]);
    }
    table(&rows)
}

/// Left-aligned columns separated by two spaces; the last column is not
/// padded.
fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 < N {
                line.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            } else {
                line.push_str(cell);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `show`: one `key: value` line per field.
fn show_lines(view: &InstanceView, host: &str) -> String {
    let dash = || "-".to_string();
    let restart = serde_json::to_value(view.restart)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default();
    let mut lines = vec![
        ("instance_id", view.instance_id.to_string()),
        ("state", view.state.as_str().to_string()),
        ("port", view.port.map_or_else(dash, |p| p.to_string())),
    ];
    if let Some(url) = app_url(view, host) {
        lines.push(("url", url));
    }
    lines.extend([
        ("application", view.application.name.clone()),
        ("version", view.version.clone()),
        ("runtime", runtime_name(view)),
        (
            "parameters",
            serde_json::to_string(&view.runtime.parameters).unwrap_or_default(),
        ),
        ("standalone", view.standalone.to_string()),
        ("exclusive", view.exclusive.to_string()),
        ("restart", restart),
        ("pid", view.pid.map_or_else(dash, |p| p.to_string())),
        ("message", view.message.trim_end().replace('\n', "\n  ")),
    ]);
    lines
        .into_iter()
        .map(|(key, value)| format!("{}\n", format!("{key}: {value}").trim_end()))
        .collect()
}

/// A running heart: its base URL, token and the one agent that talks to
/// it.
struct Heart {
    agent: ureq::Agent,
    base: String,
    bearer: String,
    /// The host applications on that node are reached at.
    app_host: String,
}

impl Heart {
    /// Resolves the address and token (options win over the files in the
    /// data directory) and builds the agent.
    fn connect(args: &Args) -> Outcome<Heart> {
        let address = match &args.address {
            Some(address) => address.trim().to_string(),
            None => read_state_file(&args.data_dir.join("address"), "address file")?,
        };
        let token = match &args.token {
            Some(token) => token.trim().to_string(),
            None => read_state_file(&args.data_dir.join("token"), "token file")?,
        };
        let authority = address
            .strip_prefix("http://")
            .unwrap_or(&address)
            .trim_end_matches('/');
        let authority = loopback_for_wildcard(authority);
        if authority.is_empty() || address.starts_with("https://") {
            return Err(Failed::usage(Error::Usage(format!(
                "invalid heart address {address:?}: expected IP:PORT"
            ))));
        }
        let app_host = match authority.rsplit_once(':') {
            Some((host, _)) => host.to_string(),
            None => authority.clone(),
        };
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(REQUEST_TIMEOUT))
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .http_status_as_error(false)
            .build();
        Ok(Heart {
            agent: config.into(),
            base: format!("http://{authority}"),
            bearer: format!("Bearer {token}"),
            app_host,
        })
    }

    fn get(&self, path: &str) -> Outcome<String> {
        let url = format!("{}{path}", self.base);
        self.answer(
            self.agent
                .get(&url)
                .header("Authorization", &self.bearer)
                .call(),
        )
    }

    fn delete(&self, path: &str) -> Outcome<String> {
        let url = format!("{}{path}", self.base);
        self.answer(
            self.agent
                .delete(&url)
                .header("Authorization", &self.bearer)
                .call(),
        )
    }

    fn post(&self, path: &str, body: Option<&[u8]>) -> Outcome<String> {
        let url = format!("{}{path}", self.base);
        let request = self.agent.post(&url).header("Authorization", &self.bearer);
        self.answer(match body {
            Some(body) => request.content_type("application/json").send(body),
            None => request.send_empty(),
        })
    }

    /// The body of a 2xx answer; any other status is the heart's refusal,
    /// with the text of its `{"error": ...}`.
    fn answer(
        &self,
        result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Outcome<String> {
        let unreachable = |err: ureq::Error| {
            let message = match err {
                ureq::Error::Timeout(_) => format!(
                    "no answer from the heart at {} within {} s; the request may still \
                     complete (see pm-heart list)",
                    self.base,
                    REQUEST_TIMEOUT.as_secs()
                ),
                err => format!("unable to reach the heart at {}: {err}", self.base),
            };
            Failed::temporary(Error::Http(message))
        };
        let mut response = result.map_err(unreachable)?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(ANSWER_LIMIT)
            .read_to_string()
            .map_err(unreachable)?;
        if (200..300).contains(&status) {
            return Ok(text);
        }
        let message = match serde_json::from_str::<ApiError>(&text) {
            Ok(api) => api.error,
            Err(_) if !text.trim().is_empty() => first_line(&text).to_string(),
            Err(_) => response
                .status()
                .canonical_reason()
                .unwrap_or("error")
                .to_string(),
        };
        Err(Failed {
            answer: Some(text),
            ..Failed::failure(Error::api(status, message))
        })
    }
}

/// A file the heart writes when it starts; missing means no heart ran
/// with this data directory.
fn read_state_file(path: &Path, what: &str) -> Outcome<String> {
    let text = fs::read_to_string(path)
        .map_err(|e| Failed::temporary(Error::io(format!("read the heart's {what}"), path, e)))?;
    let text = text.trim().to_string();
    if text.is_empty() {
        return Err(Failed::temporary(Error::invalid(format!(
            "the heart's {what} {} is empty",
            path.display()
        ))));
    }
    Ok(text)
}

/// A heart listening on every address (`0.0.0.0:P`, `[::]:P`) is reached
/// on the loopback.
fn loopback_for_wildcard(authority: &str) -> String {
    if let Some(port) = authority.strip_prefix("0.0.0.0:") {
        format!("127.0.0.1:{port}")
    } else if let Some(port) = authority.strip_prefix("[::]:") {
        format!("[::1]:{port}")
    } else {
        authority.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Application, Restart, RuntimeSpec};

    fn parse(command: &str, args: &[&str]) -> Result<Args, Error> {
        parse_args(command, args.iter().copied())
    }

    fn view(id: &str, state: State, port: Option<u16>, message: &str) -> InstanceView {
        InstanceView {
            instance_id: id.parse().unwrap(),
            state,
            port,
            application: Application {
                name: "hello".into(),
            },
            version: "1".into(),
            runtime: RuntimeSpec {
                name: "shell".into(),
                version: "1".into(),
                parameters: Default::default(),
            },
            standalone: port.is_none(),
            exclusive: false,
            restart: Restart::Never,
            message: message.into(),
            pid: None,
        }
    }

    #[test]
    fn options_follow_the_subcommand() {
        let args = parse(
            "list",
            &["--data-dir", "/d", "--json", "--address", "127.0.0.1:1"],
        )
        .unwrap();
        assert_eq!(args.command, Some(Command::List));
        assert_eq!(args.data_dir, PathBuf::from("/d"));
        assert!(args.json);
        assert_eq!(args.address.as_deref(), Some("127.0.0.1:1"));

        let args = parse("log", &["web-1", "--tail", "20"]).unwrap();
        assert_eq!(args.command, Some(Command::Log("web-1".parse().unwrap())));
        assert_eq!(args.tail, Some(20));
        assert_eq!(args.data_dir, PathBuf::from(DEFAULT_DATA_DIR));

        let args = parse("deploy", &["app", "--id", "web-2"]).unwrap();
        assert_eq!(args.command, Some(Command::Deploy("app".into())));
        assert_eq!(args.id.as_deref(), Some("web-2"));
    }

    #[test]
    fn help_needs_no_argument() {
        let args = parse("show", &["--help"]).unwrap();
        assert_eq!(args.command, None);
    }

    #[test]
    fn misuse_is_a_usage_error() {
        for (command, args) in [
            ("list", &["--bogus"][..]),
            ("list", &["extra"][..]),
            ("show", &[][..]),
            ("show", &["a/b"][..]),
            ("show", &["a", "b"][..]),
            ("start", &["--tail", "3", "x"][..]),
            ("list", &["--id", "x"][..]),
            ("log", &["x", "--tail", "many"][..]),
            ("deploy", &["d", "--id", "bad id"][..]),
            ("frobnicate", &[][..]),
        ] {
            let err = parse(command, args).unwrap_err();
            assert!(matches!(err, Error::Usage(_)), "{command} {args:?}: {err}");
        }
    }

    #[test]
    fn usage_names_every_subcommand_and_option() {
        for word in [
            "list",
            "show",
            "register",
            "start",
            "stop",
            "deregister",
            "log",
            "runtimes",
            "deploy",
            "--data-dir",
            "--address",
            "--token",
            "--json",
            "--help",
            "--tail",
            "--id",
        ] {
            assert!(USAGE.contains(word), "{word}");
        }
    }

    #[test]
    fn list_is_an_aligned_table() {
        let text = list_table(&[
            view("web-1", State::Running, Some(42600), ""),
            view("daemon", State::Error, None, "exited\nwith 1"),
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "ID      STATE    PORT   RUNTIME  APPLICATION  MESSAGE"
        );
        assert_eq!(lines[1], "web-1   RUNNING  42600  shell 1  hello");
        assert_eq!(
            lines[2],
            "daemon  ERROR    -      shell 1  hello        exited"
        );
    }

    #[test]
    fn state_line_gives_url_or_reason() {
        let running = view("web-1", State::Running, Some(42600), "");
        assert_eq!(
            state_line(&running, "127.0.0.1"),
            "web-1: RUNNING\nhttp://127.0.0.1:42600/"
        );
        let failed = view("web-1", State::Error, Some(42600), "port taken\nmore");
        assert_eq!(state_line(&failed, "127.0.0.1"), "web-1: ERROR: port taken");
        let registered = view("web-1", State::Registered, Some(42601), "");
        assert_eq!(
            state_line(&registered, "h"),
            "web-1: REGISTERED (port 42601)"
        );
    }

    #[test]
    fn show_prints_key_value_lines() {
        let text = show_lines(&view("web-1", State::Running, Some(42600), "ok"), "h");
        assert!(text.starts_with(
            "instance_id: web-1\nstate: RUNNING\nport: 42600\nurl: http://h:42600/\n"
        ));
        assert!(text.contains("restart: never\n"), "{text}");
        assert!(text.ends_with("message: ok\n"), "{text}");
    }

    #[test]
    fn wildcard_addresses_map_to_the_loopback() {
        assert_eq!(loopback_for_wildcard("0.0.0.0:42500"), "127.0.0.1:42500");
        assert_eq!(loopback_for_wildcard("[::]:42500"), "[::1]:42500");
        assert_eq!(loopback_for_wildcard("10.0.0.5:1"), "10.0.0.5:1");
    }

    #[test]
    fn answered_state_falls_back() {
        assert_eq!(
            answered_state(r#"{"state": "STOPPED"}"#, State::Deregistered),
            "STOPPED"
        );
        assert_eq!(answered_state("{}", State::Deregistered), "DEREGISTERED");
        assert_eq!(answered_state("", State::Stopped), "STOPPED");
    }

    #[test]
    fn manifest_becomes_a_register_request_with_an_absolute_source() {
        let dir = std::env::temp_dir().join(format!("pm-client-unit-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join("paasmaker.json"),
            r#"{"application": {"name": "hello"},
                "runtime": {"name": "shell", "version": "1",
                            "parameters": {"launch_command": "x %(port)d"}}}"#,
        )
        .unwrap();
        let body = read_manifest(&dir, Some("web-1".parse().unwrap())).unwrap();
        let request: RegisterRequest = serde_json::from_slice(&body).unwrap();
        assert_eq!(request.instance_id.as_deref(), Some("web-1"));
        assert_eq!(request.source, fs::canonicalize(&dir).unwrap());
        assert_eq!(request.manifest.application.name, "hello");

        fs::write(dir.join("paasmaker.json"), r#"{"application": 1}"#).unwrap();
        let failed = read_manifest(&dir, None).unwrap_err();
        assert_eq!(failed.code, Tool::Usage);
        let missing = read_manifest(&dir.join("nope"), None).unwrap_err();
        assert_eq!(missing.code, Tool::Usage);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn answers_map_to_text_or_refusals() {
        let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
        let addr = server.server_addr().to_ip().unwrap();
        let args = Args {
            command: Some(Command::List),
            data_dir: PathBuf::from("/nonexistent"),
            address: Some(format!("http://{addr}/")),
            token: Some("t0ken".into()),
            json: false,
            tail: None,
            id: None,
        };
        let heart = Heart::connect(&args).unwrap();
        let answers = [
            (200, r#"{"instances": []}"#),
            (404, r#"{"error": "no instance x"}"#),
            (502, "bad gateway\nmore"),
            (503, ""),
        ];
        let fake = std::thread::spawn(move || {
            for (status, body) in answers {
                let request = server.recv().unwrap();
                let auth = request
                    .headers()
                    .iter()
                    .find(|h| h.field.equiv("Authorization"))
                    .map(|h| h.value.to_string());
                assert_eq!(auth.as_deref(), Some("Bearer t0ken"));
                request
                    .respond(tiny_http::Response::from_string(body).with_status_code(status))
                    .unwrap();
            }
        });
        assert_eq!(heart.get("/instances").unwrap(), r#"{"instances": []}"#);
        let refused = heart.get("/instances/x").unwrap_err();
        assert_eq!(refused.code, Tool::Failure);
        assert_eq!(refused.error.to_string(), "no instance x (HTTP 404)");
        let refused = heart.get("/runtimes").unwrap_err();
        assert_eq!(refused.error.to_string(), "bad gateway (HTTP 502)");
        let refused = heart.get("/runtimes").unwrap_err();
        assert_eq!(refused.error.to_string(), "Service Unavailable (HTTP 503)");
        fake.join().unwrap();

        // A port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dead = Heart::connect(&Args {
            address: Some(format!("127.0.0.1:{port}")),
            ..args
        })
        .unwrap();
        let gone = dead.get("/instances").unwrap_err();
        assert_eq!(gone.code, Tool::Temporary);
        assert!(gone
            .error
            .to_string()
            .starts_with("unable to reach the heart at http://127.0.0.1:"));
    }
}
