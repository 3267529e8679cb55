//! What hostile or unlucky input must never do (issue 8): each test
//! reproduces one window or one crafted input against the real binaries.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::{Dir, RUNTIME};

#[test]
fn a_check_of_a_plugin_that_hangs_everywhere_takes_one_time_limit() {
    let dir = Dir::new("hostile-hang");
    dir.script(
        "plugins/pm-runtime-hang",
        "#!/bin/sh\nsleep 600 &\nsleep 600\n",
    );
    let plugin = dir.join("plugins/pm-runtime-hang");
    let started = Instant::now();
    let out = Command::new(RUNTIME)
        .args(["--timeout", "1", "check"])
        .arg(&plugin)
        .output()
        .unwrap();
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(took < Duration::from_secs(6), "took {took:?}: {stdout}");
    assert!(stdout.contains("versions: "), "{stdout}");
    assert!(stdout.contains("timed out after 1.0 s"), "{stdout}");
    for mode in ["environment", "start", "status", "stop"] {
        assert!(
            stdout.contains(&format!("{mode}: skipped: the plugin hung in versions")),
            "{mode}: {stdout}"
        );
    }
}
