//! `pm-heart serve` settings: the command line (`Args`, exactly what
//! lexopt gave us), the optional JSON file (`FileConfig`, unknown keys
//! refused) and the resolved [`Config`] the agent runs with.
//!
//! Precedence: an option on the command line wins over the same key in
//! `--config FILE`, which wins over the embedded defaults:
//!
//! | option | config key | default |
//! |---|---|---|
//! | `--listen ADDR` | `listen` | `127.0.0.1:42500` |
//! | `--data-dir DIR` | `data_dir` | `./pm-data` |
//! | `--ports LOW-HIGH` | `ports` | `42600-42699` |
//! | `--pacemaker URL` | `pacemaker` | none |
//! | `--stop-on-exit` | `stop_on_exit` | false |
//! | `--check-interval SECS` | `check_interval` | 10 |
//! | `--node-name NAME` | `node_name` | the host name |
//! | `--plugin-dir DIR` (repeatable) | `plugin_dir` (string or list) | `PM_RUNTIME_PATH`, then the built-in list |
//! | `--supervisor PATH` | `supervisor` | `$PM_SUPERVISOR`, else beside `pm-heart`, else `PATH` |
//! | `--max-source-size BYTES` | `max_source_size` | `1G` |
//! | `--run-as USER` | `run_as` | none |
//! | `--allow-root-apps` | `allow_root_apps` | false |
//! | `--log-max-size SIZE` | `log_max_size` (bytes, or a string with K, M or G) | `10M` |
//! | `--log-keep N` | `log_keep` | 5 |

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::layout::DEFAULT_DATA_DIR;
use crate::error::{Error, Result};
use crate::protocol::{Bytes, LogKeep, LogLimits, LogSize};

/// The usage text of `pm-heart serve`, identical to the man page SYNOPSIS.
pub(crate) const USAGE: &str = "\
usage: pm-heart serve [--config FILE] [--listen ADDR] [--data-dir DIR]
                      [--ports LOW-HIGH] [--pacemaker URL] [--stop-on-exit]
                      [--check-interval SECS] [--node-name NAME]
                      [--plugin-dir DIR]... [--supervisor PATH]
                      [--max-source-size BYTES]
                      [--run-as USER] [--allow-root-apps]
                      [--log-max-size SIZE] [--log-keep N]
       pm-heart serve --help | --version

Runs the node agent: an HTTP API on ADDR (default 127.0.0.1:42500) that
registers, starts, stops and deregisters application instances, with its
state in DIR (default ./pm-data) and instance ports from LOW-HIGH
(default 42600-42699). See pm-heart(8).
";

/// Default listen address.
pub(crate) const DEFAULT_LISTEN: &str = "127.0.0.1:42500";
/// Default instance port range.
pub(crate) const DEFAULT_PORTS: PortRange = PortRange {
    low: 42600,
    high: 42699,
};
/// Default largest source archive a register downloads or an upload
/// takes: 1 GiB.
pub(crate) const DEFAULT_MAX_SOURCE_SIZE: u64 = 1 << 30;
/// Default seconds between two periodic checks.
pub(crate) const DEFAULT_CHECK_INTERVAL: f64 = 10.0;

/// An inclusive range of TCP ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PortRange {
    /// First port.
    pub low: u16,
    /// Last port, inclusive.
    pub high: u16,
}

impl std::str::FromStr for PortRange {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<PortRange, String> {
        let bad =
            || format!("invalid port range {text:?}: expected LOW-HIGH, 1 <= LOW <= HIGH <= 65535");
        let (low, high) = text.split_once('-').ok_or_else(bad)?;
        let low: u16 = low.trim().parse().map_err(|_| bad())?;
        let high: u16 = high.trim().parse().map_err(|_| bad())?;
        if low == 0 || low > high {
            return Err(bad());
        }
        Ok(PortRange { low, high })
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.low, self.high)
    }
}

