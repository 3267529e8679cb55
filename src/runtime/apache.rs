//! The `php` and `static` runtimes: one managed Apache per node.
//!
//! The heart runs a single Apache (mpm_prefork, with mod_php when the node
//! has it) from its own server root, `DATA_DIR/runtimes/apache/`, under
//! its own detached `pm-supervisor`. Every instance is one file,
//! `instances/ID.conf`: a `Listen 127.0.0.1:PORT` and a `<VirtualHost>` on
//! that port. Start writes the file, stop removes it, and each change is
//! tested with `apache2 -t` before a graceful reload (`-k graceful`), so a
//! file that Apache rejects never reaches the running server.
//!
//! Invariants:
//!
//! - All Apache operations (write, test, reload, launch, stop) run under
//!   one lock, so two instances starting at once never race on a reload.
//! - Apache runs only while it has at least one instance (it refuses to
//!   start without a `Listen`), and stops when the last one goes, unless
//!   `PM_APACHE_KEEP_PORT` gives it a placeholder port to keep running on.
//! - Apache gets an empty environment and a configuration that uses no
//!   `${VAR}`, so no `${...}` in a value can ever be expanded, and the
//!   Debian `APACHE_*` variables are not needed.
//! - A broken file of another instance found by the test is set aside
//!   (`ID.conf.rejected`, with Apache's message in `ID.error`) and that
//!   instance's `status` fails with the message; the others keep serving.
//! - The instance environment reaches PHP as `SetEnv NAME "VALUE"`, with
//!   `\` and `"` escaped. A newline, carriage return or NUL cannot be
//!   written into a directive at all, so such a value fails the start with
//!   an error naming the variable: encoding it would hand the application
//!   a value it was never given.
//! - An instance's Apache error log, which holds PHP's errors, is the
//!   instance log `DATA_DIR/logs/ID.log`, so `pm-heart log ID` shows it.
//! - Status is: Apache's supervisor alive, the file present, and a TCP
//!   connect to the port (SPEC §4's RUNNING; an Apache whose workers are
//!   all busy still accepts, and is not taken for dead).
//! - The supervisor's exit report goes to the heart under the instance id
//!   [`SUPERVISOR_ID`] with a random key that no instance ever holds, so
//!   the heart refuses it (403 or 404) and nothing changes; the
//!   supervisor gives up at once (`report_deadline` 0) and its `.exited`
//!   file lands in the Apache directory, where nobody reads it. Apache's
//!   death is found by `status` (the supervisor identity), never by the
//!   report.

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use nix::unistd::{Group, Uid, User};
use serde_json::Value;

use super::{require_version, resolve_inside, shell, Context, Runtime, Started};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::net;
use crate::process::Identity;
use crate::protocol::{
    self, Command as Argv, ControlFile, Environment, InstanceId, Parameters, PluginInstance,
    Seconds,
};
use crate::supervise::{self, Terminated};
use crate::wait;

/// The instance id in the Apache supervisor's control file.
pub(crate) const SUPERVISOR_ID: &str = "pm-managed-apache";

fn supervisor_id() -> InstanceId {
    SUPERVISOR_ID
        .parse()
        .expect("SUPERVISOR_ID is a valid instance id")
}

/// Environment variable: a port for a placeholder `Listen` that keeps
/// Apache running when it has no instance.
pub(crate) const KEEP_PORT_VAR: &str = "PM_APACHE_KEEP_PORT";

/// Environment variable: the Apache binary to use instead of searching.
pub(crate) const BINARY_VAR: &str = "PM_APACHE_BIN";

/// Apache binary names, in order of preference.
const BINARY_NAMES: [&str; 2] = ["apache2", "httpd"];

/// Where Apache binaries live when they are not on `PATH` (Debian puts
/// `apache2` in `/usr/sbin`, which is not on a user's `PATH`).
const BINARY_DIRS: [&str; 5] = [
    "/usr/sbin",
    "/usr/local/sbin",
    "/usr/local/apache2/bin",
    "/usr/bin",
    "/sbin",
];

/// Where Apache modules live: Debian, RHEL (64 and 32 bit), a source build.
const MODULE_DIRS: [&str; 5] = [
    "/usr/lib/apache2/modules",
    "/usr/lib64/httpd/modules",
    "/usr/lib/httpd/modules",
    "/usr/local/apache2/modules",
    "/usr/libexec/apache2",
];

/// Modules Apache cannot serve an instance without.
const REQUIRED_MODULES: [&str; 5] = ["mpm_prefork", "authz_core", "mime", "dir", "env"];

/// Modules loaded when the node has them (and they are not built in), for
/// `.htaccess` files that use them.
const OPTIONAL_MODULES: [&str; 10] = [
    "unixd",
    "authz_host",
    "access_compat",
    "alias",
    "rewrite",
    "headers",
    "expires",
    "setenvif",
    "filter",
    "deflate",
];

/// The system's MIME types (Debian and RHEL both have it).
const SYSTEM_MIME_TYPES: &str = "/etc/mime.types";

/// The MIME types written into the server root when the system has none
/// (Apache will not start without a types file).
const MIME_TYPES: &str = "text/html html htm\ntext/css css\ntext/plain txt\n\
    text/javascript js mjs\napplication/json json\napplication/xml xml\n\
    image/png png\nimage/jpeg jpg jpeg\nimage/gif gif\nimage/svg+xml svg\n\
    image/webp webp\nimage/x-icon ico\nfont/woff woff\nfont/woff2 woff2\n\
    application/pdf pdf\napplication/zip zip\n";

/// Users Apache's children run as when the heart runs as root.
const ROOT_USERS: [&str; 3] = ["www-data", "apache", "nobody"];

/// How long Apache may take to answer when it is relaunched after a
/// failed reload (a start waits its `start_timeout`).
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a removed instance's port may take to close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// From SIGTERM to SIGKILL for Apache's supervisor.
const STOP_TIMEOUT: Seconds = Seconds::from_secs(10);
/// One HTTP probe's connect and read timeout.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How much of Apache's log a failure quotes.
const LOG_TAIL_BYTES: u64 = 2048;

