//! Register: check a register request against the node's runtimes, take a
//! port, copy the source into `instances/ID/`, and record the instance as
//! `REGISTERED`.
//!
//! While the source is copied the record is `ALLOCATED`: it holds its id
//! and port but is neither answered nor written to disk, so a crash in the
//! middle leaves no trace in the catalog (the stale copy is removed by the
//! next register of that id).

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::{lock, Node};
use crate::archive;
use crate::error::{Error, Refusal, Result};
use crate::fsutil;
use crate::heart::ports;
use crate::heart::record::{self, Backoff, Record};
use crate::process;
use crate::protocol::{self, InstanceId, InstanceView, RegisterRequest, State};
use crate::secret::random_hex;

/// Bound of copying or unpacking a source.
const COPY_TIMEOUT: Duration = Duration::from_secs(600);

/// How a source is copied.
#[derive(Debug, Clone, Copy)]
enum SourceKind {
    /// A directory: `cp -a SRC/. DEST`.
    Dir,
    /// A `.tar.gz` or `.tgz` file: unpacked by `archive::unpack`, which
    /// writes nothing outside `DEST` whatever the archive holds.
    TarGz,
}

/// The most an archive may unpack to.
const UNPACK_LIMITS: archive::Limits = archive::Limits {
    max_bytes: 8 << 30,
    max_members: 1_000_000,
};

impl Node {
    /// Registers an instance from the body of `POST /instances`.
    ///
    /// # Errors
    ///
    /// `BadRequest` for a malformed body or id or an empty application
    /// name; `Unprocessable` for an unknown runtime or version, bad
    /// parameters, or a missing or uncopyable source; `Conflict` for an id
    /// in use or an exhausted port range.
    pub(crate) fn register(&self, body: &[u8]) -> Result<InstanceView> {
        let req: RegisterRequest = serde_json::from_slice(body).map_err(|e| {
            Error::refused(
                Refusal::BadRequest,
                format!("invalid register request: {e}"),
            )
        })?;
        let manifest = &req.manifest;
        let id = match &req.instance_id {
            Some(id) => id.clone(),
            None => generate_id(&manifest.application.name)?,
        };
        if manifest.application.name.trim().is_empty() {
            return Err(Error::refused(
                Refusal::BadRequest,
                "application name is empty",
            ));
        }
        let unprocessable = |e: Error| Error::refused(Refusal::Unprocessable, e.to_string());
        let rt = self
            .registry
            .get(&manifest.runtime.name)
            .map_err(unprocessable)?;
        // With the instance's parameters: an `rbenv_path` or `nvm_path`
        // has versions of its own that the node default may lack.
        rt.resolve_version(&manifest.runtime.version, &manifest.runtime.parameters)
            .map_err(unprocessable)?;
        rt.validate(&manifest.runtime.parameters, manifest.standalone)
            .map_err(|e| {
                Error::refused(
                    Refusal::Unprocessable,
                    format!("runtime {}: {e}", manifest.runtime.name),
                )
            })?;
        let startup_timeout =
            record::startup_timeout(&manifest.runtime.parameters).map_err(unprocessable)?;
        let source = std::path::absolute(&req.source).map_err(|e| {
            Error::refused(
                Refusal::Unprocessable,
                format!("source {}: {e}", req.source.display()),
            )
        })?;
        let kind = source_kind(&source)?;

        let op = self.op_lock(&id);
        let _guard = lock(&op);
        let range = self.config.ports;
        let standalone = manifest.standalone;
        self.allocate(
            Record {
                instance_id: id.clone(),
                state: State::Allocated,
                port: None,
                application: manifest.application.clone(),
                version: manifest.version.clone(),
                runtime: manifest.runtime.clone(),
                standalone,
                exclusive: manifest.exclusive,
                startup: manifest.startup.clone(),
                environment: manifest.environment.clone(),
                restart: manifest.restart,
                source: source.clone(),
                message: "registering".into(),
                exit_key: None,
                supervisor: None,
                managed: false,
                stop_timeout: None,
                startup_timeout: Some(startup_timeout),
                stop_requested: false,
                running_since: None,
                backoff: Backoff::default(),
                health_check: manifest.health_check.clone(),
                app: None,
                restarts: 0,
                last_exit: None,
            },
            |held| {
                if standalone {
                    return Ok(None);
                }
                ports::allocate(range, held).map(Some).ok_or_else(|| {
                    Error::refused(
                        Refusal::Conflict,
                        format!("no free port left in the instance port range {range}"),
                    )
                })
            },
        )?;

        let dest = self.layout.instance(&id);
        let copied = copy_source(&source, kind, &dest);
        let result = copied.and_then(|()| {
            self.update_any(&id, |rec| {
                rec.state = State::Registered;
                rec.message = "registered".into();
                Ok(rec.view())
            })?
            .ok_or_else(|| Error::refused(Refusal::NotFound, format!("instance {id} vanished")))
        });
        if result.is_err() {
            let _ = fs::remove_dir_all(&dest);
            self.forget_allocated(&id);
        }
        result
    }
}

