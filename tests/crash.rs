//! The heart's store under failure: SIGKILL at random moments of a burst
//! of registers, starts, stops, deregisters and exit reports loses no
//! acknowledged change and tears no record; a `catalog.json` of the
//! previous version is migrated on first start; a record write that fails
//! fails its request and changes nothing.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

use crate::util::heart::shell_instance;
use crate::util::http::Request;
use crate::util::process::processes_under;
use crate::util::{wait_until, TestHeart};

/// What the last change acknowledged to a client (a 2xx answer) makes
/// of an instance.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Acked {
    /// Registered (or never started since): present, `REGISTERED`.
    Registered,
    /// Started: `RUNNING`, or the exit of its command recorded.
    Started,
    /// Stopped: `STOPPED`.
    Stopped,
    /// Deregistered: absent.
    Deregistered,
    /// A start whose answer never came, found `SUSPENDED` after the
    /// restart (its supervisor was not launched yet): its fate is unknown,
    /// and the checker may still record an exit.
    Suspended,
}

impl Acked {
    /// Whether `state` (`None`: absent) agrees with this change.
    fn admits(self, state: Option<&str>) -> bool {
        match self {
            Acked::Registered => state == Some("REGISTERED"),
            // Being brought back or restarted by the time it is read:
            // STARTING too.
            Acked::Started => {
                matches!(state, Some("RUNNING" | "STARTING" | "STOPPED" | "ERROR"))
            }
            Acked::Stopped => state == Some("STOPPED"),
            Acked::Deregistered => state.is_none(),
            // Found gone and being brought back (its desired state is
            // running): the resume may have brought it back by now.
            Acked::Suspended => matches!(
                state,
                Some("SUSPENDED" | "STARTING" | "RUNNING" | "STOPPED" | "ERROR")
            ),
        }
    }

    /// Whether `state` agrees with this change when its answer never
    /// came: a start may also have been cut short (`SUSPENDED`).
    fn admits_unanswered(self, state: Option<&str>) -> bool {
        self.admits(state)
            || (self == Acked::Started && matches!(state, Some("SUSPENDED" | "STARTING")))
    }
}

/// One instance as its client thread knows it: the last acknowledged
/// change, and a change whose answer never came (the heart died).
#[derive(Debug, Clone, Copy)]
struct Known {
    acked: Acked,
    pending: Option<Acked>,
}

/// A xorshift generator: enough to pick operations and moments.
struct Random(u64);

