#!/bin/bash
# demo.sh -- `make demo`: the bridge end to end on this machine.
#
# Installs what is missing (make deps), builds, then starts
#   - a throwaway Dovecot on 127.0.0.1:9950 (implicit TLS, fresh CA in
#     build/demo/ca.pem) with a mailbox `demo` holding a few sample messages
#     (config/demo-server);
#   - the demo receiver on 127.0.0.1:8026, which verifies each event's
#     signature and prints one line for it (build/tools/webhook-receiver);
#   - the bridge with a private (0600) copy of config/demo.json in
#     build/demo/demo.json (state in build/demo/state, log in
#     build/demo/bridge.log).
# The POP3 password, the webhook secret and the API token are generated for
# this run and handed over in environment variables only.  It keeps running
# until Ctrl-C or SIGTERM, then stops everything it started.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
demo="$root/build/demo"
TLS_PORT=9950       # config/demo.json: accounts[0].port
PLAIN_PORT=9951     # Dovecot's STLS listener (unused by the demo config)
RECEIVER_PORT=8026  # config/demo.json: webhooks[0].url
API_PORT=8025       # config/demo.json: api.listen
STOP_WAIT=40        # seconds to wait for each process to stop (the bridge drains up to 30 s)

say() { printf '%s\n' "$*"; }
die() { printf 'make demo: %s\n' "$*" >&2; exit 1; }

cd "$root"

# ---- what the demo needs -------------------------------------------------------
if [ "$(id -u)" = 0 ]; then
    make --no-print-directory deps
elif ! make --no-print-directory deps; then
    die "some Debian packages are missing; install them with: sudo make deps"
fi
make --no-print-directory -s all tools

for port in $TLS_PORT $PLAIN_PORT $RECEIVER_PORT $API_PORT; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        die "127.0.0.1:$port is already in use (another demo running?); stop that first"
    fi
done

# ---- per-run secrets -------------------------------------------------------------
DEMO_POP3_PASSWORD=$(openssl rand -hex 16)
DEMO_WEBHOOK_SECRET="whsec_$(openssl rand -base64 32)"
DEMO_API_TOKEN=$(openssl rand -hex 24)
export DEMO_POP3_PASSWORD DEMO_WEBHOOK_SECRET DEMO_API_TOKEN

rm -rf "$demo"
mkdir -p "$demo"
chmod 755 "$demo"
( umask 077; printf '%s\n' "$DEMO_API_TOKEN" > "$demo/api-token" )
# the bridge refuses a configuration other users can read (a fresh clone's
# files are 0644): it runs a 0600 copy, next to the files it names
( umask 077; sed 's|"\.\./build/demo/|"|' config/demo.json > "$demo/demo.json" )
grep -q '"state_dir": "state"' "$demo/demo.json" || die "cannot make build/demo/demo.json from config/demo.json"

# ---- start, and stop everything on the way out ------------------------------------
server_pid="" receiver_pid="" bridge_pid=""
stopping=0

stop_one() { # NAME PID: SIGTERM, wait up to STOP_WAIT s, then SIGKILL
    local name=$1 pid=$2 i
    [ -n "$pid" ] || return 0
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < STOP_WAIT * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "  $name did not stop within ${STOP_WAIT}s: killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    [ "$stopping" = 1 ] && return
    stopping=1
    trap '' INT TERM HUP
    say ""
    say "stopping the demo ..."
    stop_one "the bridge" "$bridge_pid"
    stop_one "the receiver" "$receiver_pid"
    stop_one "the demo Dovecot" "$server_pid"
    rm -f "$demo/maildir"
    say "stopped. (logs: build/demo/bridge.log, build/demo/logs/)"
}
trap cleanup EXIT
trap 'exit 0' INT    # a requested stop is a clean end
trap 'exit 0' TERM
trap 'exit 129' HUP

say "starting the demo Dovecot (POP3 over TLS on 127.0.0.1:$TLS_PORT) ..."
# each in its own session: Ctrl-C reaches only this script, which then stops them in
# order (the bridge first, so it can finish what is in flight)
setsid /usr/bin/python3 "$here/demo-server" "$demo" "$TLS_PORT" "$PLAIN_PORT" > "$demo/server.out" 2>&1 &
server_pid=$!
for ((i = 0; i < 300; i++)); do
    grep -q '^ready$' "$demo/server.out" 2>/dev/null && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$demo/server.out" >&2; die "the demo Dovecot did not start"; }
    sleep 0.1
done
grep -q '^ready$' "$demo/server.out" || { cat "$demo/server.out" >&2; die "the demo Dovecot did not start within 30 s"; }

say "starting the demo receiver (http://127.0.0.1:$RECEIVER_PORT/hooks/mail) ..."
# the secret travels in the environment, not on the command line (ps shows that)
WEBHOOK_SECRET="$DEMO_WEBHOOK_SECRET" setsid build/tools/webhook-receiver --port "$RECEIVER_PORT" --print \
    > >(sed -u 's/^/  receiver: /') 2> >(sed -u 's/^/  receiver: /' >&2) &
receiver_pid=$!
for ((i = 0; i < 100; i++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$RECEIVER_PORT") 2>/dev/null && break
    kill -0 "$receiver_pid" 2>/dev/null || die "the demo receiver did not start"
    sleep 0.1
done

say "starting the bridge (build/pop3bridge run --config build/demo/demo.json) ..."
cat <<EOF

The pop3bridge demo is running:
  Dovecot   pop3s://demo@127.0.0.1:$TLS_PORT   mailbox "demo", CA build/demo/ca.pem, 4 sample messages
  bridge    build/pop3bridge run --config build/demo/demo.json   (polls every 5 s)
            log: build/demo/bridge.log   state: build/demo/state/
  dashboard http://127.0.0.1:$API_PORT/   sign in with the token in build/demo/api-token
            (REST API under http://127.0.0.1:$API_PORT/api/v1, described at /openapi.yaml)
  receiver  http://127.0.0.1:$RECEIVER_PORT/hooks/mail   prints each verified event below

Drop a new message into the demo mailbox (from another terminal, in $root):
  config/demo-send "Hello, bridge"

Press Ctrl-C to stop everything.

EOF
setsid build/pop3bridge run --config "$demo/demo.json" 2> "$demo/bridge.log" &
bridge_pid=$!
sleep 0.5
kill -0 "$bridge_pid" 2>/dev/null || { cat "$demo/bridge.log" >&2; die "the bridge did not start"; }

# stay until a signal, or until one of the three stops on its own
while kill -0 "$bridge_pid" 2>/dev/null && kill -0 "$receiver_pid" 2>/dev/null &&
      kill -0 "$server_pid" 2>/dev/null; do
    wait -n "$bridge_pid" "$receiver_pid" "$server_pid" 2>/dev/null || true
done
for p in "bridge:$bridge_pid" "receiver:$receiver_pid" "demo Dovecot:$server_pid"; do
    kill -0 "${p#*:}" 2>/dev/null || say "make demo: the ${p%%:*} exited; see build/demo/" >&2
done
exit 1
