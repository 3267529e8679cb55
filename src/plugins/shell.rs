//! The `shell` runtime: any command, supervised.
//!
//! VERSIONS is `["1"]`, ENVIRONMENT changes nothing, and EXECUTE start
//! turns the `launch_command` parameter into a [`Launch`]: `%(port)d` and
//! `{port}` become the instance port, and the line is split like a POSIX
//! shell splits words unless `shell: true` asks for `/bin/sh -c`. The
//! rbenv and nvm runtimes execute the same way, through [`launch`].

use serde_json::Value;

use super::{require_version, Context, Launch, Runtime, Started};
use crate::error::{Error, Result};
use crate::protocol::{Environment, Parameters, PluginInstance, Seconds};
use crate::shellwords;

/// Default seconds to wait for the port.
pub(crate) const DEFAULT_START_TIMEOUT: Seconds = Seconds::from_secs(20);
/// Default seconds a standalone process must stay up.
pub(crate) const DEFAULT_STANDALONE_WAIT: Seconds = Seconds::from_secs(1);
/// Default seconds from SIGTERM to SIGKILL.
pub(crate) const DEFAULT_STOP_TIMEOUT: Seconds = Seconds::from_secs(10);

/// The built-in `shell` runtime.
#[derive(Debug)]
pub(crate) struct Shell;

impl Runtime for Shell {
    fn name(&self) -> &str {
        "shell"
    }

    fn versions(&self) -> Result<Vec<String>> {
        Ok(vec!["1".to_string()])
    }

    fn environment(&self, version: &str, _env: &mut Environment, _: &Parameters) -> Result<()> {
        require_version(self.name(), version, &self.versions()?)
    }

    fn validate(&self, parameters: &Parameters, _standalone: bool) -> Result<()> {
        check_parameters(parameters)
    }

    fn start(&self, _ctx: &Context, instance: &PluginInstance) -> Result<Started> {
        launch(instance).map(Started::Supervise)
    }
}

/// Checks the parameters of a supervised runtime.
///
/// # Errors
///
/// `launch_command` is missing, empty or unsplittable, or a timeout or
/// `shell` has the wrong type.
pub(crate) fn check_parameters(parameters: &Parameters) -> Result<()> {
    let command = launch_command(parameters)?;
    if !bool_param(parameters, "shell")? {
        let words = shellwords::split(command)?;
        if words.is_empty() {
            return Err(Error::invalid("parameter launch_command is empty"));
        }
    }
    seconds_param(parameters, "start_timeout", DEFAULT_START_TIMEOUT)?;
    seconds_param(parameters, "standalone_wait", DEFAULT_STANDALONE_WAIT)?;
    seconds_param(parameters, "stop_timeout", DEFAULT_STOP_TIMEOUT)?;
    Ok(())
}

/// Builds the supervised launch of `instance` from its parameters.
///
/// # Errors
///
/// As [`check_parameters`].
pub(crate) fn launch(instance: &PluginInstance) -> Result<Launch> {
    let parameters = &instance.parameters;
    check_parameters(parameters)?;
    let port = instance.port.map(|p| p.to_string()).unwrap_or_default();
    let line = launch_command(parameters)?
        .replace("%(port)d", &port)
        .replace("{port}", &port);
    let shell = bool_param(parameters, "shell")?;
    let command = if shell {
        vec![line]
    } else {
        shellwords::split(&line)?
    };
    Ok(Launch {
        command,
        shell,
        cwd: instance.path.clone(),
        environment: instance.environment.clone(),
        start_timeout: seconds_param(parameters, "start_timeout", DEFAULT_START_TIMEOUT)?,
        standalone_wait: seconds_param(parameters, "standalone_wait", DEFAULT_STANDALONE_WAIT)?,
        stop_timeout: seconds_param(parameters, "stop_timeout", DEFAULT_STOP_TIMEOUT)?,
    })
}

fn launch_command(parameters: &Parameters) -> Result<&str> {
    match parameters.get("launch_command") {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s),
        Some(Value::String(_)) => Err(Error::invalid("parameter launch_command is empty")),
        Some(_) => Err(Error::invalid("parameter launch_command must be a string")),
        None => Err(Error::invalid("parameter launch_command is required")),
    }
}

fn bool_param(parameters: &Parameters, name: &str) -> Result<bool> {
    match parameters.get(name) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(Error::invalid(format!(
            "parameter {name} must be true or false"
        ))),
    }
}

/// The parameter `name` as [`Seconds`], or `default` when absent.
///
/// # Errors
///
/// The value is not a number of seconds within [`Seconds::MAX`].
pub(crate) fn seconds_param(
    parameters: &Parameters,
    name: &str,
    default: Seconds,
) -> Result<Seconds> {
    match parameters.get(name) {
        None | Some(Value::Null) => Ok(default),
        Some(value) => serde_json::from_value(value.clone())
            .map_err(|e| Error::invalid(format!("parameter {name}: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn instance(parameters: Value, port: Option<u16>) -> PluginInstance {
        PluginInstance {
            instance_id: "web-1".parse().unwrap(),
            port,
            standalone: port.is_none(),
            path: "/srv/app".into(),
            version: "1".into(),
            parameters: parameters.as_object().unwrap().clone(),
            environment: Environment::new(),
        }
    }

    #[test]
    fn port_placeholders_are_replaced_and_words_split() {
        let inst = instance(
            json!({"launch_command": "python3 -m http.server %(port)d --bind '127.0.0.1' # {port}"}),
            Some(4321),
        );
        let launch = launch(&inst).unwrap();
        assert_eq!(
            launch.command,
            [
                "python3",
                "-m",
                "http.server",
                "4321",
                "--bind",
                "127.0.0.1",
                "#",
                "4321"
            ]
        );
        assert!(!launch.shell);
        assert_eq!(launch.start_timeout, Seconds::from_secs(20));
        assert_eq!(launch.stop_timeout, Seconds::from_secs(10));
        assert_eq!(launch.standalone_wait, Seconds::from_secs(1));
    }

    #[test]
    fn shell_true_keeps_the_line_whole() {
        let inst = instance(
            json!({"launch_command": "echo $X | cat", "shell": true}),
            None,
        );
        let launch = launch(&inst).unwrap();
        assert_eq!(launch.command, ["echo $X | cat"]);
        assert!(launch.shell);
    }

    #[test]
    fn bad_parameters_are_refused() {
        for params in [
            json!({}),
            json!({"launch_command": ""}),
            json!({"launch_command": 3}),
            json!({"launch_command": "a 'b"}),
            json!({"launch_command": "a", "start_timeout": "5"}),
            json!({"launch_command": "a", "stop_timeout": -1}),
            json!({"launch_command": "a", "shell": "yes"}),
        ] {
            assert!(
                check_parameters(params.as_object().unwrap()).is_err(),
                "{params}"
            );
        }
    }
}