impl Random {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// One client thread's burst, until a request fails for want of a heart.
/// Its instances are `t{thread}-{n}`, each changed only by it.
fn burst(
    heart: &TestHeart,
    thread: usize,
    seed: u64,
    known: &Mutex<BTreeMap<String, Known>>,
    acks: &AtomicUsize,
) {
    let mut random = Random(seed | 1);
    loop {
        let n = random.below(6);
        let id = format!("t{thread}-{n}");
        let acked = known
            .lock()
            .unwrap()
            .get(&id)
            .map_or(Acked::Deregistered, |k| k.acked);
        let (method, path, body, change) = match acked {
            Acked::Deregistered => {
                // Now and then an application that exits on its own: its
                // supervisor sends an exit report.
                let command = if random.below(3) == 0 {
                    "sleep 0.2"
                } else {
                    "sleep 1000"
                };
                let mut body = shell_instance(
                    &id,
                    &heart.dir().join("app"),
                    json!({"launch_command": command, "standalone_wait": 0}),
                );
                body["standalone"] = json!(true);
                (
                    "POST",
                    "/instances".to_string(),
                    Some(body),
                    Acked::Registered,
                )
            }
            Acked::Started | Acked::Suspended => (
                "POST",
                format!("/instances/{id}/stop"),
                None,
                Acked::Stopped,
            ),
            Acked::Registered | Acked::Stopped if random.below(4) == 0 => (
                "DELETE",
                format!("/instances/{id}"),
                None,
                Acked::Deregistered,
            ),
            Acked::Registered | Acked::Stopped => (
                "POST",
                format!("/instances/{id}/start"),
                None,
                Acked::Started,
            ),
        };
        known
            .lock()
            .unwrap()
            .entry(id.clone())
            .or_insert(Known {
                acked,
                pending: None,
            })
            .pending = Some(change);
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let answer = Request::new(method, &path)
            .token(Some(heart.token()))
            .body(&bytes)
            .timeout(Duration::from_secs(30))
            .send(heart.addr());
        let mut known = known.lock().unwrap();
        let entry = known.get_mut(&id).unwrap();
        match answer {
            Ok(answer) if (200..300).contains(&answer.status) => {
                acks.fetch_add(1, Ordering::Relaxed);
                *entry = Known {
                    acked: change,
                    pending: None,
                };
            }
            // Refused (a start of an instance whose command failed, a
            // conflict): nothing acknowledged, nothing to expect from it.
            Ok(answer) if answer.status < 500 && !answer.body.is_empty() => entry.pending = None,
            // No answer, or a torn one: the heart is gone.
            _ => return,
        }
    }
}

/// Every instance's state, by id.
fn states(heart: &TestHeart) -> BTreeMap<String, String> {
    let answer = heart.call("GET", "/instances", None);
    assert_eq!(answer.status, 200, "{answer:?}");
    answer.json()["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["instance_id"].as_str().unwrap().to_string(),
                i["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn sigkill_during_a_burst_loses_no_acknowledged_change() {
    let mut heart = TestHeart::new("crash-burst");
    heart.dir().write("app/index.html", "ok\n");
    heart.spawn();
    let known = Mutex::new(BTreeMap::<String, Known>::new());
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut moments = Random(seed | 1);
    let acks = AtomicUsize::new(0);
    for round in 0..5 {
        let pid = heart.pid();
        let moment = Duration::from_millis(100 + moments.below(700));
        thread::scope(|scope| {
            for t in 0..4 {
                let (heart, known, acks) = (&heart, &known, &acks);
                let seed = seed.wrapping_add(round * 16 + t as u64);
                scope.spawn(move || burst(heart, t, seed, known, acks));
            }
            // The random moment of the kill (not a synchronisation: the
            // clients run until their heart is gone).
            thread::sleep(moment);
            kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
        });
        heart.crash();
        // A torn record would stop the heart: it must start.
        heart.spawn();
        let found = states(&heart);
        for (id, k) in known.lock().unwrap().iter() {
            let state = found.get(id).map(String::as_str);
            assert!(
                k.acked.admits(state) || k.pending.is_some_and(|p| p.admits_unanswered(state)),
                "seed {seed}, round {round}: {id} is {state:?} after {k:?}; stderr:\n{}",
                heart.stderr()
            );
        }
        let mut known = known.lock().unwrap();
        // What the heart now holds is the truth for the next round.
        for (id, k) in known.iter_mut() {
            k.pending = None;
            k.acked = match found.get(id).map(String::as_str) {
                None => Acked::Deregistered,
                Some("REGISTERED") => Acked::Registered,
                Some("STOPPED") if k.acked != Acked::Started => Acked::Stopped,
                Some("SUSPENDED") => Acked::Suspended,
                Some(_) => Acked::Started,
            };
        }
    }
    // The kills landed in a burst, not in an idle heart.
    assert!(
        acks.load(Ordering::Relaxed) >= 50,
        "only {acks:?} changes acknowledged"
    );
    // No process leaked: once every instance is stopped, only the heart
    // runs under the test's directory.
    for (id, state) in states(&heart) {
        if state == "RUNNING" || state == "STARTING" {
            // 409: a short application ended since the listing.
            let answer = heart.stop(&id);
            assert!(matches!(answer.status, 200 | 409), "stop {id}: {answer:?}");
        }
    }
    let me = heart.pid();
    wait_until(
        Duration::from_secs(30),
        "every supervisor to be gone",
        || processes_under(&heart.dir().path).iter().all(|&p| p == me),
    );
}

/// A record of the previous version's catalog, with the fields of
/// `src/heart/record.rs`.
fn old_record(id: &str, source: &Path, port: u16) -> Value {
    json!({
        "instance_id": id,
        "state": "REGISTERED",
        "port": port,
        "application": {"name": id},
        "version": "",
        "runtime": {"name": "shell", "version": "1", "parameters": {"launch_command": "sleep 1000"}},
        "standalone": false,
        "exclusive": false,
        "startup": [],
        "environment": {},
        "restart": "never",
        "source": source,
        "message": "",
        "exit_key": null,
        "supervisor": null,
        "managed": false,
        "stop_timeout": null,
        "startup_timeout": null,
        "stop_requested": false,
        "running_since": null,
        "backoff": {"attempts": 0, "next_restart": null},
    })
}

#[test]
fn a_catalog_of_the_previous_version_is_migrated_on_first_start() {
    let mut heart = TestHeart::new("crash-migrate");
    let low = heart.block().low();
    let data = heart.data().to_path_buf();
    fs::create_dir_all(data.join("instances/old-1")).unwrap();
    fs::create_dir_all(data.join("instances/old-2")).unwrap();
    let catalog = json!({"format": 1, "instances": {
        "old-1": old_record("old-1", &data.join("instances/old-1"), low),
        "old-2": old_record("old-2", &data.join("instances/old-2"), low + 1),
    }});
    fs::write(data.join("catalog.json"), catalog.to_string()).unwrap();
    heart.spawn();
    let found = states(&heart);
    assert_eq!(
        found,
        BTreeMap::from([
            ("old-1".to_string(), "REGISTERED".to_string()),
            ("old-2".to_string(), "REGISTERED".to_string()),
        ]),
        "{}",
        heart.stderr()
    );
    assert!(!data.join("catalog.json").exists());
    assert!(data.join("catalog.json.migrated").is_file());
    let names: Vec<String> = heart.store_files().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["old-1.json", "old-2.json"]);
    // And the migrated store is the one read from now on.
    heart.crash();
    heart.spawn();
    assert_eq!(states(&heart).len(), 2);
}

#[test]
fn a_record_write_that_fails_fails_the_request_and_changes_nothing() {
    let mut heart = TestHeart::new("crash-write");
    heart.dir().write("app/index.html", "ok\n");
    heart.spawn();
    let mut body = shell_instance(
        "web",
        &heart.dir().join("app"),
        json!({"launch_command": "sleep 1000", "standalone_wait": 0}),
    );
    body["standalone"] = json!(true);
    let answer = heart.register(body);
    assert_eq!(answer.status, 201, "{answer:?}");
    let before = heart.store_files();
    // The write goes to `store/web.json.new` first: a directory there
    // makes it fail.
    let blocker = heart.data().join("store/web.json.new");
    fs::create_dir(&blocker).unwrap();
    let began = Instant::now();
    let answer = heart.start("web");
    assert!(answer.status >= 500, "{answer:?}");
    assert!(
        answer.body.contains(&blocker.display().to_string())
            || answer.body.contains("store/web.json"),
        "the error names the file: {answer:?}"
    );
    assert!(began.elapsed() < Duration::from_secs(30));
    // The heart still answers and the instance is unchanged.
    assert_eq!(heart.state("web"), "REGISTERED");
    fs::remove_dir(&blocker).unwrap();
    assert_eq!(heart.store_files(), before);
    let answer = heart.start("web");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(heart.state("web"), "RUNNING");
}
