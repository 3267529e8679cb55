//! The managed Apache's configuration text: the main `httpd.conf` and one
//! file per instance, every argument quoted and escaped.

use std::path::Path;

use nix::unistd::{Group, Uid, User};

use super::install::{Install, OPTIONAL_MODULES, REQUIRED_MODULES};
use super::layout::Layout;
use super::loggers::{Loggers, ACCESS_FORMAT, ACCESS_FORMAT_TEXT};
use super::{Flavor, KEEP_PORT_VAR};
use crate::error::{Error, Result};
use crate::protocol::PluginInstance;

/// Users Apache's children run as when the heart runs as root.
const ROOT_USERS: [&str; 3] = ["www-data", "apache", "nobody"];

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
pub(super) fn main_config(
    layout: &Layout,
    install: &Install,
    keep_port: Option<u16>,
) -> Result<String> {
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
    // Apache's own messages go to its standard error, which is its
    // supervisor's pipe: the supervisor alone writes (and rotates)
    // `apache.log`.
    c.push_str("ErrorLog /dev/stderr\nLogLevel warn\n");

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
    c.push_str(&format!(
        "LogFormat {} {ACCESS_FORMAT}\n",
        quote("log format", ACCESS_FORMAT_TEXT)?
    ));
    c.push_str("Timeout 60\nKeepAlive On\nKeepAliveTimeout 5\n");
    c.push_str("StartServers 2\nMinSpareServers 2\nMaxSpareServers 8\nMaxRequestWorkers 150\n");
    c.push_str(&format!(
        "TypesConfig {}\n",
        quote_path("MIME types file", &layout.mime_types())?
    ));
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
pub(super) fn instance_config(
    instance: &PluginInstance,
    flavor: Flavor,
    doc_root: &Path,
    loggers: &Loggers,
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
        "    ErrorLog {}\n    CustomLog {} {ACCESS_FORMAT}\n",
        quote("error log", &loggers.error)?,
        quote("access log", &loggers.access)?
    ));
    c.push_str(&format!(
        "    <Directory {root}>\n        Options SymLinksIfOwnerMatch\n        AllowOverride AuthConfig FileInfo Indexes Limit\n        Require all granted\n    </Directory>\n"
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::path::PathBuf;

    use crate::protocol::{Environment, Parameters};

    #[test]
    fn quote_escapes_and_refuses_newlines() {
        assert_eq!(quote("v", r#"a"b\c"#).unwrap(), r#""a\"b\\c""#);
        assert_eq!(quote("v", "${X}").unwrap(), "\"${X}\"");
        for bad in ["a\nb", "a\rb", "a\0b"] {
            let err = quote("environment variable X", bad).unwrap_err();
            assert!(err.to_string().contains("environment variable X"), "{err}");
        }
    }

    fn loggers() -> Loggers {
        Loggers {
            error: "||/pm-supervisor --log-pipe /d/logs/web-1.log".into(),
            access: "||/pm-supervisor --log-pipe /d/logs/web-1.access.log".into(),
        }
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
            log_limits: Default::default(),
        };
        let text = instance_config(
            &instance,
            Flavor::Php,
            Path::new("/srv/web-1"),
            &loggers(),
            true,
        )
        .unwrap();
        assert!(text.contains("Listen 127.0.0.1:47001\n"));
        assert!(text.contains(
            "    CustomLog \"||/pm-supervisor --log-pipe /d/logs/web-1.access.log\" combined\n"
        ));
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
            &loggers(),
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
        assert!(text.contains("\nErrorLog /dev/stderr\n"));
        assert!(
            text.contains("\nLogFormat \"%h %l %u %t \\\"%r\\\" %>s"),
            "{text}"
        );
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
