//! The `rbenv` runtime: Ruby versions installed by rbenv.
//!
//! The root is the `rbenv_path` parameter, else `$RBENV_ROOT`, else
//! `~/.rbenv`. A version is a directory `ROOT/versions/NAME` holding
//! `bin/ruby`; VERSIONS lists each with its `X.Y`. ENVIRONMENT resolves the
//! request to the highest full match, sets `RBENV_VERSION` to it and
//! `RBENV_ROOT` to the root, and puts `ROOT/shims` then `ROOT/bin` first on
//! `PATH`, exactly once. EXECUTE is the `shell` runtime's.

use std::path::{Path, PathBuf};

use super::params::Supervised;
use super::{manager, shell, version, Context, Runtime, Started};
use crate::error::Result;
use crate::protocol::{Environment, Parameters, PluginInstance};

/// The instance parameter that names the root.
const ROOT_PARAMETER: &str = "rbenv_path";

/// The built-in `rbenv` runtime.
#[derive(Debug)]
pub(crate) struct Rbenv;

impl Rbenv {
    fn root(parameters: &Parameters) -> Result<PathBuf> {
        manager::root(parameters, ROOT_PARAMETER, "RBENV_ROOT", ".rbenv")
    }
}

/// The full versions installed under `root`, unsorted.
///
/// # Errors
///
/// `ROOT/versions` exists but cannot be read.
pub(crate) fn installed(root: &Path) -> Result<Vec<String>> {
    let versions = root.join("versions");
    Ok(manager::entries(&versions)?
        .into_iter()
        .filter(|name| manager::is_file(&versions.join(name).join("bin/ruby")))
        .collect())
}

impl Runtime for Rbenv {
    fn name(&self) -> &str {
        "rbenv"
    }

    fn versions(&self) -> Result<Vec<String>> {
        Ok(version::listing(&installed(&Rbenv::root(
            &Parameters::new(),
        )?)?))
    }

    fn resolve_version(&self, requested: &str, parameters: &Parameters) -> Result<String> {
        let found = installed(&Rbenv::root(parameters)?)?;
        version::resolve(self.name(), requested, &found)
    }

    fn environment(
        &self,
        requested: &str,
        env: &mut Environment,
        parameters: &Parameters,
    ) -> Result<()> {
        let root = Rbenv::root(parameters)?;
        let full = version::resolve(self.name(), requested, &installed(&root)?)?;
        manager::prepend_path(env, &[root.join("shims"), root.join("bin")])?;
        env.insert("RBENV_VERSION".to_string(), full);
        env.insert("RBENV_ROOT".to_string(), root.display().to_string());
        Ok(())
    }

    fn validate(&self, parameters: &Parameters, _standalone: bool) -> Result<()> {
        Rbenv::root(parameters)?;
        Supervised::parse(parameters).map(drop)
    }

    fn start(&self, _ctx: &Context, instance: &PluginInstance) -> Result<Started> {
        shell::start(instance)
    }
}