/// What the command line said, before the config file is merged.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Args {
    pub help: bool,
    pub version: bool,
    pub config: Option<PathBuf>,
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub ports: Option<String>,
    pub pacemaker: Option<String>,
    pub stop_on_exit: bool,
    pub check_interval: Option<String>,
    pub node_name: Option<String>,
    pub plugin_dir: Vec<PathBuf>,
    pub supervisor: Option<PathBuf>,
    pub max_source_size: Option<String>,
    pub run_as: Option<String>,
    pub allow_root_apps: bool,
    pub log_max_size: Option<String>,
    pub log_keep: Option<String>,
}

/// Parses the arguments that follow `serve`.
///
/// # Errors
///
/// An unknown option, a missing value, or a stray argument.
pub(crate) fn parse_args(
    args: impl IntoIterator<Item = impl Into<OsString>>,
) -> std::result::Result<Args, lexopt::Error> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_args(args);
    let mut out = Args::default();
    while let Some(arg) = parser.next()? {
        match arg {
            Short('h') | Long("help") => out.help = true,
            Short('V') | Long("version") => out.version = true,
            Long("config") => out.config = Some(parser.value()?.into()),
            Long("listen") => out.listen = Some(parser.value()?.string()?),
            Long("data-dir") => out.data_dir = Some(parser.value()?.into()),
            Long("ports") => out.ports = Some(parser.value()?.string()?),
            Long("pacemaker") => out.pacemaker = Some(parser.value()?.string()?),
            Long("stop-on-exit") => out.stop_on_exit = true,
            Long("check-interval") => out.check_interval = Some(parser.value()?.string()?),
            Long("node-name") => out.node_name = Some(parser.value()?.string()?),
            Long("plugin-dir") => out.plugin_dir.push(parser.value()?.into()),
            Long("supervisor") => out.supervisor = Some(parser.value()?.into()),
            Long("max-source-size") => out.max_source_size = Some(parser.value()?.string()?),
            Long("run-as") => out.run_as = Some(parser.value()?.string()?),
            Long("allow-root-apps") => out.allow_root_apps = true,
            Long("log-max-size") => out.log_max_size = Some(parser.value()?.string()?),
            Long("log-keep") => out.log_keep = Some(parser.value()?.string()?),
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(out)
}

/// `plugin_dir` in the config file: one directory or a list.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(untagged)]
enum Dirs {
    One(PathBuf),
    Many(Vec<PathBuf>),
}

/// The JSON config file; every key is optional, unknown keys are refused.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    ports: Option<String>,
    pacemaker: Option<String>,
    stop_on_exit: Option<bool>,
    check_interval: Option<f64>,
    node_name: Option<String>,
    plugin_dir: Option<Dirs>,
    supervisor: Option<PathBuf>,
    /// Bytes, as a number or a string with a K, M or G suffix.
    max_source_size: Option<serde_json::Value>,
    run_as: Option<String>,
    allow_root_apps: Option<bool>,
    #[serde(default)]
    log_max_size: Option<LogSize>,
    #[serde(default)]
    log_keep: Option<LogKeep>,
}

/// The resolved settings of the agent.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Config {
    /// Where the API listens; port 0 picks a free one.
    pub listen: SocketAddr,
    /// The data directory, as given (made absolute at start).
    pub data_dir: PathBuf,
    /// Instance ports.
    pub ports: PortRange,
    /// The controller's base URL.
    pub pacemaker: Option<String>,
    /// Stop every instance when the heart stops.
    pub stop_on_exit: bool,
    /// Time between two periodic checks.
    pub check_interval: Duration,
    /// The node's name in controller reports.
    pub node_name: Option<String>,
    /// Explicit plugin directories (empty: `PM_RUNTIME_PATH` or defaults).
    pub plugin_dirs: Vec<PathBuf>,
    /// The `pm-supervisor` executable.
    pub supervisor: PathBuf,
    /// The largest source archive a register downloads or an upload takes.
    pub max_source_size: u64,
    /// The user instances without a `user` of their own run as, when the
    /// heart runs as root.
    pub run_as: Option<String>,
    /// Instances may run as root (the behaviour before users existed).
    pub allow_root_apps: bool,
    /// The limits of every log of the node (instance logs, the managed
    /// Apache's, the heart's event log) unless an instance has its own.
    pub log_limits: LogLimits,
}

