#!/usr/bin/env bash
# Quick start: build the release binaries, run a heart on the embedded
# defaults (API on 127.0.0.1:42500, data in ./pm-data, instance ports
# 42600-42699) and deploy the example application in examples/hello.
#
# Run it from anywhere: it works in the top of the checkout. A second run
# reuses the heart it started (or any heart that answers with the token
# in ./pm-data) and the instance `hello` it deployed.

set -euo pipefail

cd "$(dirname "$0")/.."

DATA=pm-data
LOG=$DATA/serve.out
ID=hello
LISTEN=127.0.0.1:42500
READY_SECONDS=20

say() { printf 'quickstart: %s\n' "$*"; }
die() { printf 'quickstart: fatal: %s\n' "$*" >&2; exit 1; }

say "building the release binaries (cargo build --release)"
cargo build --release --quiet

TARGET=${CARGO_TARGET_DIR:-target}
BIN=$TARGET/release
if [ ! -x "$BIN/pm-heart" ]; then
    # A .cargo/config.toml that sets build.target puts them one level down.
    for candidate in "$TARGET"/*/release; do
        if [ -x "$candidate/pm-heart" ]; then BIN=$candidate; break; fi
    done
fi
[ -x "$BIN/pm-heart" ] || die "no pm-heart under target/ after the build"
HEART="$BIN/pm-heart"

mkdir -p "$DATA"

# Starts the heart in the background and waits, with a bound, for its
# readiness line in the new part of its log. Returns 1 if it exited.
start_heart() {
    say "starting pm-heart serve (log: $LOG)"
    # As root the heart runs no application as root unless told to: this
    # demonstration allows it; a server gives its applications a user
    # (--run-as USER, or "user" in the manifest). See pm-heart(8), ISOLATION.
    options=()
    if [ "$(id -u)" -eq 0 ]; then
        say "running as root: --allow-root-apps (a server uses --run-as USER)"
        options=(--allow-root-apps)
    fi
    : >>"$LOG"
    before=$(wc -l <"$LOG")
    if command -v setsid >/dev/null 2>&1; then
        setsid "$HEART" serve "${options[@]}" </dev/null >>"$LOG" 2>&1 &
    else
        nohup "$HEART" serve "${options[@]}" </dev/null >>"$LOG" 2>&1 &
    fi
    heart_pid=$!
    for _ in $(seq 1 $((READY_SECONDS * 10))); do
        if grep -q '^listening on ' <(tail -n +$((before + 1)) "$LOG"); then
            echo "$heart_pid" >"$DATA/heart.pid"
            return 0
        fi
        if ! kill -0 "$heart_pid" 2>/dev/null; then
            return 1
        fi
        sleep 0.1
    done
    kill "$heart_pid" 2>/dev/null || true
    return 1
}

fail_start() {
    tail -n +$((before + 1)) "$LOG" >&2 || true
    die "the heart did not start (above: the end of $LOG)${1:+: $1}"
}

heart_pid=""
if "$HEART" runtimes --data-dir "$DATA" >/dev/null 2>&1; then
    say "a heart already answers at $(cat "$DATA/address") with the token in $DATA: reusing it"
    # The pid this script recorded, if that process is still a pm-heart.
    if [ -s "$DATA/heart.pid" ]; then
        recorded=$(cat "$DATA/heart.pid")
        if [ "$(cat "/proc/$recorded/comm" 2>/dev/null)" = pm-heart ]; then
            heart_pid=$recorded
        fi
    fi
else
    # 42500 lies in Linux's ephemeral port range: a connection that some
    # program closed may hold it in TIME_WAIT for up to a minute. When the
    # bind fails but nothing listens there, wait for it (bounded).
    deadline=$((SECONDS + 75))
    while :; do
        start_heart && break
        if ! grep -q 'Address already in use' <(tail -n +$((before + 1)) "$LOG"); then
            fail_start
        fi
        if (exec 3<>"/dev/tcp/${LISTEN%:*}/${LISTEN##*:}") 2>/dev/null; then
            fail_start "another program listens on $LISTEN (a heart with another data directory?)"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            fail_start "$LISTEN stayed in use"
        fi
        say "$LISTEN is held by a closing connection (TIME_WAIT); retrying in 2 s"
        sleep 2
    done
    say "$(grep -m1 '^listening on ' <(tail -n +$((before + 1)) "$LOG")) (pid $heart_pid)"
fi

state=$("$HEART" show "$ID" --data-dir "$DATA" 2>/dev/null | sed -n 's/^state: //p' || true)
case "$state" in
    "")
        say "deploying examples/hello as instance $ID"
        "$HEART" deploy examples/hello --id "$ID" --data-dir "$DATA"
        ;;
    RUNNING)
        say "instance $ID is already RUNNING: reusing it"
        ;;
    STARTING)
        die "instance $ID is STARTING; run this again in a moment"
        ;;
    *)
        say "instance $ID is $state: starting it"
        "$HEART" start "$ID" --data-dir "$DATA"
        ;;
esac

url=$("$HEART" show "$ID" --data-dir "$DATA" | sed -n 's/^url: //p')
[ -n "$url" ] || die "instance $ID is not running: see $HEART log $ID --data-dir $DATA"

cat <<TEXT

Open $url
(or: curl $url)

From $(pwd):
The instance:   $HEART show $ID     (list, log $ID, ...)
To stop it:     $HEART stop $ID
To remove it:   $HEART deregister $ID
To stop the heart (the application keeps running unless stopped first):
                kill ${heart_pid:-<the pid of pm-heart serve>}
The heart's log is $LOG; its state is in $DATA/.
TEXT
