package tunnel

import (
	"context"
	"io"
	"testing"
)

// The tunnel alone over loopback TLS: the gateway reads what the connector writes (the direction of responses,
// which the connector masks), and small request/response round trips on one stream.
//
//	go test -run '^$' -bench . -benchmem ./tunnel

func BenchmarkThroughputConnectorToGateway(b *testing.B) {
	g, c := pair(b, Config{}, nil)
	done := make(chan error, 1)
	go func() {
		st, err := c.Accept()
		if err != nil {
			done <- err
			return
		}
		defer st.Close()
		buf := make([]byte, 256<<10)
		for {
			if _, err := st.Write(buf); err != nil {
				done <- nil
				return
			}
		}
	}()
	st, err := g.Open(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 256<<10)
	if _, err := io.ReadFull(st, buf); err != nil { // stream established, windows grown
		b.Fatal(err)
	}
	const chunk = 1 << 20
	b.SetBytes(chunk)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		for n := 0; n < chunk; {
			m, err := st.Read(buf[:min(len(buf), chunk-n)])
			if err != nil {
				b.Fatal(err)
			}
			n += m
		}
	}
	b.StopTimer()
	st.Close()
	g.Close()
	<-done
}

func BenchmarkRoundTrip512B(b *testing.B) {
	g, c := pair(b, Config{}, nil)
	go func() {
		st, err := c.Accept()
		if err != nil {
			return
		}
		defer st.Close()
		buf := make([]byte, 512)
		for {
			if _, err := io.ReadFull(st, buf); err != nil {
				return
			}
			if _, err := st.Write(buf); err != nil {
				return
			}
		}
	}()
	st, err := g.Open(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	buf := make([]byte, 512)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := st.Write(buf); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(st, buf); err != nil {
			b.Fatal(err)
		}
	}
}
