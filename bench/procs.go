package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proc is a process the driver started. Closing its standard input ends the roles of this binary; kill ends any.
type proc struct {
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	addr  string // what it listens on ("-" for none)
	ctrl  string // its control server ("-" for none)
}

var started []*proc

// startRole runs this binary with a role and waits for its ADDR and CTRL lines.
func startRole(name, role string, args ...string) *proc {
	self, err := os.Executable()
	must(err)
	return startCmd(name, true, self, append([]string{role}, args...)...)
}

func startCmd(name string, announces bool, path string, args ...string) *proc {
	cmd := exec.Command(path, args...)
	cmd.Stderr = newPrefixWriter(name)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	must(err)
	p := &proc{name: name, cmd: cmd, stdin: stdin, addr: "-", ctrl: "-"}
	var out io.ReadCloser
	if announces {
		out, err = cmd.StdoutPipe()
		must(err)
	}
	must(cmd.Start())
	started = append(started, p)
	if announces {
		lines := make(chan string, 2)
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		for _, want := range []string{"ADDR ", "CTRL "} {
			select {
			case l, ok := <-lines:
				if !ok || !strings.HasPrefix(l, want) {
					fatalf("%s did not start: %q", name, l)
				}
				v := strings.TrimPrefix(l, want)
				if want == "ADDR " {
					p.addr = v
				} else {
					p.ctrl = v
				}
			case <-time.After(60 * time.Second):
				fatalf("%s did not start within 60 s", name)
			}
		}
	}
	return p
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// stop ends the process (and its process group) and reaps it.
func (p *proc) stop() {
	if p == nil || p.cmd.ProcessState != nil {
		return
	}
	p.stdin.Close()
	syscall.Kill(-p.pid(), syscall.SIGKILL)
	p.cmd.Wait()
}

func stopAll() {
	for i := len(started) - 1; i >= 0; i-- {
		started[i].stop()
	}
	started = nil
}

// get asks the process's control server.
func (p *proc) get(path string) string {
	c := http.Client{Timeout: 120 * time.Second}
	resp, err := c.Get("http://" + p.ctrl + path)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b))
}

func (p *proc) count() int {
	n, _ := strconv.Atoi(p.get("/count"))
	return n
}

// cpuSeconds is the user+system CPU time of the process and all its descendants now alive (sshd forks one child
// per connection, which does the work).
func cpuSeconds(pid int) float64 { return cpuOf(pid, true) }

// selfCPU is the driver's own CPU time (the client), without its children.
func selfCPU() float64 { return cpuOf(osPid, false) }

func cpuOf(pid int, tree bool) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	total := (ut + st) / 100 // USER_HZ
	if !tree {
		return total
	}
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, t := range tasks {
		kids, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, t.Name()))
		for _, k := range strings.Fields(string(kids)) {
			if kid, err := strconv.Atoi(k); err == nil {
				total += cpuSeconds(kid)
			}
		}
	}
	return total
}

// rssKiB reads VmRSS of a process.
func rssKiB(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	return 0
}

func freePort() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(err)
	defer ln.Close()
	return ln.Addr().String()
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(what string, timeout time.Duration, cond func() bool) {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func waitListening(addr string) {
	waitFor(addr+" to accept connections", 30*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

func fatalf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", a...)
	stopAll()
	os.Exit(1)
}

// prefixWriter forwards a child's standard error, prefixed, so that failures are visible.
type prefixWriter struct{ prefix string }

func newPrefixWriter(name string) io.Writer { return &prefixWriter{"[" + name + "] "} }
func (w *prefixWriter) Write(p []byte) (int, error) {
	for _, l := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		fmt.Fprintln(os.Stderr, w.prefix+l)
	}
	return len(p), nil
}
