package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2/client"
)

type options struct {
	repeats     int
	bulkSize    int64
	latN        int
	concK       int
	concDur     time.Duration
	parK        int
	parSize     int64
	idleN       int
	idleRepeats int
	stormN      int
	wanDur      time.Duration
	wanRTT      time.Duration
	phases      string
	targets     string
	out         string
	toxiproxy   string
}

// results: figure -> target -> metric -> one value per repeat.
type results map[string]map[string]map[string][]float64

func (r results) add(fig, tgt, metric string, v float64) {
	if r[fig] == nil {
		r[fig] = map[string]map[string][]float64{}
	}
	if r[fig][tgt] == nil {
		r[fig][tgt] = map[string][]float64{}
	}
	r[fig][tgt][metric] = append(r[fig][tgt][metric], v)
}

func runDriver(args []string) {
	var o options
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	fs.IntVar(&o.repeats, "repeats", 3, "repeats of every figure (the table shows median [min-max])")
	fs.Int64Var(&o.bulkSize, "bulk", 1<<30, "bytes of the bulk download")
	fs.IntVar(&o.latN, "latency-n", 2000, "sequential requests of the latency phase")
	fs.IntVar(&o.concK, "clients", 64, "clients of the concurrency phase")
	fs.DurationVar(&o.concDur, "concurrency-for", 10*time.Second, "duration of the concurrency phase")
	fs.IntVar(&o.parK, "parallel", 256, "concurrent downloads of the parallel phase")
	fs.Int64Var(&o.parSize, "parallel-size", 4<<20, "bytes of each parallel download")
	fs.IntVar(&o.idleN, "idle", 10000, "connectors of the idle-cost phase")
	fs.IntVar(&o.idleRepeats, "idle-repeats", 1, "repeats of the idle-cost phase")
	fs.IntVar(&o.stormN, "storm", 2000, "connectors of the reconnect-storm phase")
	fs.DurationVar(&o.wanDur, "wan-for", 8*time.Second, "duration of each WAN measurement")
	fs.DurationVar(&o.wanRTT, "wan-rtt", 50*time.Millisecond, "round trip of the WAN link")
	fs.StringVar(&o.phases, "phases", "bulk,latency,concurrency,parallel,idle,wan,storm", "phases to run")
	fs.StringVar(&o.targets, "targets", "direct,revproxy,ssh,ssh-aes128gcm,remotedialer,warren", "paths of the bulk, latency, concurrency and parallel phases")
	fs.StringVar(&o.out, "out", "out", "directory for results.json and results.md")
	fs.StringVar(&o.toxiproxy, "toxiproxy", "bin/toxiproxy-server", "toxiproxy server binary (WAN phase)")
	fs.Parse(args)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() { <-sig; fatalf("interrupted") }()
	// Every request loop below is bounded; this bounds the whole run should a peer hang.
	time.AfterFunc(40*time.Minute, func() { fatalf("the run took more than 40 minutes; stopping") })

	dir, err := os.MkdirTemp("", "warren-bench-")
	must(err)
	defer os.RemoveAll(dir)
	defer stopAll()
	e := prepare(dir)
	must(os.MkdirAll(o.out, 0o755))
	has := func(p string) bool { return slices.Contains(strings.Split(o.phases, ","), p) }
	res := results{}
	start := time.Now()
	fmt.Printf("warren bench: %d repeats, %s, Go %s, %d CPUs\n", o.repeats, machine(), runtime.Version(), runtime.NumCPU())

	backend := startRole("backend", "backend", "-dir", dir)
	must(os.WriteFile(e.path("backend.addr"), []byte(backend.addr), 0o600))
	if has("bulk") || has("latency") || has("concurrency") || has("parallel") {
		targets := startTargets(e, backend, strings.Split(o.targets, ","))
		for r := range o.repeats {
			fmt.Printf("repeat %d/%d (%s)\n", r+1, o.repeats, time.Since(start).Round(time.Second))
			for _, t := range targets {
				if has("bulk") {
					mbps, cpu := bulk(e, t, o.bulkSize, backend)
					res.add("bulk", t.name, "MB/s", mbps)
					tunnelCPU := 0.0
					for p, v := range cpu {
						res.add("bulk", t.name, "cpu s/GiB "+p, v)
						if p != "client" && p != "backend" {
							tunnelCPU += v
						}
					}
					res.add("bulk", t.name, "cpu s/GiB tunnel", tunnelCPU)
					fmt.Printf("  %-14s bulk %7.0f MB/s, tunnel CPU %.2f s/GiB %v\n", t.name, mbps, tunnelCPU, round(cpu))
				}
			}
			for _, t := range targets {
				if has("latency") {
					p50, p99 := latency(e, t, o.latN)
					res.add("latency", t.name, "p50 µs", p50)
					res.add("latency", t.name, "p99 µs", p99)
					fmt.Printf("  %-14s latency p50 %.0f µs p99 %.0f µs\n", t.name, p50, p99)
				}
			}
			for _, t := range targets {
				if has("concurrency") {
					rps, p99 := concurrency(e, t, o.concK, o.concDur)
					res.add("concurrency", t.name, "req/s", rps)
					res.add("concurrency", t.name, "p99 µs", p99)
					fmt.Printf("  %-14s %d clients %.0f req/s p99 %.0f µs\n", t.name, o.concK, rps, p99)
				}
			}
			for _, t := range targets {
				if has("parallel") {
					mbps := parallel(e, t, o.parK, o.parSize)
					res.add("parallel", t.name, "MB/s", mbps)
					fmt.Printf("  %-14s %d parallel downloads %.0f MB/s\n", t.name, o.parK, mbps)
				}
			}
		}
		for _, t := range targets {
			for _, p := range t.procs {
				if p.name != "sshd" {
					p.stop()
				}
			}
		}
	}
	if has("idle") {
		for r := range min(o.idleRepeats, o.repeats) {
			fmt.Printf("idle cost %d/%d (%s)\n", r+1, o.idleRepeats, time.Since(start).Round(time.Second))
			idle(e, o, res)
		}
	}
	if has("wan") {
		fmt.Printf("WAN (%s)\n", time.Since(start).Round(time.Second))
		wan(e, o, backend, res)
	}
	if has("storm") {
		fmt.Printf("reconnect storm (%s)\n", time.Since(start).Round(time.Second))
		storm(e, o, res)
	}
	stopAll()
	report(o, res, time.Since(start))
}

