//! The `pm-heart` client commands: `list`, `show`, `register`, `start`,
//! `stop`, `restart`, `signal`, `update`, `deregister`, `log`, `events`,
//! `runtimes` and `deploy` (`lifecycle` holds those of issue 11,
//! `observe` those of issue 13), talking to a
//! running heart whose address and token are read from its data directory
//! (`DATA_DIR/address`, `DATA_DIR/token`) or given as options.
//!
//! `args` turns the command line into a validated [`args::Args`], `http`
//! is the one connection to the heart (every command is one or two
//! requests through a single `ureq::Agent`), `render` prints the answers.
//!
//! Every failure is a [`Failed`] kind, and [`Failed::exit_code`] is the
//! one place that maps it to an exit status (`exit::Tool`): a request the
//! heart refused is 2 for "no such instance" (404), 3 for "refused in this
//! state" (409), 1 for any other status; misuse (a bad option, argument
//! or input file) is 100, a heart that cannot be reached, or whose
//! address or token file is missing, is 111; anything else (an answer
//! that cannot be read, a start that ended in `ERROR`) is 1. With
//! `--json` every failure is also printed on stdout as `{"error": ...}`.

mod args;
mod http;
mod lifecycle;
mod observe;
mod render;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::de::DeserializeOwned;
use serde_json::Value;

pub(crate) use self::args::VALUE_OPTIONS;
use self::args::{Args, Command, COMMANDS, USAGE};
use self::http::Heart;
use self::render::{
    answered_state, list_table, print, print_json, runtimes_table, show_lines, state_line,
};
use crate::archive;
use crate::cli;
use crate::error::Error;
use crate::exit::Tool;
use crate::heart::PROG;
use crate::protocol::{InstanceId, InstanceList, InstanceView, Manifest, RegisterRequest, State};

/// Why a client command failed; its exit status follows from the kind
/// alone ([`Failed::exit_code`]).
#[derive(Debug)]
enum Failed {
    /// Misuse: a bad input file or heart address.
    Misuse(Error),
    /// The heart cannot be reached, or its address or token file is
    /// missing or empty.
    Unreachable(Error),
    /// The heart answered with an error status.
    Refused {
        /// The HTTP status.
        status: u16,
        /// The text of its `{"error": ...}`.
        message: String,
        /// The whole body of the answer.
        answer: String,
    },
    /// Anything else: an answer that cannot be read, a start that ended
    /// in `ERROR`, output that cannot be written.
    Other(Error),
    /// A failure whose answer was printed already (with `--json`, the
    /// heart's own `{"error": ..., "instance": ...}`): exits like `inner`.
    Printed(Box<Failed>),
}

impl Failed {
    /// The exit status of this failure: the one mapping of the client.
    fn exit_code(&self) -> Tool {
        match self {
            Failed::Misuse(_) => Tool::Usage,
            Failed::Unreachable(_) => Tool::Temporary,
            Failed::Refused { status, .. } => refused_code(*status),
            Failed::Other(_) => Tool::Failure,
            Failed::Printed(inner) => inner.exit_code(),
        }
    }
}

/// The exit status of a request the heart refused with `status`
/// (`pm-heart(8)`, EXIT STATUS): 404 is "no such instance", 409 "refused
/// in this state", any other refusal a failure of the request.
fn refused_code(status: u16) -> Tool {
    match status {
        404 => Tool::NotFound,
        409 => Tool::Conflict,
        _ => Tool::Failure,
    }
}

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failed::Misuse(err) | Failed::Unreachable(err) | Failed::Other(err) => {
                write!(f, "{err}")
            }
            Failed::Refused {
                status, message, ..
            } => write!(f, "{}", Error::api(*status, message.clone())),
            Failed::Printed(inner) => write!(f, "{inner}"),
        }
    }
}

type Outcome<T> = std::result::Result<T, Failed>;