/// Serialises every Apache operation of this process.
static LOCK: Mutex<()> = Mutex::new(());

/// The built-in `php` runtime: mod_php in the managed Apache.
#[derive(Debug)]
pub(crate) struct Php;

/// The built-in `static` runtime: files served by the managed Apache.
#[derive(Debug)]
pub(crate) struct Static;

impl Runtime for Php {
    fn name(&self) -> &str {
        "php"
    }

    fn versions(&self) -> Result<Vec<String>> {
        let install = Install::find()?;
        if install.mod_php.is_none() {
            return Err(Error::invalid(format!(
                "mod_php is not installed (no libphp*.so in {})",
                install.module_dir.display()
            )));
        }
        php_versions()
    }

    fn environment(&self, version: &str, _env: &mut Environment, _: &Parameters) -> Result<()> {
        require_version(self.name(), version, &self.versions()?)
    }

    fn validate(&self, parameters: &Parameters, standalone: bool) -> Result<()> {
        validate(self.name(), parameters, standalone)
    }

    fn start(&self, ctx: &Context, instance: &PluginInstance) -> Result<Started> {
        start(ctx, instance, Flavor::Php)
    }

    fn stop(&self, ctx: &Context, instance: &PluginInstance) -> Result<String> {
        stop(ctx, instance)
    }

    fn status(&self, ctx: &Context, instance: &PluginInstance) -> Result<String> {
        status(ctx, instance)
    }
}

impl Runtime for Static {
    fn name(&self) -> &str {
        "static"
    }

    fn versions(&self) -> Result<Vec<String>> {
        Install::find()?;
        Ok(vec!["1".to_string()])
    }

    fn environment(&self, version: &str, _env: &mut Environment, _: &Parameters) -> Result<()> {
        require_version(self.name(), version, &self.versions()?)
    }

    fn validate(&self, parameters: &Parameters, standalone: bool) -> Result<()> {
        validate(self.name(), parameters, standalone)
    }

    fn start(&self, ctx: &Context, instance: &PluginInstance) -> Result<Started> {
        start(ctx, instance, Flavor::Static)
    }

    fn stop(&self, ctx: &Context, instance: &PluginInstance) -> Result<String> {
        stop(ctx, instance)
    }

    fn status(&self, ctx: &Context, instance: &PluginInstance) -> Result<String> {
        status(ctx, instance)
    }
}

/// Which of the two runtimes an instance file is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavor {
    Php,
    Static,
}

// ---- the installation -----------------------------------------------------

/// The node's Apache: binary, module directory, mod_php.
#[derive(Debug, Clone)]
struct Install {
    binary: PathBuf,
    module_dir: PathBuf,
    mod_php: Option<PathBuf>,
}

impl Install {
    /// Finds Apache: `$PM_APACHE_BIN`, else `apache2` or `httpd` on `PATH`
    /// or in the usual sbin directories; modules in the first of the usual
    /// module directories that has `mod_mpm_prefork.so`.
    fn find() -> Result<Install> {
        let binary = find_binary()?;
        let module_dir = MODULE_DIRS
            .iter()
            .map(PathBuf::from)
            .find(|dir| dir.join("mod_mpm_prefork.so").is_file())
            .ok_or_else(|| {
                Error::invalid(format!(
                    "Apache modules not found (no mod_mpm_prefork.so in {})",
                    MODULE_DIRS.join(", ")
                ))
            })?;
        let mod_php = find_mod_php(&module_dir);
        Ok(Install {
            binary,
            module_dir,
            mod_php,
        })
    }

    /// The modules compiled into the binary (`-l`), which must not be
    /// loaded again.
    fn builtin_modules(&self) -> Vec<String> {
        let Ok(output) = Command::new(&self.binary)
            .arg("-l")
            .env_clear()
            .stdin(Stdio::null())
            .output()
        else {
            return Vec::new();
        };
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| {
                let name = line.trim().strip_prefix("mod_")?.strip_suffix(".c")?;
                Some(name.to_string())
            })
            .collect()
    }
}

fn find_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(BINARY_VAR).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(Error::invalid(format!(
                "{BINARY_VAR}={} is not a file",
                path.display()
            )))
        };
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(BINARY_DIRS.iter().map(PathBuf::from));
    for name in BINARY_NAMES {
        for dir in &dirs {
            let path = dir.join(name);
            if is_executable(&path) {
                return Ok(path);
            }
        }
    }
    Err(Error::invalid(format!(
        "Apache is not installed (no apache2 or httpd on PATH or in {})",
        BINARY_DIRS.join(", ")
    )))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `libphp*.so` (PHP 7 and 8) or `mod_php*.so` (RHEL) in `dir`; the
/// highest name when there are several.
fn find_mod_php(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .ok()?
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                (n.starts_with("libphp") || n.starts_with("mod_php")) && n.ends_with(".so")
            })
        })
        .collect();
    found.sort();
    found.pop()
}

/// The node's PHP versions from `php -v`: `["8.2", "8.2.36"]`.
fn php_versions() -> Result<Vec<String>> {
    let output = Command::new("php")
        .arg("-v")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::io("run", "php -v", e))?;
    if !output.status.success() {
        return Err(Error::invalid(format!(
            "php -v failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    parse_php_version(&text).ok_or_else(|| {
        Error::invalid(format!(
            "cannot read a version from php -v: {}",
            text.trim()
        ))
    })
}

/// `PHP 8.2.36 (cli) ...` → `["8.2", "8.2.36"]`.
fn parse_php_version(text: &str) -> Option<Vec<String>> {
    let word = text.split_whitespace().nth(1)?;
    let full: String = word
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let parts: Vec<&str> = full.split('.').collect();
    if parts.len() < 2 || parts.iter().any(|p| p.is_empty()) {
        return None;
    }
    let short = format!("{}.{}", parts[0], parts[1]);
    if short == full {
        Some(vec![short])
    } else {
        Some(vec![short, full])
    }
}

// ---- the files --------------------------------------------------------

/// The managed Apache's files under `DATA_DIR/runtimes/apache/`.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    /// The server root.
    pub dir: PathBuf,
    /// The main configuration.
    pub conf: PathBuf,
    /// One `ID.conf` per instance.
    pub instances: PathBuf,
    /// Apache's runtime directory (mutexes, scoreboard, pid file).
    pub run: PathBuf,
    /// Apache's own pid file.
    pub httpd_pid: PathBuf,
    /// The supervisor's control file.
    pub control: PathBuf,
    /// The supervisor's pid file.
    pub supervisor_pid: PathBuf,
    /// The supervisor's startflag file.
    pub startflag: PathBuf,
    /// The supervisor's identity, recorded at launch.
    pub identity: PathBuf,
    /// The supervisor's log and Apache's main error log.
    pub log: PathBuf,
}

