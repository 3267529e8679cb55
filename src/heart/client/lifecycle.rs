//! The client commands of issue 11: `start --all`, `restart`, `signal`,
//! `update` and the redeploy in place that `deploy` does for an
//! application that already has exactly one instance on the node.

use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use super::args::Update;
use super::http::Heart;
use super::render::{print, print_json, state_line};
use super::{decode, encode, load_manifest, Failed, Outcome};
use crate::error::Error;
use crate::protocol::{
    ForwardSignal, InstanceId, InstanceList, InstanceView, SourceRequest, StartAllAnswer, State,
};

/// `start --all`: every instance that should be running and is not is
/// started; one line each. Fails (exit 1) when any could not be started.
pub(super) fn start_all(heart: &Heart, json: bool) -> Outcome<()> {
    let text = heart.post("/instances/start-all", None)?;
    let answer: StartAllAnswer = decode(&text)?;
    if json {
        print_json(&text)?;
    } else {
        if answer.started.is_empty() && answer.failed.is_empty() {
            print("nothing to start: every instance that should run is RUNNING\n")?;
        }
        for view in &answer.started {
            print(&format!("{}\n", state_line(view, &heart.app_host)))?;
        }
        for failure in &answer.failed {
            print(&format!(
                "{}: not started: {}\n",
                failure.instance_id,
                super::render::first_line(&failure.error)
            ))?;
        }
    }
    if answer.failed.is_empty() {
        return Ok(());
    }
    let failed = Failed::Other(Error::invalid(format!(
        "{} instance(s) could not be started",
        answer.failed.len()
    )));
    Err(if json {
        Failed::Printed(Box::new(failed))
    } else {
        failed
    })
}

/// Prints the instance a restart or redeploy answered.
fn print_started(heart: &Heart, text: &str, json: bool) -> Outcome<()> {
    if json {
        return print_json(text);
    }
    let view: InstanceView = decode(text)?;
    print(&format!("{}\n", state_line(&view, &heart.app_host)))
}

/// `restart ID`.
pub(super) fn restart(heart: &Heart, id: &InstanceId, json: bool) -> Outcome<()> {
    let text = heart.post(&format!("/instances/{id}/restart"), None)?;
    print_started(heart, &text, json)
}

/// `signal ID SIGNAL`.
pub(super) fn signal(
    heart: &Heart,
    id: &InstanceId,
    signal: ForwardSignal,
    json: bool,
) -> Outcome<()> {
    let body = json!({ "signal": signal }).to_string();
    let text = heart.post(&format!("/instances/{id}/signal"), Some(body.as_bytes()))?;
    if json {
        return print_json(&text);
    }
    print(&format!("{id}: sent {signal}\n"))
}

/// `update ID --env KEY=VALUE --unset KEY [--restart]`.
pub(super) fn update(heart: &Heart, id: &InstanceId, update: &Update, json: bool) -> Outcome<()> {
    let mut environment = Map::new();
    for (key, value) in &update.set {
        environment.insert(key.clone(), Value::String(value.clone()));
    }
    for key in &update.unset {
        environment.insert(key.clone(), Value::Null);
    }
    if !environment.is_empty() {
        let body = json!({ "environment": environment }).to_string();
        let text = heart.patch(&format!("/instances/{id}"), body.as_bytes())?;
        if !update.restart {
            if json {
                return print_json(&text);
            }
            return print(&format!(
                "{id}: updated; applies at its next start (restart it, or give --restart)\n"
            ));
        }
    }
    restart(heart, id, json)
}

