package gateway

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warren-dev/warren/internal/testenv/wait"
)

// slowlorisChild, set in the environment, makes the test binary the attacker of TestLongSlowConnections: ADDR,N.
const slowlorisChild = "WARREN_TEST_SLOWLORIS"

// TestLongSlowConnections (make test-long) points 19,000 slow unauthenticated connections at a gateway behind its
// front door (the defaults: 4096 per listener, 256 per address, 10 s for headers, 2 s after a refusal), from 80
// loopback addresses, each sending a request that declares a body and never sends it. It reports the gateway's
// goroutines and memory while they come and after, and checks that /healthz and a caller from another address are
// still answered. (Figures: the test's log; 19,000 because the process has 20,000 descriptors.)
func TestLongSlowConnections(t *testing.T) {
	if os.Getenv("WARREN_E2E_LONG") == "" {
		t.Skip("long: make test-long (WARREN_E2E_LONG=1)")
	}
	k := newTestKeys(t)
	g := newTestGateway(t, k, nil)
	s, dl := doorServer(t, g, false)
	const conns = 19000
	before := snapshot()
	child := exec.Command(os.Args[0], "-test.run=^TestSlowlorisChild$")
	child.Env = append(os.Environ(), fmt.Sprintf("%s=%s,%d", slowlorisChild, s.Listener.Addr(), conns))
	out, _ := child.StdoutPipe()
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer child.Process.Kill()
	lines := bufio.NewScanner(out)
	var peak snap
	var peakUnauth int
	sampling := make(chan struct{})
	go func() {
		defer close(sampling)
		for lines.Scan() {
			t.Logf("attacker: %s", lines.Text())
			if strings.HasPrefix(lines.Text(), "done") {
				return
			}
		}
	}()
	probe := &http.Client{Timeout: 5 * time.Second}
	var probes, probeFails int
	var worst time.Duration
	for done := false; !done; {
		select {
		case <-sampling:
			done = true
		case <-time.After(200 * time.Millisecond):
		}
		if sn := snapshot(); sn.goroutines > peak.goroutines {
			peak = sn
		}
		if n, _ := dl.counts(); n > peakUnauth {
			peakUnauth = n
		}
		start := time.Now()
		resp, err := probe.Get(s.URL + "/healthz") // from 127.0.0.1, which the attacker does not use
		probes++
		if err != nil || resp.StatusCode != 200 {
			probeFails++
		} else {
			resp.Body.Close()
		}
		worst = max(worst, time.Since(start))
	}
	child.Wait()
	wait.Until(t, 10*time.Second, "every slow connection closed", func() bool { n, _ := dl.counts(); return n == 0 })
	runtime.GC()
	after := snapshot()
	t.Logf("before: %s", before)
	t.Logf("peak while attacked: %s, %d unauthenticated connections open", peak, peakUnauth)
	t.Logf("after: %s", after)
	t.Logf("/healthz from another address: %d probes, %d failed, slowest %v", probes, probeFails, worst.Round(time.Millisecond))
	if probeFails > 0 {
		t.Errorf("%d of %d probes failed while attacked", probeFails, probes)
	}
	if peakUnauth > DefaultConfig().FrontDoor.MaxUnauthenticated+1 { // +1: the new one, while the oldest closes
		t.Errorf("%d unauthenticated connections held, over the cap", peakUnauth)
	}
}

type snap struct {
	goroutines int
	heapMiB    float64
	sysMiB     float64
}

func (s snap) String() string {
	return fmt.Sprintf("%d goroutines, heap in use %.1f MiB, runtime total %.1f MiB", s.goroutines, s.heapMiB, s.sysMiB)
}

func snapshot() snap {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return snap{runtime.NumGoroutine(), float64(m.HeapInuse) / (1 << 20), float64(m.Sys) / (1 << 20)}
}

// TestSlowlorisChild is the attacker of TestLongSlowConnections, run in a process of its own.
func TestSlowlorisChild(t *testing.T) {
	spec := os.Getenv(slowlorisChild)
	if spec == "" {
		t.Skip("the attacker of TestLongSlowConnections")
	}
	addr, n, _ := strings.Cut(spec, ",")
	total, _ := strconv.Atoi(n)
	var opened, refused, answered, closedByServer atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	sem := make(chan struct{}, 512) // dials in flight
	for i := range total {
		sem <- struct{}{}
		wg.Go(func() {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 1, byte(i%80+1))}, Timeout: 10 * time.Second}
			c, err := d.Dial("tcp", addr)
			<-sem
			if err != nil {
				refused.Add(1)
				return
			}
			defer c.Close()
			opened.Add(1)
			io.WriteString(c, "POST /clusters/prod/api/v1/namespaces/x/configmaps HTTP/1.1\r\nHost: gw\r\nContent-Length: 100\r\n\r\n")
			c.SetReadDeadline(time.Now().Add(2 * time.Minute))
			b, _ := io.ReadAll(c) // the attacker never sends the body, and holds on until the server lets go
			if len(b) > 0 {
				answered.Add(1)
			}
			closedByServer.Add(1)
		})
	}
	fmt.Printf("opened %d of %d connections in %v\n", opened.Load(), total, time.Since(start).Round(time.Millisecond))
	wg.Wait()
	res, _ := json.Marshal(map[string]any{"opened": opened.Load(), "dialFailed": refused.Load(), "answered": answered.Load(),
		"closedByServer": closedByServer.Load(), "seconds": time.Since(start).Seconds()})
	fmt.Printf("done %s\n", res)
}