impl Layout {
    /// The layout under `data_dir`.
    pub(crate) fn new(data_dir: &Path) -> Layout {
        // Apache and its supervisor run elsewhere: every path is absolute.
        let data_dir = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
        let dir = data_dir.join("runtimes").join("apache");
        let run = dir.join("run");
        Layout {
            conf: dir.join("httpd.conf"),
            instances: dir.join("instances"),
            httpd_pid: run.join("httpd.pid"),
            run,
            control: dir.join("supervisor.json"),
            supervisor_pid: dir.join("supervisor.pid"),
            startflag: dir.join("supervisor.started"),
            identity: dir.join("supervisor.identity"),
            log: dir.join("apache.log"),
            dir,
        }
    }

    fn instance_conf(&self, id: &str) -> PathBuf {
        self.instances.join(format!("{id}.conf"))
    }

    fn rejected(&self, id: &str) -> PathBuf {
        self.instances.join(format!("{id}.conf.rejected"))
    }

    fn error(&self, id: &str) -> PathBuf {
        self.instances.join(format!("{id}.error"))
    }

    fn create(&self) -> Result<()> {
        fsutil::create_dir_all(&self.instances, 0o755)?;
        fsutil::create_dir_all(&self.run, 0o755)
    }

    /// The ids that have an instance file.
    fn configured(&self) -> Vec<InstanceId> {
        let Ok(entries) = fs::read_dir(&self.instances) else {
            return Vec::new();
        };
        let mut ids: Vec<InstanceId> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let id = name.strip_suffix(".conf")?;
                id.parse::<protocol::InstanceId>().ok()
            })
            .collect();
        ids.sort();
        ids
    }
}

// ---- parameters -------------------------------------------------------

/// Register-time checks: no standalone, a well-formed `document_root`
/// that cannot leave the instance directory by its text (symlinks are
/// checked at start, once the files are there), a valid `start_timeout`.
fn validate(runtime: &str, parameters: &Parameters, standalone: bool) -> Result<()> {
    if standalone {
        return Err(Error::invalid(format!(
            "runtime {runtime} cannot run standalone instances: Apache serves them on a port"
        )));
    }
    if let Some(root) = document_root(parameters)? {
        check_relative(root)?;
    }
    shell::seconds_param(parameters, "start_timeout", shell::DEFAULT_START_TIMEOUT)?;
    Ok(())
}

fn document_root(parameters: &Parameters) -> Result<Option<&str>> {
    match parameters.get("document_root") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Error::invalid(
            "parameter document_root must be a relative path",
        )),
    }
}

/// Refuses an absolute path, control characters, and `..` that climbs
/// above the start.
fn check_relative(root: &str) -> Result<()> {
    if root.chars().any(char::is_control) {
        return Err(Error::invalid(
            "parameter document_root contains a control character",
        ));
    }
    let path = Path::new(root);
    if path.is_absolute() {
        return Err(Error::invalid(format!(
            "parameter document_root {root} must be a relative path"
        )));
    }
    let mut depth: usize = 0;
    for component in path.components() {
        match component {
            std::path::Component::ParentDir => {
                depth = depth.checked_sub(1).ok_or_else(|| {
                    Error::invalid(format!(
                        "parameter document_root {root} leaves the instance directory"
                    ))
                })?;
            }
            std::path::Component::Normal(_) => depth += 1,
            _ => {}
        }
    }
    Ok(())
}

/// The document root of `instance`, resolved (symlinks included) and
/// checked to be inside its directory.
fn resolve_document_root(instance: &PluginInstance) -> Result<PathBuf> {
    let root = document_root(&instance.parameters)?;
    match root {
        None => instance
            .path
            .canonicalize()
            .map_err(|e| Error::io("resolve", &instance.path, e)),
        Some(root) => {
            check_relative(root)?;
            resolve_inside(&instance.path, Path::new(root))
                .map_err(|e| Error::invalid(format!("parameter document_root: {e}")))
        }
    }
}

// ---- configuration text ----------------------------------------------------

