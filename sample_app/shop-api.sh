#!/usr/bin/env bash
# Pidfile-based service script for the sample shop API (the local world has no systemd).
#   PGSHIFT_API_CONFIG=/path/api.json shop-api.sh start|stop|restart|status
# The pidfile and log file paths come from the config file; start returns once the process runs
# (health is the caller's business: the services role polls /health).
set -euo pipefail
: "${PGSHIFT_API_CONFIG:?set PGSHIFT_API_CONFIG to the API config file}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PGSHIFT_API_PYTHON:-python3}"
read_cfg() { "$python" -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$PGSHIFT_API_CONFIG" "$1"; }
pidfile="$(read_cfg pidfile)"
logfile="$(read_cfg logfile)"

running() { [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

start() {
  if running; then echo "shop-api already running (pid $(cat "$pidfile"))"; return 0; fi
  PGSHIFT_API_CONFIG="$PGSHIFT_API_CONFIG" nohup "$python" "$here/api.py" >>"$logfile" 2>&1 </dev/null &
  echo $! >"$pidfile"
  sleep 0.2
  if ! running; then echo "shop-api failed to start; see $logfile" >&2; return 1; fi
  echo "shop-api started (pid $(cat "$pidfile"))"
}

stop() {
  if ! running; then rm -f "$pidfile"; echo "shop-api not running"; return 0; fi
  pid="$(cat "$pidfile")"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  rm -f "$pidfile"
  echo "shop-api stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  restart) stop; start ;;
  status) if running; then echo "running (pid $(cat "$pidfile"))"; else echo "stopped"; exit 3; fi ;;
  *) echo "usage: $0 start|stop|restart|status" >&2; exit 2 ;;
esac