/// Runs client subcommand `command` with the arguments that follow it.
pub(crate) fn run(command: &str, args: Vec<OsString>) -> ExitCode {
    let json = args.iter().any(|a| a == "--json");
    let args = match args::parse(command, args, args::Environment::read()) {
        Ok(args) => args,
        Err(err) => {
            if json {
                print_error_json(&err.to_string(), None);
            }
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
            if args.json {
                print_failure_json(&failed);
            }
            cli::fatal(PROG, &failed);
            failed.exit_code().into()
        }
    }
}

/// With `--json`, a failure is also printed on stdout as `{"error": ...}`
/// (with `"status"`, the HTTP status, when the heart refused), unless the
/// heart's own answer was printed already (a start that ended in ERROR).
fn print_failure_json(failed: &Failed) {
    match failed {
        Failed::Refused {
            status, message, ..
        } => print_error_json(message, Some(*status)),
        Failed::Printed(_) => {}
        other => print_error_json(&other.to_string(), None),
    }
}

/// Prints `{"error": MESSAGE, "status": STATUS}` on stdout.
fn print_error_json(message: &str, status: Option<u16>) {
    let mut body = serde_json::json!({ "error": message });
    if let Some(status) = status {
        body["status"] = serde_json::Value::from(status);
    }
    let _ = cli::print(&format!("{body}\n"));
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
        Command::Deploy(ref dir) => {
            // A heart named by --address may not see this machine's files:
            // the source travels as an upload.
            let uploaded = match &args.address {
                Some(_) => Some(upload_dir(&heart, dir)?),
                None => None,
            };
            if args.replace {
                let body = match uploaded {
                    Some(source) => read_manifest_from(dir, None, source)?,
                    None => read_manifest(dir, None)?,
                };
                return lifecycle::replace(&heart, dir, &body, args.json);
            }
            let target = match args.new {
                true => None,
                false => lifecycle::redeploy_target(&heart, dir, args.id.as_ref())?,
            };
            match target {
                Some(id) => lifecycle::redeploy(&heart, dir, &id, uploaded, args.json),
                None => {
                    let body = match uploaded {
                        Some(source) => read_manifest_from(dir, args.id.clone(), source)?,
                        None => body.unwrap_or_default(),
                    };
                    register_and_start(&heart, &command, Some(body), args.json)
                }
            }
        }
        Command::Register(_) => register_and_start(&heart, &command, body, args.json),

        Command::Start(id) => start(&heart, &id, args.json),
        Command::StartAll => lifecycle::start_all(&heart, args.json),
        Command::Stop(id) => {
            let text = heart.post(&format!("/instances/{id}/stop"), None)?;
            if !args.json && already(&text) {
                return print(&format!(
                    "{id}: already {}\n",
                    answered_state(&text, State::Stopped)
                ));
            }
            print_state(&id, &text, State::Stopped, args.json)
        }
        Command::Restart(id) => lifecycle::restart(&heart, &id, args.json),
        Command::Signal(id, signal) => lifecycle::signal(&heart, &id, signal, args.json),
        Command::Update(id, update) => lifecycle::update(&heart, &id, &update, args.json),
        Command::Deregister(id) => {
            let text = heart.delete(&format!("/instances/{id}"))?;
            print_state(&id, &text, State::Deregistered, args.json)
        }
        Command::Log(id) => observe::show_log(&heart, &format!("/instances/{id}/log"), args),
        Command::Events => observe::show_log(&heart, "/events", args),
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

/// Registers (and for `deploy`, starts) from the request `body`.
fn register_and_start(
    heart: &Heart,
    command: &Command,
    body: Option<Vec<u8>>,
    json: bool,
) -> Outcome<()> {
    let body = body.unwrap_or_default();
    let text = heart.post("/instances", Some(&body))?;
    let view: InstanceView = decode(&text)?;
    if matches!(command, Command::Register(_)) {
        if json {
            return print_json(&text);
        }
        return print(&format!("{}\n", state_line(&view, &heart.app_host)));
    }
    if !json {
        print(&format!("{}\n", state_line(&view, &heart.app_host)))?;
    }
    start(heart, &view.instance_id, json)
}

/// True when an idempotent start or stop answered `"already": true`.
fn already(text: &str) -> bool {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| v.get("already")?.as_bool())
        .unwrap_or(false)
}