/// One directive argument in double quotes, with `\` and `"` escaped as
/// Apache's parser unescapes them.
///
/// # Errors
///
/// A newline, carriage return or NUL: Apache has no escape for them in an
/// argument (a newline ends the directive), so they are refused rather
/// than silently changed.
fn quote(what: &str, value: &str) -> Result<String> {
    if let Some(c) = value.chars().find(|c| matches!(c, '\n' | '\r' | '\0')) {
        return Err(Error::invalid(format!(
            "{what} contains a {}, which an Apache configuration cannot hold",
            match c {
                '\n' => "newline",
                '\r' => "carriage return",
                _ => "NUL byte",
            }
        )));
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    Ok(out)
}

fn quote_path(what: &str, path: &Path) -> Result<String> {
    let text = path
        .to_str()
        .ok_or_else(|| Error::invalid(format!("{what} {} is not UTF-8", path.display())))?;
    quote(what, text)
}

/// An environment variable name that is one bare Apache word.
fn valid_env_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// The main configuration, `httpd.conf`.
fn main_config(layout: &Layout, install: &Install, keep_port: Option<u16>) -> Result<String> {
    let mut c = String::new();
    c.push_str("# The managed Apache of pm-heart: written on every start, do not edit.\n");
    c.push_str("# Instances are the files in instances/; no variable is referenced here.\n");
    let root = quote_path("data directory", &layout.dir)?;
    c.push_str(&format!("ServerRoot {root}\n"));
    c.push_str(&format!(
        "PidFile {}\n",
        quote_path("data directory", &layout.httpd_pid)?
    ));
    let run = quote_path("data directory", &layout.run)?;
    c.push_str(&format!("DefaultRuntimeDir {run}\n"));
    let mutex_dir = layout
        .run
        .to_str()
        .ok_or_else(|| Error::invalid("data directory is not UTF-8"))?;
    c.push_str(&format!(
        "Mutex {} default\n",
        quote("data directory", &format!("file:{mutex_dir}"))?
    ));
    c.push_str(&format!(
        "ErrorLog {}\nLogLevel warn\n",
        quote_path("data directory", &layout.log)?
    ));

    let builtin = install.builtin_modules();
    let module = |name: &str| install.module_dir.join(format!("mod_{name}.so"));
    for name in REQUIRED_MODULES {
        let path = module(name);
        if !path.is_file() {
            return Err(Error::invalid(format!(
                "Apache module {name} is not installed (no {})",
                path.display()
            )));
        }
        c.push_str(&format!(
            "LoadModule {name}_module {}\n",
            quote_path("module", &path)?
        ));
    }
    for name in OPTIONAL_MODULES {
        let path = module(name);
        if path.is_file() && !builtin.iter().any(|b| b == name) {
            c.push_str(&format!(
                "LoadModule {name}_module {}\n",
                quote_path("module", &path)?
            ));
        }
    }
    if let Some(php) = &install.mod_php {
        c.push_str(&format!(
            "LoadModule php_module {}\n",
            quote_path("module", php)?
        ));
    }

    if Uid::effective().is_root() {
        let (user, group) = unprivileged_user()?;
        c.push_str(&format!(
            "User {}\nGroup {}\n",
            quote("user", &user)?,
            quote("group", &group)?
        ));
    }
    c.push_str("ServerName localhost\nServerTokens Prod\nServerSignature Off\n");
    c.push_str("Timeout 60\nKeepAlive On\nKeepAliveTimeout 5\n");
    c.push_str("StartServers 2\nMinSpareServers 2\nMaxSpareServers 8\nMaxRequestWorkers 150\n");
    if Path::new(SYSTEM_MIME_TYPES).is_file() {
        c.push_str(&format!("TypesConfig \"{SYSTEM_MIME_TYPES}\"\n"));
    } else {
        c.push_str(&format!(
            "TypesConfig {}\n",
            quote_path("data directory", &layout.dir.join("mime.types"))?
        ));
    }
    c.push_str(
        "# Nothing outside an instance's own document root is served.\n\
         <Directory />\n    AllowOverride None\n    Require all denied\n</Directory>\n\
         <Files \".ht*\">\n    Require all denied\n</Files>\n",
    );
    if install.mod_php.is_some() {
        c.push_str(
            "# PHP runs only where a php instance turns it on.\nphp_admin_flag engine off\n",
        );
    }
    if let Some(port) = keep_port {
        c.push_str(&format!(
            "# {KEEP_PORT_VAR}: keeps Apache running without instances.\nListen 127.0.0.1:{port}\n"
        ));
    }
    c.push_str(&format!(
        "IncludeOptional {}\n",
        quote_path("data directory", &layout.instances.join("*.conf"))?
    ));
    Ok(c)
}

/// The user and group Apache's children run as when the heart is root.
fn unprivileged_user() -> Result<(String, String)> {
    for name in ROOT_USERS {
        if let Ok(Some(user)) = User::from_name(name) {
            let group = Group::from_gid(user.gid)
                .ok()
                .flatten()
                .map_or_else(|| format!("#{}", user.gid), |g| g.name);
            return Ok((user.name, group));
        }
    }
    Err(Error::invalid(format!(
        "running as root, but none of the users {} exists for Apache",
        ROOT_USERS.join(", ")
    )))
}

/// The instance file: a `Listen` and a `<VirtualHost>` on the port.
fn instance_config(
    instance: &PluginInstance,
    flavor: Flavor,
    doc_root: &Path,
    error_log: &Path,
    mod_php: bool,
) -> Result<String> {
    let id = &instance.instance_id;
    let port = instance
        .port
        .ok_or_else(|| Error::invalid(format!("instance {id} has no port")))?;
    let root = quote_path("document root", doc_root)?;
    let mut c = String::new();
    c.push_str(&format!(
        "# Instance {id} ({}), written by pm-heart.\n",
        match flavor {
            Flavor::Php => "php",
            Flavor::Static => "static",
        }
    ));
    c.push_str(&format!("Listen 127.0.0.1:{port}\n"));
    c.push_str(&format!("<VirtualHost 127.0.0.1:{port}>\n"));
    c.push_str(&format!("    DocumentRoot {root}\n"));
    c.push_str(&format!(
        "    ErrorLog {}\n",
        quote_path("log file", error_log)?
    ));
    c.push_str(&format!(
        "    <Directory {root}>\n        Options FollowSymLinks\n        AllowOverride All\n        Require all granted\n    </Directory>\n"
    ));
    match flavor {
        Flavor::Php => {
            if !mod_php {
                return Err(Error::invalid("mod_php is not installed"));
            }
            c.push_str("    DirectoryIndex index.php index.html index.htm\n");
            c.push_str("    php_admin_flag engine on\n");
            c.push_str(
                "    <FilesMatch \"\\.(php|phtml|phar)$\">\n        SetHandler application/x-httpd-php\n    </FilesMatch>\n",
            );
            for (name, value) in &instance.environment {
                if !valid_env_name(name) {
                    return Err(Error::invalid(format!(
                        "environment variable name {name:?} cannot be passed to PHP \
                         (letters, digits, _ . - only)"
                    )));
                }
                let value = quote(&format!("environment variable {name}"), value)?;
                c.push_str(&format!("    SetEnv {name} {value}\n"));
            }
        }
        Flavor::Static => {
            c.push_str("    DirectoryIndex index.html index.htm\n");
            if mod_php {
                c.push_str("    php_admin_flag engine off\n");
            }
        }
    }
    c.push_str("</VirtualHost>\n");
    Ok(c)
}

// ---- EXECUTE ----------------------------------------------------------

fn lock() -> std::sync::MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The placeholder port from `PM_APACHE_KEEP_PORT`, if set.
fn keep_port() -> Result<Option<u16>> {
    match std::env::var(KEEP_PORT_VAR) {
        Ok(text) if !text.is_empty() => match text.parse::<u16>() {
            Ok(port) if port > 0 => Ok(Some(port)),
            _ => Err(Error::invalid(format!(
                "{KEEP_PORT_VAR}={text} is not a port"
            ))),
        },
        _ => Ok(None),
    }
}

fn log_path(ctx: &Context, id: &str) -> PathBuf {
    let data_dir = std::path::absolute(&ctx.data_dir).unwrap_or_else(|_| ctx.data_dir.clone());
    data_dir.join("logs").join(format!("{id}.log"))
}

fn start(ctx: &Context, instance: &PluginInstance, flavor: Flavor) -> Result<Started> {
    let id = instance.instance_id.as_str();
    if instance.standalone || instance.port.is_none() {
        return Err(Error::invalid(
            "php and static instances cannot be standalone",
        ));
    }
    let port = instance.port.unwrap_or_default();
    let ready = shell::seconds_param(
        &instance.parameters,
        "start_timeout",
        shell::DEFAULT_START_TIMEOUT,
    )?
    .duration();
    let doc_root = resolve_document_root(instance)?;
    // Apache opens every error log on each reload and dies if one cannot
    // be opened, which `-t` does not check: open it first (Apache's parent
    // runs as the heart's user).
    let error_log = log_path(ctx, id);
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&error_log)
        .map_err(|e| Error::io("open the error log", &error_log, e))?;
    let install = Install::find()?;
    let text = instance_config(
        instance,
        flavor,
        &doc_root,
        &error_log,
        install.mod_php.is_some(),
    )?;

    let _guard = lock();
    let layout = Layout::new(&ctx.data_dir);
    layout.create()?;
    if !Path::new(SYSTEM_MIME_TYPES).is_file() {
        fsutil::write_atomic(&layout.dir.join("mime.types"), MIME_TYPES.as_bytes(), 0o644)?;
    }
    fsutil::write_atomic(
        &layout.conf,
        main_config(&layout, &install, keep_port()?)?.as_bytes(),
        0o644,
    )?;
    let file = layout.instance_conf(id);
    fsutil::remove_if_exists(&layout.error(id))?;
    fsutil::remove_if_exists(&layout.rejected(id))?;

    let Some(apache) = running(&layout) else {
        // A fresh Apache serves only what is started from now on: files
        // left by a dead Apache belong to instances that are not running.
        clear_instances(&layout)?;
        fsutil::write_atomic(&file, text.as_bytes(), 0o644)?;
        let result = test_config(&install, &layout, id)
            .and_then(|()| check_port_free(port, ready))
            .and_then(|()| launch_apache(ctx, &install, &layout, port, ready));
        return match result {
            Ok(identity) => Ok(Started::Managed(format!(
                "served by Apache (supervisor {}) on 127.0.0.1:{port}",
                identity.pid
            ))),
            Err(e) => {
                let _ = fsutil::remove_if_exists(&file);
                Err(e)
            }
        };
    };

    let previous = fs::read(&file).ok();
    let was_listening = previous.as_deref().is_some_and(|p| {
        String::from_utf8_lossy(p).contains(&format!("Listen 127.0.0.1:{port}\n"))
    });
    let restore = |file: &Path| -> Result<()> {
        match &previous {
            Some(bytes) => fsutil::write_atomic(file, bytes, 0o644),
            None => fsutil::remove_if_exists(file),
        }
    };
    if !was_listening {
        check_port_free(port, ready)?;
    }
    fsutil::write_atomic(&file, text.as_bytes(), 0o644)?;
    if let Err(e) = test_config(&install, &layout, id) {
        restore(&file)?;
        return Err(e);
    }
    if let Err(e) = reload(&install, &layout, &apache, Some((port, ready))) {
        restore(&file)?;
        recover(ctx, &install, &layout);
        return Err(e);
    }
    Ok(Started::Managed(format!(
        "served by Apache (supervisor {}) on 127.0.0.1:{port}",
        apache.pid
    )))
}