// sshd is shared by the ssh targets and the WAN phase.
var sshd *sshSetup

func startTargets(e env, backend *proc, want []string) []*target {
	var out []*target
	if slices.Contains(want, "direct") {
		out = append(out, &target{name: "direct", base: "https://" + backend.addr})
	}
	if slices.Contains(want, "revproxy") {
		rp := startRole("revproxy", "revproxy", "-dir", e.dir, "-backend", backend.addr)
		out = append(out, &target{name: "revproxy", base: "https://" + rp.addr, procs: []*proc{rp}})
	}
	if slices.Contains(want, "ssh") || slices.Contains(want, "ssh-aes128gcm") {
		sshd = startSSHD(e)
	}
	if slices.Contains(want, "ssh") {
		sshc, addr := sshd.tunnel("ssh", "", backend.addr, "")
		out = append(out, &target{name: "ssh", base: "https://" + addr, procs: []*proc{sshd.sshd, sshc}})
	}
	if slices.Contains(want, "ssh-aes128gcm") {
		sshg, addr := sshd.tunnel("ssh-aes", "aes128-gcm@openssh.com", backend.addr, "")
		out = append(out, &target{name: "ssh-aes128gcm", base: "https://" + addr, procs: []*proc{sshd.sshd, sshg}})
	}
	if slices.Contains(want, "remotedialer") {
		rds := startRole("rd-server", "rdserver", "-dir", e.dir, "-backend", backend.addr)
		rdc := startRole("rd-client", "rdclient", "-dir", e.dir, "-server", rds.addr)
		waitFor("the remotedialer agent", 30*time.Second, func() bool { return rds.count() == 1 })
		out = append(out, &target{name: "remotedialer", base: "https://" + rds.addr, procs: []*proc{rds, rdc}})
	}
	if slices.Contains(want, "warren") {
		gw := startRole("gateway", "gateway", "-dir", e.dir)
		cn := startRole("connector", "connector", "-dir", e.dir, "-gateway", gw.addr)
		waitFor("the warren connector", 30*time.Second, func() bool { return gw.count() == 1 })
		out = append(out, &target{name: "warren", base: "https://" + gw.addr + "/clusters/bench", header: callerHeader(e), procs: []*proc{gw, cn}})
	}
	return out
}