/// What kind of source `source` is.
///
/// # Errors
///
/// `Unprocessable` when it is missing or neither a directory nor a
/// `.tar.gz` file.
fn source_kind(source: &Path) -> Result<SourceKind> {
    let meta = fs::metadata(source).map_err(|e| {
        Error::refused(
            Refusal::Unprocessable,
            format!("source {}: {e}", source.display()),
        )
    })?;
    let name = source.to_string_lossy();
    if meta.is_dir() {
        Ok(SourceKind::Dir)
    } else if meta.is_file() && (name.ends_with(".tar.gz") || name.ends_with(".tgz")) {
        Ok(SourceKind::TarGz)
    } else {
        Err(Error::refused(
            Refusal::Unprocessable,
            format!(
                "source {} is neither a directory nor a .tar.gz file",
                source.display()
            ),
        ))
    }
}

/// Copies a directory (`cp -a SRC/. DEST`) or unpacks a `.tar.gz`
/// (`tar -xzf`) into `dest`, bounded by [`COPY_TIMEOUT`]; a failure
/// leaves no `dest` behind.
fn copy_source(source: &Path, kind: SourceKind, dest: &Path) -> Result<()> {
    if dest.exists() {
        fs::remove_dir_all(dest).map_err(|e| Error::io("remove stale", dest, e))?;
    }
    let failure = match kind {
        SourceKind::TarGz => match archive::unpack(source, dest, UNPACK_LIMITS) {
            Ok(_) => return Ok(()),
            Err(e) => Error::from(e).to_string(),
        },
        SourceKind::Dir => {
            fsutil::create_dir_all(dest, 0o755)?;
            let mut cmd = Command::new("cp");
            cmd.arg("-a").arg(source.join(".")).arg(dest);
            match process::bounded::output(&mut cmd, None, COPY_TIMEOUT, (0, 4096), "cp") {
                Ok(Some(out)) if out.status.success() => return Ok(()),
                Ok(Some(out)) => format!(
                    "cp exited with code {}: {}",
                    process::code_of_status(out.status),
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
                Ok(None) => format!("cp took longer than {} s", COPY_TIMEOUT.as_secs()),
                Err(e) => e.to_string(),
            }
        }
    };
    let _ = fs::remove_dir_all(dest);
    Err(Error::refused(
        Refusal::Unprocessable,
        format!("unable to copy {}: {failure}", source.display()),
    ))
}

/// An id for an instance registered without one: the application name
/// (letters, digits and `-` only) and 8 random hex digits.
fn generate_id(app: &str) -> Result<InstanceId> {
    let mut stem: String = app
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(protocol::INSTANCE_ID_MAX - 9)
        .collect();
    stem = stem.trim_matches('-').to_string();
    if stem.is_empty() {
        stem = "instance".into();
    }
    // Letters, digits and `-` within the length: always a valid id.
    format!("{stem}-{}", random_hex(4)?)
        .parse()
        .map_err(|e: protocol::InvalidId| Error::invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_valid() {
        let id = generate_id("My App/2").unwrap();
        assert!(id.len() <= protocol::INSTANCE_ID_MAX, "{id}");
        assert!(id.starts_with("My-App-2-"));
        assert!(generate_id("..").is_ok());
    }
}