fn stop(ctx: &Context, instance: &PluginInstance) -> Result<String> {
    let id = instance.instance_id.as_str();
    let _guard = lock();
    let layout = Layout::new(&ctx.data_dir);
    let file = layout.instance_conf(id);
    let had_file = file.exists();
    fsutil::remove_if_exists(&file)?;
    fsutil::remove_if_exists(&layout.rejected(id))?;
    fsutil::remove_if_exists(&layout.error(id))?;
    let Some(apache) = running(&layout) else {
        return Ok("stopped (Apache was not running)".into());
    };
    if !had_file {
        return Ok("stopped (it was not configured)".into());
    }
    if layout.configured().is_empty() && keep_port()?.is_none() {
        stop_apache(&layout, &apache)?;
        return Ok("stopped; Apache stopped with its last instance".into());
    }
    let install = Install::find()?;
    test_config(&install, &layout, id)?;
    reload(&install, &layout, &apache, None)?;
    if let Some(port) = instance.port {
        if !wait::until(CLOSE_TIMEOUT, || !net::port_answers(port)) {
            return Err(Error::invalid(format!(
                "port {port} still open {} s after Apache reloaded",
                CLOSE_TIMEOUT.as_secs()
            )));
        }
    }
    Ok("stopped".into())
}

fn status(ctx: &Context, instance: &PluginInstance) -> Result<String> {
    let id = instance.instance_id.as_str();
    let layout = Layout::new(&ctx.data_dir);
    let Some(apache) = running(&layout) else {
        return Err(Error::invalid("Apache is not running"));
    };
    if !layout.instance_conf(id).exists() {
        if let Ok(message) = fs::read_to_string(layout.error(id)) {
            return Err(Error::invalid(format!(
                "Apache rejected its configuration: {}",
                message.trim()
            )));
        }
        return Err(Error::invalid("not configured in Apache"));
    }
    let port = instance
        .port
        .ok_or_else(|| Error::invalid(format!("instance {id} has no port")))?;
    // A connect, as SPEC §4 defines RUNNING: an Apache whose workers are
    // all busy still accepts into its backlog, and must not be taken for
    // dead (the heart would stop every instance of a busy node).
    if !net::port_answers(port) {
        return Err(Error::invalid(format!(
            "Apache does not accept connections on port {port}"
        )));
    }
    Ok(format!(
        "served by Apache (supervisor {}) on 127.0.0.1:{port}",
        apache.pid
    ))
}