// idle: many tunnels held by one gateway; the gateway's RSS per tunnel, and one real idle connector process: its
// RSS and the bytes it exchanges with the gateway per minute (through a counting TCP relay).
func idle(e env, o options, res results) {
	gw := startRole("gateway-idle", "gateway", "-dir", e.dir)
	defer gw.stop()
	relay, counted := countingRelay(gw.addr)
	defer relay.Close()
	one := startRole("connector-idle", "connector", "-dir", e.dir, "-gateway", relay.Addr().String())
	defer one.stop()
	waitFor("the idle connector", 30*time.Second, func() bool { return gw.count() == 1 })
	time.Sleep(2 * time.Second)
	gw.get("/gc")
	rss0 := rssKiB(gw.pid())
	t0, bytes0 := time.Now(), counted.Load()

	many := startRole("idle-connectors", "idle", "-dir", e.dir, "-gateway", gw.addr, "-n", strconv.Itoa(o.idleN))
	defer many.stop()
	s := time.Now()
	waitFor(fmt.Sprintf("%d idle tunnels", o.idleN), 5*time.Minute, func() bool { return gw.count() == o.idleN+1 })
	fmt.Printf("  %d tunnels up in %.1f s\n", o.idleN, time.Since(s).Seconds())
	time.Sleep(5 * time.Second)
	gw.get("/gc")
	time.Sleep(time.Second)
	gw.get("/gc")
	rss1 := rssKiB(gw.pid())
	perConn := float64(rss1-rss0) / float64(o.idleN)
	for _, prof := range []string{"heap", "goroutine"} {
		if b := gw.get("/debug/pprof/" + prof); b != "" {
			os.WriteFile(filepath.Join(o.out, "idle-gateway-"+prof+".pb.gz"), []byte(b), 0o644)
		}
	}
	res.add("idle", "warren", "gateway KiB per connector", perConn)
	fmt.Printf("  gateway RSS %d -> %d KiB: %.1f KiB per idle connector\n", rss0, rss1, perConn)
	many.stop()

	if wait := time.Minute - time.Since(t0); wait > 0 {
		time.Sleep(wait)
	}
	perMin := float64(counted.Load()-bytes0) / time.Since(t0).Minutes()
	rss := rssKiB(one.pid())
	res.add("idle", "warren", "idle connector bytes/min", perMin)
	res.add("idle", "warren", "connector process RSS MiB", float64(rss)/1024)
	fmt.Printf("  one idle connector: %.0f bytes/min on the wire (both ways, TLS included), RSS %.1f MiB\n", perMin, float64(rss)/1024)
}

// countingRelay forwards TCP to target and counts the bytes both ways.
func countingRelay(target string) (net.Listener, *atomic.Int64) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(err)
	var n atomic.Int64
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			pipe := func(dst, src net.Conn) {
				buf := make([]byte, 32<<10)
				for {
					m, err := src.Read(buf)
					n.Add(int64(m))
					if m > 0 {
						if _, werr := dst.Write(buf[:m]); werr != nil {
							break
						}
					}
					if err != nil {
						break
					}
				}
				dst.Close()
				src.Close()
			}
			go pipe(out, in)
			go pipe(in, out)
		}
	}()
	return ln, &n
}