/// Prints the answer to a stop or deregister: `ID: STATE` (`expected`
/// when the answer names no state), or the answer itself with `--json`.
fn print_state(id: &InstanceId, text: &str, expected: State, json: bool) -> Outcome<()> {
    if json {
        return print_json(text);
    }
    print(&format!("{id}: {}\n", answered_state(text, expected)))
}

/// Starts `id` and prints where it ended; a start that ends in ERROR is
/// a failure with the instance's message.
fn start(heart: &Heart, id: &InstanceId, json: bool) -> Outcome<()> {
    let text = match heart.post(&format!("/instances/{id}/start"), None) {
        Ok(text) => text,
        Err(failed) => return Err(start_refused(heart, id, json, failed)),
    };
    let view: InstanceView = decode(&text)?;
    if json {
        print_json(&text)?;
    } else if already(&text) {
        print(&format!("{id}: already RUNNING\n"))?;
    } else {
        print(&format!("{}\n", state_line(&view, &heart.app_host)))?;
    }
    if view.state == State::Error {
        let failed = Failed::Other(Error::invalid(format!(
            "unable to start {id}: {}",
            view.message.trim_end()
        )));
        return Err(if json {
            Failed::Printed(Box::new(failed))
        } else {
            failed
        });
    }
    Ok(())
}

/// A refused start. When it ended in ERROR the heart adds the instance
/// to its `{"error": ...}`: its state is printed like a successful
/// answer's, and the error names what failed. Other refusals (unknown
/// instance, wrong state) are passed on as they are.
fn start_refused(heart: &Heart, id: &InstanceId, json: bool, failed: Failed) -> Failed {
    let Failed::Refused {
        status,
        message,
        answer,
    } = failed
    else {
        return failed;
    };
    let ended_in_error = serde_json::from_str::<Value>(&answer)
        .ok()
        .and_then(|body| serde_json::from_value::<InstanceView>(body.get("instance")?.clone()).ok())
        .filter(|view| view.state == State::Error);
    let Some(view) = ended_in_error else {
        return Failed::Refused {
            status,
            message,
            answer,
        };
    };
    let printed = if json {
        print_json(&answer)
    } else {
        print(&format!("{}\n", state_line(&view, &heart.app_host)))
    };
    if let Err(err) = printed {
        return err;
    }
    let failed = Failed::Refused {
        status,
        message: format!("unable to start {id}: {}", message.trim_end()),
        answer,
    };
    if json {
        Failed::Printed(Box::new(failed))
    } else {
        failed
    }
}

/// Reads the body of `POST /instances` from `file`. A relative `source`
/// is taken relative to the directory of `file`, since the heart resolves
/// paths from its own working directory.
fn read_register_file(file: &Path) -> Outcome<Vec<u8>> {
    let text = fs::read_to_string(file)
        .map_err(|e| Failed::Misuse(Error::io("read register file", file, e)))?;
    let mut request: RegisterRequest = serde_json::from_str(&text)
        .map_err(|e| Failed::Misuse(Error::json(format!("register file {}", file.display()), e)))?;
    if request.source.is_relative() {
        let base = file.parent().unwrap_or(Path::new("."));
        request.source = absolute(&base.join(&request.source))?;
    }
    encode(&request)
}

/// Reads `DIR/paasmaker.json` and makes it a register request with `DIR`
/// (absolute) as the source.
fn read_manifest(dir: &Path, instance_id: Option<InstanceId>) -> Outcome<Vec<u8>> {
    let (source, _) = load_manifest(dir)?;
    read_manifest_from(dir, instance_id, source)
}

/// Reads `DIR/paasmaker.json` and makes it a register request with
/// `source` as the source.
fn read_manifest_from(
    dir: &Path,
    instance_id: Option<InstanceId>,
    source: PathBuf,
) -> Outcome<Vec<u8>> {
    let (_, manifest) = load_manifest(dir)?;
    encode(&RegisterRequest {
        instance_id,
        source,
        source_sha256: None,
        manifest,
    })
}