// ---- Apache itself -----------------------------------------------------

/// The supervisor of the running Apache, checked against `/proc`.
fn running(layout: &Layout) -> Option<Identity> {
    let text = fs::read_to_string(&layout.identity).ok()?;
    let identity: Identity = serde_json::from_str(&text).ok()?;
    supervise::is_supervising(&identity, &layout.control).then_some(identity)
}

/// Removes every instance file (and rejected file) from a previous run.
fn clear_instances(layout: &Layout) -> Result<()> {
    let entries = fs::read_dir(&layout.instances)
        .map_err(|e| Error::io("read directory", &layout.instances, e))?;
    for entry in entries.filter_map(|e| e.ok()) {
        let path = entry.path();
        if path.is_file() {
            fsutil::remove_if_exists(&path)?;
        }
    }
    Ok(())
}

/// `apache2 -t`. When the error is in another instance's file, that file
/// is set aside with Apache's message and the test runs again; an error
/// in `id`'s own file, or anywhere else, is returned.
fn test_config(install: &Install, layout: &Layout, id: &str) -> Result<()> {
    let bound = layout.configured().len() + 1;
    for _ in 0..=bound {
        let output = apache_command(install, layout)
            .arg("-t")
            .output()
            .map_err(|e| Error::io("run", &install.binary, e))?;
        if output.status.success() {
            return Ok(());
        }
        let message = apache_message(&output);
        match offending_instance(layout, &message) {
            Some(other) if other != id => {
                let _ = fsutil::write_atomic(&layout.error(&other), message.as_bytes(), 0o644);
                fs::rename(layout.instance_conf(&other), layout.rejected(&other))
                    .map_err(|e| Error::io("set aside", layout.instance_conf(&other), e))?;
            }
            _ => {
                return Err(Error::invalid(format!(
                    "Apache rejected the configuration: {message}"
                )))
            }
        }
    }
    Err(Error::invalid("Apache kept rejecting its configuration"))
}

/// The text Apache printed, without the success line and the warnings.
fn apache_message(output: &std::process::Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != "Syntax OK" && !l.contains(":warn]"))
        .collect();
    if lines.is_empty() {
        format!("{} with no message", output.status)
    } else {
        lines.join(" ")
    }
}

/// The instance whose file Apache names in `message`: `Syntax error on
/// line N of /…/instances/ID.conf:`.
fn offending_instance(layout: &Layout, message: &str) -> Option<InstanceId> {
    let at = message.find("Syntax error on line ")?;
    let rest = &message[at..];
    let path = rest[rest.find(" of ")? + 4..].split(':').next()?;
    let path = Path::new(path.trim());
    if path.parent()? != layout.instances {
        return None;
    }
    let id = path.file_name()?.to_str()?.strip_suffix(".conf")?;
    id.parse::<protocol::InstanceId>().ok()
}

/// `apache2 -f CONF` with an empty environment.
fn apache_command(install: &Install, layout: &Layout) -> Command {
    let mut cmd = Command::new(&install.binary);
    cmd.arg("-f")
        .arg(&layout.conf)
        .env_clear()
        .current_dir(&layout.dir)
        .stdin(Stdio::null());
    cmd
}

/// Refuses a port that something else listens on: Apache would die on
/// the reload that tries to bind it, taking every instance with it. A
/// port held only by a client connection (the instance range may lie in
/// the kernel's ephemeral range, and Linux hands out its even ports to
/// `connect`) is waited for, up to `limit` (the instance's start timeout).
fn check_port_free(port: u16, limit: Duration) -> Result<()> {
    if net::port_answers(port) {
        return Err(Error::invalid(format!(
            "port {port} is in use: another process listens on it"
        )));
    }
    let mut last = None;
    let free = wait::until(limit, || {
        match TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
            Ok(_) => true,
            Err(e) => {
                last = Some(e);
                false
            }
        }
    });
    match (free, last) {
        (true, _) => Ok(()),
        (false, Some(e)) => Err(Error::invalid(format!("port {port} is not free: {e}"))),
        (false, None) => Err(Error::invalid(format!("port {port} is not free"))),
    }
}