// wan: the tunnel leg (connector to gateway, ssh client to sshd, agent to remotedialer server) through a Toxiproxy
// link with a latency toxic each way; one stream's throughput against the same link carrying raw TCP.
func wan(e env, o options, backend *proc, res results) {
	tpAddr := freePort()
	host, port, _ := net.SplitHostPort(tpAddr)
	tp := startCmd("toxiproxy", false, o.toxiproxy, "-host", host, "-port", port)
	defer tp.stop()
	waitListening(tpAddr)
	cl := toxiproxy.NewClient(tpAddr)
	link := func(name, upstream string) string {
		listen := freePort()
		p, err := cl.CreateProxy(name, listen, upstream)
		must(err)
		half := int(o.wanRTT / 2 / time.Millisecond)
		for _, dir := range []string{"upstream", "downstream"} {
			_, err := p.AddToxic("latency_"+dir, "latency", dir, 1, toxiproxy.Attributes{"latency": half})
			must(err)
		}
		return listen
	}
	src := startRole("tcpsource", "tcpsource")
	defer src.stop()
	rawLink := link("raw", src.addr)

	gw := startRole("gateway-wan", "gateway", "-dir", e.dir)
	defer gw.stop()
	cn := startRole("connector-wan", "connector", "-dir", e.dir, "-gateway", link("warren", gw.addr))
	defer cn.stop()
	waitFor("the WAN connector", 30*time.Second, func() bool { return gw.count() == 1 })

	if sshd == nil {
		sshd = startSSHD(e)
	}
	sshc, sshAddr := sshd.tunnel("ssh-wan", "", backend.addr, link("ssh", "127.0.0.1:"+sshd.port))
	defer sshc.stop()

	rds := startRole("rd-server-wan", "rdserver", "-dir", e.dir, "-backend", backend.addr)
	defer rds.stop()
	rdc := startRole("rd-client-wan", "rdclient", "-dir", e.dir, "-server", link("rd", rds.addr))
	defer rdc.stop()
	waitFor("the WAN remotedialer agent", 30*time.Second, func() bool { return rds.count() == 1 })

	targets := []*target{
		{name: "warren", base: "https://" + gw.addr + "/clusters/bench", header: callerHeader(e)},
		{name: "ssh", base: "https://" + sshAddr},
		{name: "remotedialer", base: "https://" + rds.addr},
	}
	for r := range o.repeats {
		c, err := net.Dial("tcp", rawLink)
		must(err)
		limit := measureReader(c, o.wanDur)
		c.Close()
		res.add("wan", "link (raw TCP)", "MB/s", limit)
		fmt.Printf("  %d: link %.1f MB/s", r+1, limit)
		for _, t := range targets {
			v := stream(e, t, o.wanDur)
			res.add("wan", t.name, "MB/s", v)
			res.add("wan", t.name, "% of link", 100*v/limit)
			fmt.Printf(", %s %.1f MB/s", t.name, v)
		}
		fmt.Println()
	}
}

