//! The `nvm` runtime: Node.js versions installed by nvm.
//!
//! The root is the `nvm_path` parameter, else `$NVM_DIR`, else `~/.nvm`.
//! A version is a directory `ROOT/versions/node/vX.Y.Z` (current nvm) or
//! `ROOT/vX.Y.Z` (old nvm) holding `bin/node`; when both layouts hold the
//! same version, the current one is used. Versions are listed without the
//! `v` (a request may carry one). ENVIRONMENT resolves the request to the
//! highest full match, puts that version's `bin` first on `PATH` exactly
//! once, and sets `NVM_DIR` and `NVM_BIN`. EXECUTE is the `shell`
//! runtime's. What every version-manager runtime does is in `manager`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::manager::{self, Manager, Root};
use crate::error::Result;
use crate::protocol::Environment;

/// nvm, as `manager` sees it; the runtime is `Managed(Nvm)`.
#[derive(Debug)]
pub(crate) struct Nvm;

impl Manager for Nvm {
    fn name(&self) -> &'static str {
        "nvm"
    }

    fn root(&self) -> Root {
        Root {
            parameter: "nvm_path",
            variable: "NVM_DIR",
            home: ".nvm",
        }
    }

    fn installed(&self, root: &Path) -> Result<BTreeMap<String, PathBuf>> {
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
    fn request<'a>(&self, requested: &'a str) -> &'a str {
        match requested.strip_prefix('v') {
            Some(rest) if rest.starts_with(|c: char| c.is_ascii_digit()) => rest,
            _ => requested,
        }
    }

    fn apply(&self, root: &Path, _full: &str, home: &Path, env: &mut Environment) -> Result<()> {
        let bin = home.join("bin");
        manager::prepend_path(env, std::slice::from_ref(&bin))?;
        env.insert("NVM_DIR".to_string(), root.display().to_string());
        env.insert("NVM_BIN".to_string(), bin.display().to_string());
        Ok(())
    }
}