fn parse_listen(text: &str) -> Result<SocketAddr> {
    text.parse().map_err(|_| {
        Error::Usage(format!(
            "invalid listen address {text:?}: expected IP:PORT, e.g. 127.0.0.1:42500"
        ))
    })
}

fn parse_interval(secs: f64) -> Result<Duration> {
    if secs.is_finite() && (0.01..=86_400.0).contains(&secs) {
        Ok(Duration::from_secs_f64(secs))
    } else {
        Err(Error::Usage(format!(
            "invalid check interval {secs}: expected seconds between 0.01 and 86400"
        )))
    }
}

/// Reads `path` as a config file. A file that cannot be read or is not a
/// valid config is misuse ([`Error::Usage`]), whatever the reason, with
/// the message of the underlying error.
fn read_file(path: &Path) -> Result<FileConfig> {
    let text =
        crate::fsutil::read_text(path, "config file").map_err(|e| Error::Usage(e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| {
        Error::Usage(Error::json(format!("config file {}", path.display()), e).to_string())
    })
}

/// Merges the command line over the config file over the defaults.
///
/// # Errors
///
/// The config file cannot be read or is invalid, or a value is malformed.
pub(crate) fn resolve(args: Args) -> Result<Config> {
    let file = match &args.config {
        Some(path) => read_file(path)?,
        None => FileConfig::default(),
    };
    let listen = parse_listen(
        args.listen
            .as_deref()
            .or(file.listen.as_deref())
            .unwrap_or(DEFAULT_LISTEN),
    )?;
    let ports = match args.ports.or(file.ports) {
        Some(text) => text.parse().map_err(Error::Usage)?,
        None => DEFAULT_PORTS,
    };
    let check_interval = match args.check_interval {
        Some(text) => parse_interval(text.trim().parse().map_err(|_| {
            Error::Usage(format!("invalid check interval {text:?}: expected seconds"))
        })?)?,
        None => parse_interval(file.check_interval.unwrap_or(DEFAULT_CHECK_INTERVAL))?,
    };
    let plugin_dirs = if !args.plugin_dir.is_empty() {
        args.plugin_dir
    } else {
        match file.plugin_dir {
            Some(Dirs::One(dir)) => vec![dir],
            Some(Dirs::Many(dirs)) => dirs,
            None => Vec::new(),
        }
    };
    let max_source_size = match args.max_source_size {
        Some(text) => text
            .parse::<Bytes>()
            .map_err(|e| Error::Usage(format!("invalid --max-source-size: {e}")))?
            .get(),
        None => match file.max_source_size {
            None => DEFAULT_MAX_SOURCE_SIZE,
            Some(serde_json::Value::Number(n)) => n.as_u64().ok_or_else(|| {
                Error::Usage(format!("invalid max_source_size {n}: expected bytes"))
            })?,
            Some(serde_json::Value::String(text)) => text
                .parse::<Bytes>()
                .map_err(|e| Error::Usage(format!("invalid max_source_size: {e}")))?
                .get(),
            Some(other) => {
                return Err(Error::Usage(format!(
                    "invalid max_source_size {other}: expected bytes"
                )))
            }
        },
    };
    let log_max_size = match args.log_max_size {
        Some(text) => Some(
            text.parse::<LogSize>()
                .map_err(|e| Error::Usage(format!("invalid --log-max-size: {e}")))?,
        ),
        None => file.log_max_size,
    };
    let log_keep = match args.log_keep {
        Some(text) => Some(
            text.parse::<LogKeep>()
                .map_err(|e| Error::Usage(format!("invalid --log-keep: {e}")))?,
        ),
        None => file.log_keep,
    };
    Ok(Config {
        listen,
        data_dir: args
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
        ports,
        pacemaker: args.pacemaker.or(file.pacemaker),
        stop_on_exit: args.stop_on_exit || file.stop_on_exit.unwrap_or(false),
        check_interval,
        node_name: args.node_name.or(file.node_name),
        plugin_dirs,
        supervisor: args
            .supervisor
            .or(file.supervisor)
            .unwrap_or_else(crate::supervise::supervisor_exe),
        max_source_size,
        run_as: args.run_as.or(file.run_as),
        allow_root_apps: args.allow_root_apps || file.allow_root_apps.unwrap_or(false),
        log_limits: LogLimits::default().overridden(log_max_size, log_keep),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_no_configuration() {
        let config = resolve(parse_args(Vec::<OsString>::new()).unwrap()).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:42500");
        assert_eq!(config.data_dir, PathBuf::from("./pm-data"));
        assert_eq!(
            config.ports,
            PortRange {
                low: 42600,
                high: 42699
            }
        );
        assert_eq!(config.check_interval, Duration::from_secs(10));
        assert!(!config.stop_on_exit);
        assert_eq!(config.log_limits, LogLimits::default());
    }

    #[test]
    fn options_win_over_the_file() {
        let dir = std::env::temp_dir().join(format!("pm-heart-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.json");
        std::fs::write(
            &file,
            r#"{"listen": "127.0.0.1:1", "ports": "5000-5009", "check_interval": 2,
                "plugin_dir": "/p", "stop_on_exit": true, "run_as": "www",
                "allow_root_apps": true, "log_max_size": "1M", "log_keep": 2}"#,
        )
        .unwrap();
        let args = parse_args([
            "--config".into(),
            file.clone().into_os_string(),
            OsString::from("--listen"),
            OsString::from("127.0.0.1:0"),
        ])
        .unwrap();
        let config = resolve(args).unwrap();
        assert_eq!(config.listen.port(), 0);
        assert_eq!(
            config.ports,
            PortRange {
                low: 5000,
                high: 5009
            }
        );
        assert_eq!(config.check_interval, Duration::from_secs(2));
        assert_eq!(config.plugin_dirs, [PathBuf::from("/p")]);
        assert!(config.stop_on_exit);
        assert_eq!(config.run_as.as_deref(), Some("www"));
        assert!(config.allow_root_apps);
        assert_eq!(config.log_limits.max_size.bytes(), 1 << 20);
        assert_eq!(config.log_limits.keep.files(), 2);

        std::fs::write(&file, r#"{"listen": "127.0.0.1:1", "colour": "red"}"#).unwrap();
        let args = parse_args(["--config".into(), file.clone().into_os_string()]).unwrap();
        let err = resolve(args).unwrap_err();
        assert!(matches!(err, Error::Usage(_)), "{err}");
        assert!(err.to_string().contains("unknown field"), "{err}");
        let missing = file.with_file_name("missing.json");
        let args = parse_args(["--config".into(), missing.clone().into_os_string()]).unwrap();
        let err = resolve(args).unwrap_err();
        assert!(matches!(err, Error::Usage(_)), "{err}");
        assert!(
            err.to_string()
                .starts_with(&format!("unable to read config file {}", missing.display())),
            "{err}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for args in [
            ["--ports", "10-5"],
            ["--ports", "0-5"],
            ["--listen", "nowhere"],
            ["--check-interval", "soon"],
            ["--log-max-size", "1K"],
            ["--log-keep", "101"],
        ] {
            let err = resolve(parse_args(args).unwrap()).unwrap_err();
            assert!(matches!(err, Error::Usage(_)), "{args:?}: {err}");
        }
        assert!(parse_args(["--bogus"]).is_err());
        assert!(parse_args(["stray"]).is_err());
    }
}
