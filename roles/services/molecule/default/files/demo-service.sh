#!/usr/bin/env bash
# A pidfile-based demo service for the molecule scenarios (same contract as sample_app/shop-api.sh):
#   DEMO_SERVICE_DIR=/state/dir demo-service.sh start|stop|restart|status
# It serves $DEMO_SERVICE_DIR/docroot over HTTP on 127.0.0.1 and the port in $DEMO_SERVICE_DIR/port, and appends
# every action to $DEMO_SERVICE_DIR/actions.log (the verifier reads it).
set -euo pipefail
: "${DEMO_SERVICE_DIR:?set DEMO_SERVICE_DIR}"
python="${DEMO_SERVICE_PYTHON:-python3}"
pidfile="$DEMO_SERVICE_DIR/service.pid"
port="$(cat "$DEMO_SERVICE_DIR/port")"
note() { echo "$1" >>"$DEMO_SERVICE_DIR/actions.log"; echo "$1"; }
running() { [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

start() {
  if running; then note "already running"; return 0; fi
  # its own session: nothing that ends the starting task's process group (or session) ends the service
  setsid nohup "$python" -m http.server "$port" --bind 127.0.0.1 --directory "$DEMO_SERVICE_DIR/docroot" \
    >>"$DEMO_SERVICE_DIR/access.log" 2>&1 </dev/null &
  echo $! >"$pidfile"
  # started means listening: wait for the port (a loaded machine may take seconds), fail if the server died
  for _ in $(seq 1 100); do
    if ! running; then note "failed to start"; return 1; fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then note "started"; return 0; fi
    sleep 0.1
  done
  note "failed to start: nothing listens on port $port after 10 s"
  return 1
}

stop() {
  if ! running; then rm -f "$pidfile"; note "not running"; return 0; fi
  pid="$(cat "$pidfile")"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  rm -f "$pidfile"
  note "stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  restart) stop; start ;;
  status) if running; then echo "running"; else echo "stopped"; exit 3; fi ;;
  *) echo "usage: $0 start|stop|restart|status" >&2; exit 2 ;;
esac
