package awsfake

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The stand-ins for systemctl and journalctl that come first in the PATH of the commands an instance runs. Units
// are read from $AWSFAKE_ROOT/etc/systemd/system; a started service's pid and output go to $AWSFAKE_STATE. Only
// what a bootstrap script needs is there: daemon-reload (nothing to do), enable [--now], disable, start, stop,
// restart, is-active [--quiet], status; journalctl -u UNIT [-n N] prints the service's output. Restart= is not
// honoured: a service that exits stays down, which tests see at once.
const systemctlScript = `#!/bin/sh
# systemctl stand-in of warren's awsfake: not systemd.
set -u
units="$AWSFAKE_ROOT/etc/systemd/system"
state="$AWSFAKE_STATE"
mkdir -p "$state"
now=no quiet=no cmd="" names=""
for a in "$@"; do
  case "$a" in
    --now) now=yes ;;
    --quiet|-q) quiet=yes ;;
    --no-pager|--no-block|--system) ;;
    -*) echo "systemctl (awsfake): unsupported option $a" >&2; exit 2 ;;
    *) if [ -z "$cmd" ]; then cmd=$a; else names="$names $a"; fi ;;
  esac
done
unit() { case "$1" in *.*) echo "$1" ;; *) echo "$1.service" ;; esac; }
active() { [ -f "$state/$1.pid" ] && kill -0 "$(cat "$state/$1.pid")" 2>/dev/null && ! grep -q '^[^)]*) Z' "/proc/$(cat "$state/$1.pid")/stat" 2>/dev/null; }
start() {
  u=$(unit "$1"); f="$units/$u"
  if [ ! -f "$f" ]; then echo "Failed to start $u: Unit $u not found." >&2; exit 5; fi
  if active "$u"; then return 0; fi
  exec_start=$(sed -n 's/^ExecStart=//p' "$f" | tail -n 1)
  env_file=$(sed -n 's/^EnvironmentFile=-\{0,1\}//p' "$f" | tail -n 1)
  (
    if [ -n "$env_file" ] && [ -f "$env_file" ]; then set -a; . "$env_file"; set +a; fi
    exec setsid sh -c "exec $exec_start" </dev/null >>"$state/$u.log" 2>&1
  ) &
  echo $! >"$state/$u.pid"
}
stop() {
  u=$(unit "$1")
  if active "$u"; then
    pid=$(cat "$state/$u.pid")
    kill -TERM -"$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
    i=0
    while active "$u" && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
    if active "$u"; then kill -KILL -"$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null; fi
  fi
  rm -f "$state/$u.pid"
}
rc=0
case "$cmd" in
  daemon-reload) ;;
  enable) for n in $names; do touch "$state/$(unit "$n").enabled"; [ $now = yes ] && start "$n"; done ;;
  disable) for n in $names; do rm -f "$state/$(unit "$n").enabled"; [ $now = yes ] && stop "$n"; done ;;
  start) for n in $names; do start "$n"; done ;;
  stop) for n in $names; do stop "$n"; done ;;
  restart) for n in $names; do stop "$n"; start "$n"; done ;;
  is-active)
    for n in $names; do
      if active "$(unit "$n")"; then [ $quiet = yes ] || echo active; else [ $quiet = yes ] || echo inactive; rc=3; fi
    done ;;
  status)
    for n in $names; do
      u=$(unit "$n")
      if active "$u"; then echo "* $u - active (running) since pid $(cat "$state/$u.pid")"; else echo "* $u - inactive (dead)"; rc=3; fi
      tail -n 10 "$state/$u.log" 2>/dev/null
    done ;;
  *) echo "systemctl (awsfake): unsupported command $cmd" >&2; exit 2 ;;
esac
exit $rc
`

const journalctlScript = `#!/bin/sh
# journalctl stand-in of warren's awsfake: prints a service's output.
set -u
u="" n=100000
while [ $# -gt 0 ]; do
  case "$1" in
    -u|--unit) u=$2; shift ;;
    -n|--lines) n=$2; shift ;;
    --since|--until|-o|--output) shift ;;
    *) ;;
  esac
  shift
done
case "$u" in *.*) ;; *) u="$u.service" ;; esac
[ -f "$AWSFAKE_STATE/$u.log" ] && tail -n "$n" "$AWSFAKE_STATE/$u.log"
exit 0
`

func writeStandIns(dir string) error {
	for name, body := range map[string]string{"systemctl": systemctlScript, "journalctl": journalctlScript} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o755); err != nil {
			return err
		}
	}
	return nil
}

func readPID(path string) (int, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid, err == nil && pid > 1
}

// alive reports whether pid runs and is not a zombie (a service outlives the shell that started it and is then
// nobody's child here, so it may linger unreaped).
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z'
	}
	return true
}

// stopServices ends every service the stand-in systemctl started in state: SIGTERM to its process group, SIGKILL
// after 5 s.
func stopServices(state string) {
	pidFiles, _ := filepath.Glob(filepath.Join(state, "*.pid"))
	var pids []int
	for _, f := range pidFiles {
		if pid, ok := readPID(f); ok && alive(pid) {
			syscall.Kill(-pid, syscall.SIGTERM)
			syscall.Kill(pid, syscall.SIGTERM)
			pids = append(pids, pid)
		}
		os.Remove(f)
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, pid := range pids {
		for alive(pid) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if alive(pid) {
			syscall.Kill(-pid, syscall.SIGKILL)
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}