/// Packs `dir` (less what its `.pmignore` names) into a temporary
/// `.tar.gz`, uploads it (`POST /uploads`) with a progress line on a
/// terminal, and answers the source that names it: `upload:ID`.
fn upload_dir(heart: &Heart, dir: &Path) -> Outcome<PathBuf> {
    use std::io::IsTerminal;
    let path = std::env::temp_dir().join(format!("pm-deploy-{}.tar.gz", std::process::id()));
    let packed = {
        let mut file =
            fs::File::create(&path).map_err(|e| Failed::Other(Error::io("create", &path, e)))?;
        archive::pack(dir, &mut file).map_err(Failed::Other)
    };
    let packed = match packed {
        Ok(packed) => packed,
        Err(e) => {
            let _ = fs::remove_file(&path);
            return Err(e);
        }
    };
    let size = fs::metadata(&path).map_or(0, |m| m.len());
    eprintln!(
        "{PROG}: packed {} ({} members, {size} bytes)",
        dir.display(),
        packed.members
    );
    let terminal = std::io::stderr().is_terminal();
    let started = std::time::Instant::now();
    let mut shown = 0u64;
    let mut progress = |sent: u64| {
        if terminal && (sent - shown >= 1 << 20 || sent == size) {
            shown = sent;
            let rate = sent as f64 / started.elapsed().as_secs_f64().max(1e-3) / 1e6;
            eprint!("\ruploading: {sent} of {size} bytes, {rate:.1} MB/s");
        }
    };
    let answer = heart.upload(&path, &mut progress);
    let _ = fs::remove_file(&path);
    if terminal {
        eprintln!();
    }
    let text = answer?;
    let upload: serde_json::Value = decode(&text)?;
    let id = upload["upload"].as_str().unwrap_or_default().to_string();
    eprintln!(
        "{PROG}: uploaded {size} bytes as upload {id} (sha256 {})",
        upload["sha256"].as_str().unwrap_or_default()
    );
    Ok(PathBuf::from(format!("upload:{id}")))
}

/// `DIR` made absolute, and the manifest `DIR/paasmaker.json`.
fn load_manifest(dir: &Path) -> Outcome<(PathBuf, Manifest)> {
    let source = absolute(dir)?;
    let file = source.join("paasmaker.json");
    let text = fs::read_to_string(&file)
        .map_err(|e| Failed::Misuse(Error::io("read manifest", &file, e)))?;
    let manifest: Manifest = serde_json::from_str(&text)
        .map_err(|e| Failed::Misuse(Error::json(format!("manifest {}", file.display()), e)))?;
    Ok((source, manifest))
}

fn absolute(path: &Path) -> Outcome<PathBuf> {
    fs::canonicalize(path).map_err(|e| Failed::Misuse(Error::io("resolve", path, e)))
}

fn encode<T: serde::Serialize>(value: &T) -> Outcome<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| Failed::Other(Error::json("register request", e)))
}

fn decode<T: DeserializeOwned>(text: &str) -> Outcome<T> {
    serde_json::from_str(text).map_err(|e| Failed::Other(Error::json("answer from the heart", e)))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(failed.exit_code(), Tool::Usage);
        let missing = read_manifest(&dir.join("nope"), None).unwrap_err();
        assert_eq!(missing.exit_code(), Tool::Usage);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn every_refusal_is_a_failure_and_names_its_status() {
        let refused = Failed::Refused {
            status: 409,
            message: "cannot start x: it is RUNNING".into(),
            answer: String::new(),
        };
        assert_eq!(refused.exit_code(), Tool::Conflict);
        assert_eq!(refused_code(404), Tool::NotFound);
        assert_eq!(refused_code(500), Tool::Failure);
        assert_eq!(refused_code(401), Tool::Failure);
        assert_eq!(
            refused.to_string(),
            "cannot start x: it is RUNNING (HTTP 409)"
        );
        assert_eq!(
            Failed::Misuse(Error::Usage("x".into())).exit_code(),
            Tool::Usage
        );
        assert_eq!(
            Failed::Unreachable(Error::Http("x".into())).exit_code(),
            Tool::Temporary
        );
    }
}