/// Launches Apache in the foreground under a detached `pm-supervisor`,
/// and waits for it to answer on `port`.
fn launch_apache(
    ctx: &Context,
    install: &Install,
    layout: &Layout,
    port: u16,
    ready: Duration,
) -> Result<Identity> {
    let report_url = ctx
        .heart_url
        .clone()
        .unwrap_or_else(|| "http://127.0.0.1:9".to_string());
    let control = ControlFile {
        instance_id: supervisor_id(),
        command: Argv::Argv(vec![
            install.binary.to_string_lossy().into_owned(),
            "-D".into(),
            "FOREGROUND".into(),
            "-f".into(),
            layout.conf.to_string_lossy().into_owned(),
        ]),
        shell: false,
        cwd: layout.dir.clone(),
        environment: Environment::new(),
        exit_key: random_key()?,
        port: None,
        report_url: Some(report_url),
        log_file: layout.log.clone(),
        log_max_size: None,
        log_keep: None,
        pidfile: layout.supervisor_pid.clone(),
        startflagfile: layout.startflag.clone(),
        stop_timeout: Some(STOP_TIMEOUT),
        report_deadline: Some(Seconds::from_secs(0)),
        user: None,
    };
    let log_start = fs::metadata(&layout.log).map(|m| m.len()).unwrap_or(0);
    let identity =
        supervise::launch(&ctx.supervisor, &layout.control, &control)?.ok_or_else(|| {
            Error::invalid(format!(
                "Apache failed to start: {}",
                log_since(&layout.log, log_start)
            ))
        })?;
    let json = serde_json::to_vec(&identity)
        .map_err(|e| Error::json(format!("identity {}", layout.identity.display()), e))?;
    fsutil::write_atomic(&layout.identity, &json, 0o644)?;
    let up = wait::until(ready, || {
        answers_http(port) || !supervise::is_supervising(&identity, &layout.control)
    });
    if up && answers_http(port) {
        return Ok(identity);
    }
    let _ = stop_apache(layout, &identity);
    Err(Error::invalid(format!(
        "Apache did not answer on port {port}: {}",
        log_since(&layout.log, log_start)
    )))
}

/// `apache2 -k graceful`, then waits until `port` answers (a start), or
/// only until Apache has taken the signal (a stop). Fails if Apache died.
fn reload(
    install: &Install,
    layout: &Layout,
    apache: &Identity,
    port: Option<(u16, Duration)>,
) -> Result<()> {
    let log_start = fs::metadata(&layout.log).map(|m| m.len()).unwrap_or(0);
    check_pid_file(layout, apache)?;
    let output = apache_command(install, layout)
        .args(["-k", "graceful"])
        .output()
        .map_err(|e| Error::io("run", &install.binary, e))?;
    if !output.status.success() {
        return Err(Error::invalid(format!(
            "Apache refused the graceful reload: {}",
            apache_message(&output)
        )));
    }
    let alive = || supervise::is_supervising(apache, &layout.control);
    if let Some((port, ready)) = port {
        wait::until(ready, || answers_http(port) || !alive());
        if !alive() {
            return Err(Error::invalid(format!(
                "Apache stopped on the reload: {}",
                log_since(&layout.log, log_start)
            )));
        }
        if !answers_http(port) {
            return Err(Error::invalid(format!(
                "Apache did not answer on port {port} within {} s after the reload",
                ready.as_secs_f64()
            )));
        }
    } else if !alive() {
        return Err(Error::invalid(format!(
            "Apache stopped on the reload: {}",
            log_since(&layout.log, log_start)
        )));
    }
    Ok(())
}

/// After a failed reload with the instance's file undone: brings Apache
/// back on the remaining files if the reload killed it.
fn recover(ctx: &Context, install: &Install, layout: &Layout) {
    if let Some(apache) = running(layout) {
        if test_config(install, layout, "").is_ok() {
            let _ = reload_quiet(install, layout, &apache);
        }
        return;
    }
    let Some(id) = layout.configured().into_iter().next() else {
        return;
    };
    if test_config(install, layout, "").is_err() {
        return;
    }
    let port = fs::read_to_string(layout.instance_conf(&id))
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("Listen 127.0.0.1:")?.trim().parse().ok())
        });
    if let Some(port) = port {
        let _ = launch_apache(ctx, install, layout, port, READY_TIMEOUT);
    }
}

fn reload_quiet(install: &Install, layout: &Layout, apache: &Identity) -> Result<()> {
    check_pid_file(layout, apache)?;
    apache_command(install, layout)
        .args(["-k", "graceful"])
        .output()
        .map(drop)
        .map_err(|e| Error::io("run", &install.binary, e))
}

/// Checks that Apache's pid file names the child of its supervisor: with
/// no running server, `-k graceful` would start a second, daemonized
/// Apache outside any supervisor.
fn check_pid_file(layout: &Layout, apache: &Identity) -> Result<()> {
    let pid: i32 = fs::read_to_string(&layout.httpd_pid)
        .map_err(|e| Error::io("read Apache pid file", &layout.httpd_pid, e))?
        .trim()
        .parse()
        .map_err(|_| Error::invalid(format!("bad pid in {}", layout.httpd_pid.display())))?;
    match crate::process::stat(pid) {
        Some(stat) if stat.ppid == apache.pid && stat.state != b'Z' => Ok(()),
        _ => Err(Error::invalid(format!(
            "{} names pid {pid}, which is not the Apache of supervisor {}",
            layout.httpd_pid.display(),
            apache.pid
        ))),
    }
}

/// Stops Apache: SIGTERM to its supervisor (which ends Apache's process
/// group), SIGKILL if it outlasts its stop timeout.
fn stop_apache(layout: &Layout, apache: &Identity) -> Result<()> {
    if supervise::terminate(apache, &layout.control, STOP_TIMEOUT.duration())
        == Terminated::WouldNotStop
    {
        return Err(Error::invalid(format!(
            "Apache's supervisor {} would not stop",
            apache.pid
        )));
    }
    fsutil::remove_if_exists(&layout.identity)
}

/// True when Apache answers HTTP on `port`: `OPTIONS *`, which Apache
/// answers itself without running any application code.
fn answers_http(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(
        &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        PROBE_TIMEOUT,
    ) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(PROBE_TIMEOUT));
    let _ = stream.set_write_timeout(Some(PROBE_TIMEOUT));
    if stream
        .write_all(b"OPTIONS * HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 5];
    stream.read_exact(&mut head).is_ok() && &head == b"HTTP/"
}

