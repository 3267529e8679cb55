//! The `rbenv` runtime: Ruby versions installed by rbenv.
//!
//! The root is the `rbenv_path` parameter, else `$RBENV_ROOT`, else
//! `~/.rbenv`. A version is a directory `ROOT/versions/NAME` holding
//! `bin/ruby`; VERSIONS lists each with its `X.Y`. ENVIRONMENT resolves the
//! request to the highest full match, sets `RBENV_VERSION` to it and
//! `RBENV_ROOT` to the root, and puts `ROOT/shims` then `ROOT/bin` first on
//! `PATH`, exactly once. EXECUTE is the `shell` runtime's. What every
//! version-manager runtime does is in `manager`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::manager::{self, Manager, Root};
use crate::error::Result;
use crate::protocol::Environment;

/// rbenv, as `manager` sees it; the runtime is `Managed(Rbenv)`.
#[derive(Debug)]
pub(crate) struct Rbenv;

impl Manager for Rbenv {
    fn name(&self) -> &'static str {
        "rbenv"
    }

    fn root(&self) -> Root {
        Root {
            parameter: "rbenv_path",
            variable: "RBENV_ROOT",
            home: ".rbenv",
        }
    }

    fn installed(&self, root: &Path) -> Result<BTreeMap<String, PathBuf>> {
        let versions = root.join("versions");
        Ok(manager::entries(&versions)?
            .into_iter()
            .map(|name| (versions.join(&name), name))
            .filter(|(home, _)| manager::is_file(&home.join("bin/ruby")))
            .map(|(home, name)| (name, home))
            .collect())
    }

    fn apply(&self, root: &Path, full: &str, _home: &Path, env: &mut Environment) -> Result<()> {
        manager::prepend_path(env, &[root.join("shims"), root.join("bin")])?;
        env.insert("RBENV_VERSION".to_string(), full.to_string());
        env.insert("RBENV_ROOT".to_string(), root.display().to_string());
        Ok(())
    }
}