// storm: stormN real connectors in one process; the gateway is killed and started again on the same port; how
// long until all are back, and the peak rate of accepted handshakes.
func storm(e env, o options, res results) {
	addr := freePort()
	gw := startRole("gateway-storm", "gateway", "-dir", e.dir, "-listen", addr)
	conns := startRole("storm-connectors", "storm", "-dir", e.dir, "-gateway", addr, "-n", strconv.Itoa(o.stormN))
	defer conns.stop()
	waitFor(fmt.Sprintf("%d connectors", o.stormN), 3*time.Minute, func() bool { return gw.count() == o.stormN })
	allUp := time.Now()
	for r := range o.repeats {
		// The connectors' backoff starts again from 1 s only after a tunnel lived 30 s: wait for that, as a
		// gateway restart in production finds long-lived tunnels.
		if wait := 31*time.Second - time.Since(allUp); wait > 0 {
			time.Sleep(wait)
		}
		gw.stop()
		t0 := time.Now()
		gw = startRole("gateway-storm", "gateway", "-dir", e.dir, "-listen", addr)
		type sample struct {
			at time.Duration
			n  int
		}
		var samples []sample
		deadline := t0.Add(2 * time.Minute)
		for {
			n := gw.count()
			samples = append(samples, sample{time.Since(t0), n})
			if n == o.stormN || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		allUp = time.Now()
		back := time.Since(t0).Seconds()
		peak := 0
		for i := range samples {
			for j := i; j < len(samples) && samples[j].at-samples[i].at <= time.Second; j++ {
				peak = max(peak, samples[j].n-samples[i].n)
			}
		}
		var st struct{ Arrived, Refused map[string]int }
		json.Unmarshal([]byte(gw.get("/stats")), &st)
		refused, peakArrivals := 0, 0
		for _, v := range st.Refused {
			refused += v
		}
		for _, v := range st.Arrived {
			peakArrivals = max(peakArrivals, v)
		}
		if samples[len(samples)-1].n != o.stormN {
			fmt.Printf("  %d: only %d of %d back after 2 min\n", r+1, samples[len(samples)-1].n, o.stormN)
			back = -1
		}
		res.add("storm", "warren", "seconds until all back", back)
		res.add("storm", "warren", "peak handshakes/s", float64(peak))
		res.add("storm", "warren", "peak attempts/s", float64(peakArrivals))
		res.add("storm", "warren", "refused (503)", float64(refused))
		fmt.Printf("  %d: %d connectors back in %.1f s, peak %d handshakes/s (%d attempts/s), %d refused with 503\n",
			r+1, o.stormN, back, peak, peakArrivals, refused)
	}
	gw.stop()
}

func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return fmt.Sprintf("%s, %d cores, Linux %s", model, runtime.NumCPU(), strings.TrimSpace(string(kernel)))
}

func round(m map[string]float64) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		out[k] = strconv.FormatFloat(v, 'f', 2, 64)
	}
	return out
}

type summary struct {
	Median, Min, Max float64
	Runs             []float64
}

