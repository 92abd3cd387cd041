// goclient: a Go TCP client (net package, CGO_ENABLED=0: raw syscalls) for Slipstream's tests.
//
//	goclient -host 127.0.0.1 -port-file F -mode echo|sink -bytes N -chunk C -workers K -conns M
//
// Sends the same deterministic pattern as tests/programs/c/tcp_client.c (connection c of worker w
// uses seed S + 1000003*w + c), verifies every byte (echo) or the "<count> <fnv1a64>" reply (sink),
// checks RemoteAddr against the destination, and prints the same summary line:
//
//	client: mode=sink connections=T bytes=X errors=0
package main

import (
	"bytes"
	"flag"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

var (
	host     = flag.String("host", "127.0.0.1", "server host")
	port     = flag.Int("port", 0, "server port")
	portFile = flag.String("port-file", "", "read the server port from this file")
	mode     = flag.String("mode", "sink", "echo or sink")
	nbytes   = flag.Int64("bytes", 100000, "bytes per connection")
	chunk    = flag.Int("chunk", 16384, "write size")
	workers  = flag.Int("workers", 1, "concurrent goroutines")
	conns    = flag.Int("conns", 1, "connections per goroutine")
	seed     = flag.Int64("seed", 0, "pattern seed")
)

// patternByte is fx_pattern_byte of tests/programs/c/fixture.h.
func patternByte(seed, i uint64) byte {
	x := (i+1)*0x9E3779B97F4A7C15 ^ (seed+1)*0xC2B2AE3D27D4EB4F
	x ^= x >> 29
	x *= 0xBF58476D1CE4E5B9
	x ^= x >> 32
	return byte(x)
}

func fill(seed, off uint64, buf []byte) {
	for k := range buf {
		buf[k] = patternByte(seed, off+uint64(k))
	}
}

func readPort() int {
	if *portFile == "" {
		return *port
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(*portFile); err == nil {
			if p, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && p > 0 {
				return p
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	fmt.Fprintln(os.Stderr, "goclient: no port in", *portFile)
	os.Exit(1)
	return 0
}

func one(addr string, id int64) error {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if got, want := c.RemoteAddr().String(), addr; got != want {
		return fmt.Errorf("RemoteAddr %s, want %s", got, want)
	}
	s := uint64(*seed + id)
	tc := c.(*net.TCPConn)
	out := make([]byte, *chunk)
	in := make([]byte, *chunk)
	h := fnv.New64a()
	for off := int64(0); off < *nbytes; {
		n := int64(*chunk)
		if *nbytes-off < n {
			n = *nbytes - off
		}
		fill(s, uint64(off), out[:n])
		if _, err := tc.Write(out[:n]); err != nil {
			return err
		}
		if *mode == "echo" {
			if _, err := io.ReadFull(tc, in[:n]); err != nil {
				return err
			}
			if !bytes.Equal(in[:n], out[:n]) {
				return fmt.Errorf("echoed bytes differ at offset %d", off)
			}
		}
		h.Write(out[:n])
		off += n
	}
	if err := tc.CloseWrite(); err != nil {
		return err
	}
	rest, err := io.ReadAll(tc)
	if err != nil {
		return err
	}
	if *mode == "sink" {
		want := fmt.Sprintf("%d %016x\n", *nbytes, h.Sum64())
		if string(rest) != want {
			return fmt.Errorf("reply %q, want %q", rest, want)
		}
	} else if len(rest) != 0 {
		return fmt.Errorf("%d unexpected bytes after half-close", len(rest))
	}
	return nil
}

func main() {
	flag.Parse()
	addr := net.JoinHostPort(*host, strconv.Itoa(readPort()))
	var ok, total, errs int64
	var wg sync.WaitGroup
	for w := 0; w < *workers; w++ {
		wg.Add(1)
		go func(w int64) {
			defer wg.Done()
			for c := int64(0); c < int64(*conns); c++ {
				id := w*1000003 + c
				if err := one(addr, id); err != nil {
					fmt.Fprintf(os.Stderr, "goclient: conn %d: %v\n", id, err)
					atomic.AddInt64(&errs, 1)
					continue
				}
				atomic.AddInt64(&ok, 1)
				atomic.AddInt64(&total, *nbytes)
			}
		}(int64(w))
	}
	wg.Wait()
	fmt.Printf("client: mode=%s connections=%d bytes=%d errors=%d\n", *mode, ok, total, errs)
	if errs != 0 {
		os.Exit(1)
	}
}