/// What Apache's log gained since `offset` (at most its last 2 KiB).
fn log_since(path: &Path, offset: u64) -> String {
    use std::io::{Seek, SeekFrom};
    let Ok(mut file) = fs::File::open(path) else {
        return "no log".into();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = offset.max(len.saturating_sub(LOG_TAIL_BYTES));
    let mut text = String::new();
    if file.seek(SeekFrom::Start(start)).is_ok() {
        let mut bytes = Vec::new();
        let _ = file.read_to_end(&mut bytes);
        text = String::from_utf8_lossy(&bytes).into_owned();
    }
    // Apache's own lines, and of the supervisor's (which start with their
    // timestamp) only how the command ended.
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.contains(":warn]"))
        .filter(|l| {
            !l.starts_with(|c: char| c.is_ascii_digit())
                || l.contains("Completed with result code")
                || l.contains("Failed to start")
        })
        .collect();
    if lines.is_empty() {
        "nothing in its log".into()
    } else {
        lines.join("; ")
    }
}

/// A 128-bit key from `/dev/urandom`, in hex.
fn random_key() -> Result<String> {
    let path = Path::new("/dev/urandom");
    let mut bytes = [0u8; 16];
    fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| Error::io("read", path, e))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(v: Value) -> Parameters {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn php_version_lists_short_and_full() {
        assert_eq!(
            parse_php_version("PHP 8.2.36 (cli) (built: Nov 18 2026)").unwrap(),
            ["8.2", "8.2.36"]
        );
        assert_eq!(
            parse_php_version("PHP 8.3.0-1+ubuntu (cli)").unwrap(),
            ["8.3", "8.3.0"]
        );
        assert!(parse_php_version("nonsense").is_none());
    }

    #[test]
    fn quote_escapes_and_refuses_newlines() {
        assert_eq!(quote("v", r#"a"b\c"#).unwrap(), r#""a\"b\\c""#);
        assert_eq!(quote("v", "${X}").unwrap(), "\"${X}\"");
        for bad in ["a\nb", "a\rb", "a\0b"] {
            let err = quote("environment variable X", bad).unwrap_err();
            assert!(err.to_string().contains("environment variable X"), "{err}");
        }
    }

    #[test]
    fn validate_refuses_standalone_and_escaping_roots() {
        assert!(validate("php", &params(json!({})), true).is_err());
        assert!(validate("php", &params(json!({})), false).is_ok());
        assert!(validate("php", &params(json!({"document_root": "public"})), false).is_ok());
        assert!(validate("php", &params(json!({"document_root": "a/../b"})), false).is_ok());
        for bad in [
            json!({"document_root": ".."}),
            json!({"document_root": "a/../../b"}),
            json!({"document_root": "/etc"}),
            json!({"document_root": 3}),
            json!({"document_root": "a\nb"}),
        ] {
            assert!(
                validate("static", &params(bad.clone()), false).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn offending_instance_is_read_from_apaches_message() {
        let layout = Layout::new(Path::new("/d"));
        let message =
            "AH00526: Syntax error on line 2 of /d/runtimes/apache/instances/web-1.conf: \
                       Invalid command 'Garbage'";
        assert_eq!(
            offending_instance(&layout, message).as_deref(),
            Some("web-1")
        );
        let main = "AH00526: Syntax error on line 2 of /d/runtimes/apache/httpd.conf: x";
        assert_eq!(offending_instance(&layout, main), None);
    }

    #[test]
    fn instance_config_passes_environment_safely() {
        let mut environment = Environment::new();
        environment.insert("PM_PORT".into(), "47001".into());
        environment.insert("X".into(), "a\" \\ </VirtualHost> Listen 1".into());
        let instance = PluginInstance {
            instance_id: "web-1".parse().unwrap(),
            port: Some(47001),
            standalone: false,
            path: "/srv/web-1".into(),
            version: "8.2".into(),
            parameters: Parameters::new(),
            environment: environment.clone(),
        };
        let text = instance_config(
            &instance,
            Flavor::Php,
            Path::new("/srv/web-1"),
            Path::new("/d/logs/web-1.log"),
            true,
        )
        .unwrap();
        assert!(text.contains("Listen 127.0.0.1:47001\n"));
        assert!(
            text.contains(r#"SetEnv X "a\" \\ </VirtualHost> Listen 1""#),
            "{text}"
        );
        environment.insert("Y".into(), "a\nListen 2".into());
        let err = instance_config(
            &PluginInstance {
                environment,
                ..instance
            },
            Flavor::Php,
            Path::new("/srv/web-1"),
            Path::new("/d/logs/web-1.log"),
            true,
        )
        .unwrap_err();
        assert!(err.to_string().contains("newline"), "{err}");
    }

    #[test]
    fn main_config_quotes_paths_and_listens_only_when_asked() {
        let base = std::env::temp_dir().join(format!("pm-apache-conf-{}", std::process::id()));
        let modules = base.join("mod ules");
        fs::create_dir_all(&modules).unwrap();
        for name in REQUIRED_MODULES.iter().chain(["rewrite"].iter()) {
            fs::write(modules.join(format!("mod_{name}.so")), "").unwrap();
        }
        let install = Install {
            binary: PathBuf::from("/bin/false"),
            module_dir: modules.clone(),
            mod_php: Some(modules.join("libphp8.2.so")),
        };
        let layout = Layout::new(&base.join("da\"ta"));
        let text = main_config(&layout, &install, None).unwrap();
        assert!(text.contains(&format!(
            "LoadModule rewrite_module \"{}/mod_rewrite.so\"",
            modules.display()
        )));
        assert!(!text.contains("LoadModule headers_module"));
        assert!(text.contains("LoadModule php_module"));
        assert!(text.contains("php_admin_flag engine off"));
        assert!(
            text.contains("/da\\\"ta/runtimes/apache/instances/*.conf\"\n"),
            "{text}"
        );
        assert!(!text.contains("${"));
        assert!(!text.lines().any(|l| l.starts_with("Listen")));
        let kept = main_config(&layout, &install, Some(47999)).unwrap();
        assert!(kept.contains("\nListen 127.0.0.1:47999\n"));
        let missing = Layout::new(Path::new("/d"));
        fs::remove_file(modules.join("mod_env.so")).unwrap();
        let err = main_config(&missing, &install, None).unwrap_err();
        assert!(err.to_string().contains("module env"), "{err}");
        fs::remove_dir_all(base).unwrap();
    }
}