func summarize(v []float64) summary {
	s := slices.Clone(v)
	slices.Sort(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return summary{med, s[0], s[len(s)-1], v}
}

func cell(r results, fig, tgt, metric string, prec int) string {
	v := r[fig][tgt][metric]
	if len(v) == 0 {
		return "–"
	}
	s := summarize(v)
	f := func(x float64) string { return strconv.FormatFloat(x, 'f', prec, 64) }
	if len(v) == 1 {
		return f(s.Median)
	}
	return fmt.Sprintf("%s [%s–%s]", f(s.Median), f(s.Min), f(s.Max))
}

func report(o options, r results, took time.Duration) {
	var b strings.Builder
	fmt.Fprintf(&b, "Median [min–max] of %d repeats; %s; Go %s; run took %s.\n\n", o.repeats, machine(), runtime.Version(), took.Round(time.Second))
	if r["bulk"] != nil || r["latency"] != nil || r["concurrency"] != nil || r["parallel"] != nil {
		mainTable(&b, o, r)
	}
	if r["wan"] != nil {
		fmt.Fprintf(&b, "\nWAN: the tunnel leg through Toxiproxy with %v round trip (latency toxic each way); one stream, MB/s. "+
			"Limit: the smaller of the link carrying raw TCP and the same path's own bulk rate above (no delay): what "+
			"the path could do were its window at least bandwidth × delay.\n\n", o.wanRTT)
		b.WriteString("| path | MB/s | % of raw link | % of limit |\n|---|---|---|---|\n")
		raw := median(r["wan"]["link (raw TCP)"]["MB/s"])
		for _, t := range []string{"link (raw TCP)", "ssh", "remotedialer", "warren"} {
			lim := "–"
			if t != "link (raw TCP)" {
				l := raw
				if bulk := median(r["bulk"][t]["MB/s"]); bulk > 0 && bulk < l {
					l = bulk
				}
				if v := median(r["wan"][t]["MB/s"]); v > 0 && l > 0 {
					lim = fmt.Sprintf("%.0f %% of %.0f", 100*v/l, l)
					r.add("wan", t, "% of limit", 100*v/l)
				}
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", t, cell(r, "wan", t, "MB/s", 1), cell(r, "wan", t, "% of link", 0), lim)
		}
	}
	if r["idle"] != nil {
		fmt.Fprintf(&b, "\nIdle: %d warren connectors (tunnel.Dial, one process) held by one gateway process.\n\n", o.idleN)
		b.WriteString("| gateway KiB per idle connector | idle connector process RSS MiB | idle connector bytes/min (both ways, on the wire) |\n|---|---|---|\n")
		fmt.Fprintf(&b, "| %s | %s | %s |\n", cell(r, "idle", "warren", "gateway KiB per connector", 1),
			cell(r, "idle", "warren", "connector process RSS MiB", 1), cell(r, "idle", "warren", "idle connector bytes/min", 0))
	}
	if r["storm"] != nil {
		fmt.Fprintf(&b, "\nReconnect storm: %d connectors (connector.Run, one process), gateway killed and restarted.\n\n", o.stormN)
		b.WriteString("| seconds until all back | peak handshakes/s | peak attempts/s | refused with 503 |\n|---|---|---|---|\n")
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", cell(r, "storm", "warren", "seconds until all back", 1),
			cell(r, "storm", "warren", "peak handshakes/s", 0), cell(r, "storm", "warren", "peak attempts/s", 0),
			cell(r, "storm", "warren", "refused (503)", 0))
	}
	fmt.Println()
	fmt.Print(b.String())
	must(os.WriteFile(filepath.Join(o.out, "results.md"), []byte(b.String()), 0o644))
	js := map[string]any{"machine": machine(), "go": runtime.Version(), "repeats": o.repeats, "took_s": took.Seconds(),
		"options": map[string]any{"bulk": o.bulkSize, "latency_n": o.latN, "clients": o.concK, "concurrency_s": o.concDur.Seconds(),
			"parallel": o.parK, "parallel_size": o.parSize, "idle": o.idleN, "storm": o.stormN, "wan_rtt_ms": o.wanRTT.Milliseconds()},
		"figures": summarizeAll(r)}
	f, err := os.Create(filepath.Join(o.out, "results.json"))
	must(err)
	enc := json.NewEncoder(f)
	enc.SetIndent("", "  ")
	must(enc.Encode(js))
	f.Close()
	fmt.Printf("\nwrote %s and %s\n", filepath.Join(o.out, "results.md"), filepath.Join(o.out, "results.json"))
	_ = io.Discard
}

func mainTable(b *strings.Builder, o options, r results) {
	fmt.Fprintf(b, "| path | bulk 1 GiB MB/s | tunnel CPU s/GiB | latency p50 µs | p99 µs | %d clients req/s | p99 µs | %d × %d MiB MB/s |\n",
		o.concK, o.parK, o.parSize>>20)
	b.WriteString("|---|---|---|---|---|---|---|---|\n")
	for _, t := range []string{"direct", "revproxy", "ssh", "ssh-aes128gcm", "remotedialer", "warren"} {
		if r["bulk"][t] == nil && r["latency"][t] == nil && r["concurrency"][t] == nil && r["parallel"][t] == nil {
			continue
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s | %s | %s |\n", t,
			cell(r, "bulk", t, "MB/s", 0), cell(r, "bulk", t, "cpu s/GiB tunnel", 2),
			cell(r, "latency", t, "p50 µs", 0), cell(r, "latency", t, "p99 µs", 0),
			cell(r, "concurrency", t, "req/s", 0), cell(r, "concurrency", t, "p99 µs", 0),
			cell(r, "parallel", t, "MB/s", 0))
	}
	if r["bulk"] != nil {
		b.WriteString("\nTunnel CPU is the CPU time of the processes between client and backend per GiB of the bulk download " +
			"(revproxy: the proxy; ssh: sshd and its session processes + the ssh client; remotedialer: server + agent; " +
			"warren: gateway + connector). ssh is OpenSSH's default cipher (chacha20-poly1305).\n")
	}
}

func summarizeAll(r results) map[string]map[string]map[string]summary {
	out := map[string]map[string]map[string]summary{}
	for fig, ts := range r {
		out[fig] = map[string]map[string]summary{}
		for t, ms := range ts {
			out[fig][t] = map[string]summary{}
			for m, v := range ms {
				out[fig][t][m] = summarize(v)
			}
		}
	}
	return out
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	return summarize(v).Median
}
