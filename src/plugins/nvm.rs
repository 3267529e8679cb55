//! The `nvm` runtime: Node.js versions installed by nvm.
//!
//! The root is the `nvm_path` parameter, else `$NVM_DIR`, else `~/.nvm`.
//! A version is a directory `ROOT/versions/node/vX.Y.Z` (current nvm) or
//! `ROOT/vX.Y.Z` (old nvm) holding `bin/node`; when both layouts hold the
//! same version, the current one is used. Versions are listed without the
//! `v` (a request may carry one). ENVIRONMENT resolves the request to the
//! highest full match, puts that version's `bin` first on `PATH` exactly
//! once, and sets `NVM_DIR` and `NVM_BIN`. EXECUTE is the `shell`
//! runtime's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::params::Supervised;
use super::{manager, shell, version, Context, Runtime, Started};
use crate::error::Result;
use crate::protocol::{Environment, Parameters, PluginInstance};

/// The instance parameter that names the root.
const ROOT_PARAMETER: &str = "nvm_path";

/// The built-in `nvm` runtime.
#[derive(Debug)]
pub(crate) struct Nvm;

impl Nvm {
    fn root(parameters: &Parameters) -> Result<PathBuf> {
        manager::root(parameters, ROOT_PARAMETER, "NVM_DIR", ".nvm")
    }
}

/// The versions installed under `root` (without the `v`), each with its
/// directory.
///
/// # Errors
///
/// A version directory exists but cannot be read.
pub(crate) fn installed(root: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let mut found = BTreeMap::new();
    // Old layout first, so that the current layout wins a tie.
    for dir in [root.to_path_buf(), root.join("versions/node")] {
        for name in manager::entries(&dir)? {
            let Some(number) = name.strip_prefix('v') else {
                continue;
            };
            if !number.starts_with(|c: char| c.is_ascii_digit()) {
                continue;
            }
            let home = dir.join(&name);
            if manager::is_file(&home.join("bin/node")) {
                found.insert(number.to_string(), home);
            }
        }
    }
    Ok(found)
}

/// The request without a leading `v`.
fn strip_v(requested: &str) -> &str {
    match requested.strip_prefix('v') {
        Some(rest) if rest.starts_with(|c: char| c.is_ascii_digit()) => rest,
        _ => requested,
    }
}

impl Runtime for Nvm {
    fn name(&self) -> &str {
        "nvm"
    }

    fn versions(&self) -> Result<Vec<String>> {
        let found = installed(&Nvm::root(&Parameters::new())?)?;
        Ok(version::listing(&found.into_keys().collect::<Vec<_>>()))
    }

    fn resolve_version(&self, requested: &str, parameters: &Parameters) -> Result<String> {
        let found = installed(&Nvm::root(parameters)?)?;
        let names: Vec<String> = found.into_keys().collect();
        version::resolve(self.name(), strip_v(requested), &names)
            .map_err(|_| version::no_match(self.name(), requested, &names))
    }

    fn environment(
        &self,
        requested: &str,
        env: &mut Environment,
        parameters: &Parameters,
    ) -> Result<()> {
        let root = Nvm::root(parameters)?;
        let found = installed(&root)?;
        let names: Vec<String> = found.keys().cloned().collect();
        let full = version::resolve(self.name(), strip_v(requested), &names)
            .map_err(|_| version::no_match(self.name(), requested, &names))?;
        let bin = found
            .get(&full)
            .map(|home| home.join("bin"))
            .ok_or_else(|| version::no_match(self.name(), requested, &names))?;
        manager::prepend_path(env, std::slice::from_ref(&bin))?;
        env.insert("NVM_DIR".to_string(), root.display().to_string());
        env.insert("NVM_BIN".to_string(), bin.display().to_string());
        Ok(())
    }

    fn validate(&self, parameters: &Parameters, _standalone: bool) -> Result<()> {
        Nvm::root(parameters)?;
        Supervised::parse(parameters).map(drop)
    }

    fn start(&self, _ctx: &Context, instance: &PluginInstance) -> Result<Started> {
        shell::start(instance)
    }
}
