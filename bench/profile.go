package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"
)

// runProfile collects, for warren's gateway and connector, a CPU profile and an allocation profile (the
// allocations made during the phase: the difference of two snapshots) while the bulk and the latency loads run.
func runProfile(args []string) {
	fs := flag.NewFlagSet("profile", flag.ExitOnError)
	out := fs.String("out", "out/profiles", "directory for the profiles and their top entries")
	secs := fs.Int("seconds", 10, "length of each profile")
	fs.Parse(args)
	must(os.MkdirAll(*out, 0o755))
	dir, err := os.MkdirTemp("", "warren-bench-")
	must(err)
	defer os.RemoveAll(dir)
	defer stopAll()
	e := prepare(dir)
	backend := startRole("backend", "backend", "-dir", dir)
	must(os.WriteFile(e.path("backend.addr"), []byte(backend.addr), 0o600))
	gw := startRole("gateway", "gateway", "-dir", dir)
	cn := startRole("connector", "connector", "-dir", dir, "-gateway", gw.addr)
	waitFor("the connector", 30*time.Second, func() bool { return gw.count() == 1 })
	t := &target{name: "warren", base: "https://" + gw.addr + "/clusters/bench", header: callerHeader(e)}

	loads := map[string]func(ctx context.Context) int64{
		"bulk": func(ctx context.Context) int64 {
			c := client(e, 1)
			buf := make([]byte, 256<<10)
			var total int64
			for ctx.Err() == nil {
				n, _ := download(c, t, ctx, 1<<30, buf)
				total += n
			}
			return total
		},
		"latency": func(ctx context.Context) int64 {
			c := client(e, 1)
			var n int64
			for ctx.Err() == nil {
				if get(c, t, podPath) == nil {
					n++
				}
			}
			return n
		},
	}
	for _, phase := range []string{"bulk", "latency"} {
		fetch := func(p *proc, path, file string) {
			resp, err := http.Get("http://" + p.ctrl + path)
			must(err)
			defer resp.Body.Close()
			f, err := os.Create(filepath.Join(*out, file))
			must(err)
			io.Copy(f, resp.Body)
			f.Close()
		}
		for _, p := range []*proc{gw, cn} {
			fetch(p, "/debug/pprof/allocs", fmt.Sprintf("%s-%s-allocs-before.pb.gz", p.name, phase))
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(*secs)*time.Second+500*time.Millisecond)
		var done int64
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); done = loads[phase](ctx) }()
		var pw sync.WaitGroup
		for _, p := range []*proc{gw, cn} {
			pw.Add(1)
			go func() {
				defer pw.Done()
				fetch(p, fmt.Sprintf("/debug/pprof/profile?seconds=%d", *secs), fmt.Sprintf("%s-%s-cpu.pb.gz", p.name, phase))
			}()
		}
		pw.Wait()
		for _, p := range []*proc{gw, cn} {
			fetch(p, "/debug/pprof/allocs", fmt.Sprintf("%s-%s-allocs-after.pb.gz", p.name, phase))
		}
		cancel()
		wg.Wait()
		if phase == "bulk" {
			fmt.Printf("%s: %.0f MB/s during the profile\n", phase, float64(done)/float64(*secs)/1e6)
		} else {
			fmt.Printf("%s: %.0f requests/s during the profile\n", phase, float64(done)/float64(*secs))
		}
		for _, p := range []*proc{gw, cn} {
			base := filepath.Join(*out, fmt.Sprintf("%s-%s", p.name, phase))
			top(base+"-cpu.txt", "-top", "-nodecount=25", base+"-cpu.pb.gz")
			top(base+"-allocs.txt", "-top", "-nodecount=25", "-sample_index=alloc_space", "-base", base+"-allocs-before.pb.gz", base+"-allocs-after.pb.gz")
			top(base+"-allocs-count.txt", "-top", "-nodecount=25", "-sample_index=alloc_objects", "-base", base+"-allocs-before.pb.gz", base+"-allocs-after.pb.gz")
		}
	}
	fmt.Printf("profiles and top entries in %s\n", *out)
}

func top(file string, args ...string) {
	out, err := exec.Command("go", append([]string{"tool", "pprof"}, args...)...).CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "pprof %v: %v\n%s", args, err, out)
		return
	}
	must(os.WriteFile(file, out, 0o644))
}
