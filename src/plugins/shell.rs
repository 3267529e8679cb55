//! The `shell` runtime: any command, supervised.
//!
//! VERSIONS is `["1"]`, ENVIRONMENT changes nothing, and EXECUTE start
//! turns the parsed `launch_command` ([`Supervised`]) into a [`Launch`]:
//! `%(port)d` and `{port}` become the instance port, and the command runs
//! as an argument vector unless `shell: true` asks for `/bin/sh -c`. The
//! rbenv and nvm runtimes execute the same way, through [`start`].

use super::params::Supervised;
use super::{require_version, Context, Launch, Runtime, Started};
use crate::error::Result;
use crate::protocol::{Environment, Parameters, PluginInstance};

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
        Supervised::parse(parameters).map(drop)
    }

    fn start(&self, _ctx: &Context, instance: &PluginInstance) -> Result<Started> {
        start(instance)
    }
}

/// The supervised launch of `instance` from its parsed parameters.
pub(crate) fn launch(instance: &PluginInstance, parameters: &Supervised) -> Launch {
    let command = &parameters.launch_command;
    Launch::new(
        command.for_port(instance.port),
        command.shell(),
        instance.path.clone(),
        instance.environment.clone(),
        parameters.timeouts,
    )
}

/// EXECUTE start of a supervised runtime: the parameters parsed once,
/// then the launch.
///
/// # Errors
///
/// A parameter is missing or wrong.
pub(crate) fn start(instance: &PluginInstance) -> Result<Started> {
    let parameters = Supervised::parse(&instance.parameters)?;
    Ok(Started::Supervise(launch(instance, &parameters)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Seconds;
    use serde_json::{json, Value};

    fn instance(parameters: Value, port: Option<u16>) -> PluginInstance {
        PluginInstance {
            instance_id: "web-1".parse().unwrap(),
            port,
            standalone: port.is_none(),
            path: "/srv/app".into(),
            version: "1".into(),
            parameters: parameters.as_object().unwrap().clone(),
            environment: Environment::new(),
            log_limits: Default::default(),
        }
    }

    fn launch_of(inst: &PluginInstance) -> Launch {
        match start(inst).unwrap() {
            Started::Supervise(launch) => launch,
            other => panic!("not supervised: {other:?}"),
        }
    }

    #[test]
    fn the_launch_carries_the_parsed_parameters() {
        let inst = instance(
            json!({"launch_command": "serve %(port)d '127.0.0.1'", "stop_timeout": 3}),
            Some(4321),
        );
        let launch = launch_of(&inst);
        assert_eq!(launch.command, ["serve", "4321", "127.0.0.1"]);
        assert!(!launch.shell);
        assert_eq!(launch.cwd, inst.path);
        assert_eq!(launch.start_timeout, Seconds::from_secs(20));
        assert_eq!(launch.stop_timeout, Seconds::from_secs(3));
        assert_eq!(launch.standalone_wait, Seconds::from_secs(1));
    }

    #[test]
    fn shell_true_keeps_the_line_whole() {
        let inst = instance(
            json!({"launch_command": "echo $X | cat", "shell": true}),
            None,
        );
        let launch = launch_of(&inst);
        assert_eq!(launch.command, ["echo $X | cat"]);
        assert!(launch.shell);
    }

    #[test]
    fn a_list_is_accepted_at_register_and_start() {
        let parameters = json!({"launch_command": ["python3", "app.py", "{port}"]});
        assert!(Shell
            .validate(parameters.as_object().unwrap(), false)
            .is_ok());
        let launch = launch_of(&instance(parameters, Some(4000)));
        assert_eq!(launch.command, ["python3", "app.py", "4000"]);
    }

    #[test]
    fn bad_parameters_are_refused_at_register_and_start() {
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
                Shell.validate(params.as_object().unwrap(), false).is_err(),
                "{params}"
            );
            assert!(
                start(&instance(params.clone(), Some(1))).is_err(),
                "{params}"
            );
        }
    }
}
