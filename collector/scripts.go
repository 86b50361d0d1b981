package collector

// The only shell code Collect ever sends. Each is a constant; whatever the target controls reaches them as
// positional parameters ("$1", "$@") or comes back as data on stdout (NUL-separated records), and none uses
// eval, unquoted expansion or printf with a target value as the format.
var scripts = map[string]string{
	// probe prints the tools present, $HOME, and for each candidate directory (the literal $HOME stands for the
	// user's home) whether it is a writable directory: tool\0NAME\0 home\0VALUE\0 dir\0PATH\0 or
	// nodir\0PATH\0WHY\0, then end\0.
	"probe": `for t in cat chmod readlink stat rm; do
  if command -v "$t" >/dev/null 2>&1; then printf 'tool\0%s\0' "$t"; fi
done
printf 'home\0%s\0' "$HOME"
for d do
  if [ "$d" = '$HOME' ]; then d=$HOME; fi
  if [ -z "$d" ]; then continue; fi
  if [ ! -d "$d" ]; then printf 'nodir\0%s\0%s\0' "$d" 'not a directory'
  elif [ ! -w "$d" ]; then printf 'nodir\0%s\0%s\0' "$d" 'not writable (read-only or permissions)'
  elif [ ! -x "$d" ]; then printf 'nodir\0%s\0%s\0' "$d" 'not searchable'
  else printf 'dir\0%s\0' "$d"; fi
done
printf 'end\0'`,

	// upload writes stdin to "$1", which must not exist yet (noclobber creates it O_EXCL, so a planted file or
	// symlink fails the upload instead of being written through), readable by its owner only, then makes it
	// executable.
	"upload": `set -C && umask 077 && cat > "$1" && chmod 700 "$1"`,

	// remove deletes "$1"; without rm it empties it, the least it can leave.
	"remove": `rm -f "$1" 2>/dev/null || : > "$1"`,

	// pids prints the numeric entries of /proc, and this shell's own PID first: self\0PID\0 then PID\0 each.
	"pids": `printf 'self\0%s\0' "$$"
for d in /proc/[0-9]*; do
  if [ -d "$d" ]; then printf '%s\0' "${d#/proc/}"; fi
done`,

	// links prints, for each PID argument, its exe, cwd, root, namespace and fd links: PATH\0TARGET\n\0 (readlink's
	// own output, so a target ending in a newline survives; an empty field means readlink failed).
	"links": `for p do
  for f in /proc/"$p"/exe /proc/"$p"/cwd /proc/"$p"/root /proc/"$p"/ns/* /proc/"$p"/fd/*; do
    if [ -L "$f" ]; then printf '%s\0' "$f"; readlink "$f" 2>/dev/null; printf '\0'; fi
  done
done`,

	// walk lists "$1" down to "$2" levels: TYPE\0PATH\0 with TYPE d, f, l or o (other), symlinks not followed.
	"walk": `walk() {
  for f in "$1"/* "$1"/.[!.]* "$1"/..?*; do
    if [ -L "$f" ]; then printf 'l\0%s\0' "$f"
    elif [ -d "$f" ]; then
      printf 'd\0%s\0' "$f"
      if [ "$2" -gt 0 ]; then walk "$f" $(($2 - 1)); fi
    elif [ -f "$f" ]; then printf 'f\0%s\0' "$f"
    elif [ -e "$f" ]; then printf 'o\0%s\0' "$f"; fi
  done
}
walk "$1" "$2"`,

	// stat prints one line per argument it can stat: inode, raw mode (hex), uid, gid, size, atime, mtime, ctime,
	// birth time, then the name as given (matched by the receiver against what it asked, in order).
	"stat": `exec stat -c '%i %f %u %g %s %X %Y %Z %W %n' "$@" 2>/dev/null`,

	// catdecoded copies the file whose name "$1" carries printf %b escapes (names that are not valid UTF-8,
	// which an exec's argv may not carry): %b turns escapes into bytes, as data; the x keeps trailing newlines.
	"catdecoded": `f=$(printf '%bx' "$1") && f=${f%x} && exec cat "$f"`,

	// readlinkdecoded and statdecoded are the same for readlink and stat.
	"readlinkdecoded": `f=$(printf '%bx' "$1") && f=${f%x} && exec readlink "$f"`,
	"statdecoded":     `f=$(printf '%bx' "$1") && f=${f%x} && exec stat -c '%i %f %u %g %s %X %Y %Z %W' "$f"`,
}

// IsScript reports whether s is one of the constant scripts (for tests that watch every exec).
func IsScript(s string) bool {
	for _, v := range scripts {
		if v == s {
			return true
		}
	}
	return false
}

// shArgv is the argv of a constant script with its positional parameters.
func shArgv(name string, args ...string) []string {
	s, ok := scripts[name]
	if !ok {
		panic("collector: no script " + name)
	}
	return append([]string{"sh", "-c", s, "sh"}, args...)
}

// recordArgv is argv as an ExecRecord shows it: the script named, target values escaped.
func recordArgv(argv []string) []string {
	out := make([]string, 0, len(argv))
	for i, a := range argv {
		if i == 2 && len(argv) > 2 && argv[0] == "sh" && argv[1] == "-c" {
			for name, s := range scripts {
				if s == a {
					a = "script:" + name
					break
				}
			}
		}
		out = append(out, EscapeName(a))
	}
	return out
}