/// The instance `deploy DIR` replaces in place, if any: with `--id ID`,
/// that instance when it exists (it must belong to the manifest's
/// application); without it, the one instance of the manifest's
/// application on the node. `None`: register a new instance.
pub(super) fn redeploy_target(
    heart: &Heart,
    dir: &Path,
    id: Option<&InstanceId>,
) -> Outcome<Option<InstanceId>> {
    let (_, manifest) = load_manifest(dir)?;
    let name = &manifest.application.name;
    if let Some(id) = id {
        return match heart.get(&format!("/instances/{id}")) {
            Ok(text) => {
                let view: InstanceView = decode(&text)?;
                if &view.application.name != name {
                    return Err(Failed::Misuse(Error::Usage(format!(
                        "{id} belongs to application {:?}, not {name:?}",
                        view.application.name
                    ))));
                }
                Ok(Some(id.clone()))
            }
            Err(Failed::Refused { status: 404, .. }) => Ok(None),
            Err(failed) => Err(failed),
        };
    }
    let list: InstanceList = decode(&heart.get("/instances")?)?;
    let mine: Vec<&InstanceView> = list
        .instances
        .iter()
        .filter(|v| &v.application.name == name)
        .collect();
    match mine.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one.instance_id.clone())),
        many => Err(Failed::Misuse(Error::Usage(format!(
            "application {name:?} has {} instances on this node ({}): give --id ID to \
             redeploy one, or --new to register another",
            many.len(),
            many.iter()
                .map(|v| v.instance_id.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )))),
    }
}

/// Redeploys `id` in place from `dir`: new source and manifest, restarted
/// on the same port.
pub(super) fn redeploy(
    heart: &Heart,
    dir: &Path,
    id: &InstanceId,
    uploaded: Option<PathBuf>,
    json: bool,
) -> Outcome<()> {
    let (source, manifest) = load_manifest(dir)?;
    let source = uploaded.unwrap_or(source);
    let body = encode(&SourceRequest {
        source,
        source_sha256: None,
        manifest: Some(manifest),
    })?;
    let text = heart.put(&format!("/instances/{id}/source"), &body)?;
    if json {
        return print_json(&text);
    }
    let view: InstanceView = decode(&text)?;
    let port = view
        .port
        .map_or_else(String::new, |p| format!(" on port {p}"));
    print(&format!(
        "{id}: redeployed in place{port} (one instance of {:?} on this node; --new registers another)\n",
        view.application.name
    ))?;
    print(&format!("{}\n", state_line(&view, &heart.app_host)))?;
    if view.state == State::Error {
        return Err(Failed::Other(Error::invalid(format!(
            "unable to start {id}: {}",
            view.message.trim_end()
        ))));
    }
    Ok(())
}

/// `deploy --replace`: registers the new version as a new instance and
/// starts it; only once it is `RUNNING` (and, with a health check,
/// healthy: the heart answers a start only then) are the application's
/// other instances on this node stopped and deregistered. A new instance
/// that fails to start is deregistered and the old ones keep serving.
/// With `--pacemaker`, the controller hears the new instance's `RUNNING`
/// before the old ones' `STOPPED`: the heart's stop of an old one first
/// waits (bounded) for the controller to answer that report.
pub(super) fn replace(heart: &Heart, dir: &Path, register: &[u8], json: bool) -> Outcome<()> {
    let (_, manifest) = load_manifest(dir)?;
    let name = &manifest.application.name;
    let list: InstanceList = decode(&heart.get("/instances")?)?;
    let old: Vec<InstanceId> = list
        .instances
        .iter()
        .filter(|v| &v.application.name == name)
        .map(|v| v.instance_id.clone())
        .collect();
    let view: InstanceView = decode(&heart.post("/instances", Some(register))?)?;
    let id = view.instance_id;
    if let Err(failed) = heart.post(&format!("/instances/{id}/start"), None) {
        let _ = heart.delete(&format!("/instances/{id}"));
        return Err(failed);
    }
    for old_id in &old {
        heart.post(&format!("/instances/{old_id}/stop"), None)?;
        heart.delete(&format!("/instances/{old_id}"))?;
    }
    let view: InstanceView = decode(&heart.get(&format!("/instances/{id}"))?)?;
    if json {
        return print_json(&serde_json::to_string(&view).unwrap_or_default());
    }
    let port = view
        .port
        .map_or_else(String::new, |p| format!(" on port {p}"));
    print(&format!(
        "{id}: {}{port}; replaced {}\n",
        view.state.as_str(),
        if old.is_empty() {
            "nothing".to_string()
        } else {
            old.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        }
    ))
}
