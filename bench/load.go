package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

const (
	podPath = "/api/v1/namespaces/x/pods/y"
	logPath = "/api/v1/namespaces/x/pods/y/log"
)

// target is one way to reach the backend: its base URL, the header a caller sends, and the processes (besides the
// client and the backend) that carry the traffic, whose CPU the bulk phase reports.
type target struct {
	name   string
	base   string
	header http.Header
	procs  []*proc
}

func (t *target) request(ctx context.Context, path string) *http.Request {
	req, err := http.NewRequestWithContext(ctx, "GET", t.base+path, nil)
	must(err)
	for k, v := range t.header {
		req.Header[k] = v
	}
	return req
}

// client is an HTTP/1.1 client trusting the bench CA, with at most conns connections.
func client(e env, conns int) *http.Client {
	return &http.Client{Transport: &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: e.roots()},
		MaxIdleConnsPerHost: conns,
		MaxConnsPerHost:     conns,
		DisableCompression:  true,
		ReadBufferSize:      64 << 10,
		WriteBufferSize:     16 << 10,
	}}
}

// download fetches n log bytes and returns how many came.
func download(c *http.Client, t *target, ctx context.Context, n int64, buf []byte) (int64, error) {
	resp, err := c.Do(t.request(ctx, fmt.Sprintf("%s?limitBytes=%d", logPath, n)))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return 0, fmt.Errorf("%s: %s", resp.Status, b)
	}
	var got int64
	for {
		m, err := resp.Body.Read(buf)
		got += int64(m)
		if err == io.EOF {
			return got, nil
		}
		if err != nil {
			return got, err
		}
	}
}

func get(c *http.Client, t *target, path string) error {
	resp, err := c.Do(t.request(context.Background(), path))
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("%s %s", path, resp.Status)
	}
	return nil
}

// bulk: one 1 GiB download; MB/s, and CPU seconds per GiB of each carrying process.
func bulk(e env, t *target, size int64, backend *proc) (mbps float64, cpu map[string]float64) {
	c := client(e, 1)
	defer c.CloseIdleConnections()
	if err := get(c, t, podPath); err != nil { // connect first: the phase measures the transfer
		fatalf("%s: %v", t.name, err)
	}
	procs := append([]*proc{backend}, t.procs...)
	before := make([]float64, len(procs))
	for i, p := range procs {
		before[i] = cpuSeconds(p.pid())
	}
	selfBefore := selfCPU()
	start := time.Now()
	n, err := download(c, t, context.Background(), size, make([]byte, 256<<10))
	if err != nil || n != size {
		fatalf("%s bulk: got %d of %d bytes: %v", t.name, n, size, err)
	}
	el := time.Since(start).Seconds()
	gib := float64(size) / (1 << 30)
	cpu = map[string]float64{"client": (selfCPU() - selfBefore) / gib}
	for i, p := range procs {
		cpu[p.name] = (cpuSeconds(p.pid()) - before[i]) / gib
	}
	return float64(size) / el / 1e6, cpu
}

// latency: sequential small GETs on one kept-alive connection; p50 and p99 in µs.
func latency(e env, t *target, n int) (p50, p99 float64) {
	c := client(e, 1)
	defer c.CloseIdleConnections()
	for range 50 {
		if err := get(c, t, podPath); err != nil {
			fatalf("%s: %v", t.name, err)
		}
	}
	d := make([]float64, n)
	for i := range d {
		s := time.Now()
		if err := get(c, t, podPath); err != nil {
			fatalf("%s: %v", t.name, err)
		}
		d[i] = float64(time.Since(s).Microseconds())
	}
	return pct(d, 50), pct(d, 99)
}

// concurrency: k clients, each on its own kept-alive connection, for dur; requests/s and p99 in µs.
func concurrency(e env, t *target, k int, dur time.Duration) (rps, p99 float64) {
	c := client(e, k)
	defer c.CloseIdleConnections()
	var wg sync.WaitGroup
	for range k { // open the k connections first
		wg.Add(1)
		go func() { defer wg.Done(); get(c, t, podPath) }()
	}
	wg.Wait()
	lat := make([][]float64, k)
	var failed atomic.Int64
	deadline := time.Now().Add(dur)
	start := time.Now()
	for i := range k {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				s := time.Now()
				if err := get(c, t, podPath); err != nil {
					failed.Add(1)
					continue
				}
				lat[i] = append(lat[i], float64(time.Since(s).Microseconds()))
			}
		}()
	}
	wg.Wait()
	el := time.Since(start).Seconds()
	all := slices.Concat(lat...)
	if failed.Load() > 0 {
		fmt.Printf("  %s: %d requests failed at %d clients\n", t.name, failed.Load(), k)
	}
	return float64(len(all)) / el, pct(all, 99)
}

// parallel: k concurrent downloads of size bytes each; total MB/s.
func parallel(e env, t *target, k int, size int64) float64 {
	c := client(e, k)
	defer c.CloseIdleConnections()
	var wg sync.WaitGroup
	var total atomic.Int64
	var firstErr atomic.Value
	start := time.Now()
	for range k {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := download(c, t, context.Background(), size, make([]byte, 64<<10))
			total.Add(n)
			if err != nil {
				firstErr.CompareAndSwap(nil, err)
			}
		}()
	}
	wg.Wait()
	el := time.Since(start).Seconds()
	if err := firstErr.Load(); err != nil {
		fmt.Printf("  %s: parallel download failed: %v\n", t.name, err)
	}
	return float64(total.Load()) / el / 1e6
}

// stream: one download for dur, counting the bytes after the first second (the WAN phase); MB/s.
func stream(e env, t *target, dur time.Duration) float64 {
	c := client(e, 1)
	defer c.CloseIdleConnections()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resp, err := c.Do(t.request(ctx, fmt.Sprintf("%s?limitBytes=%d", logPath, int64(1)<<40)))
	if err != nil {
		fatalf("%s stream: %v", t.name, err)
	}
	defer resp.Body.Close()
	return measureReader(resp.Body, dur)
}

func measureReader(r io.Reader, dur time.Duration) float64 {
	buf := make([]byte, 256<<10)
	start := time.Now()
	warm := start.Add(time.Second)
	end := start.Add(dur)
	var n int64
	for {
		m, err := r.Read(buf)
		now := time.Now()
		if now.After(warm) {
			n += int64(m)
		}
		if err != nil || now.After(end) {
			break
		}
	}
	return float64(n) / time.Since(warm).Seconds() / 1e6
}

func pct(d []float64, p float64) float64 {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(float64(len(s)-1) * p / 100)
	return s[i]
}
