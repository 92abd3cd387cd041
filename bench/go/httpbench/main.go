// ss-http: a Go HTTP/1.1 server and keep-alive load generator for Slipstream's benchmarks.
//
//	ss-http server -listen tcp:127.0.0.1:8080 [-listen unix:/path/to.sock] [-body BYTES]
//	ss-http client -target tcp:127.0.0.1:8080|unix:/path/to.sock [-conns N] [-time SECONDS]
//
// Built with CGO_ENABLED=0 and the standard library only: a static binary that makes raw
// syscalls, the kind of program an LD_PRELOAD library cannot see and slipstream-trace can.
// The client runs N goroutines, each with its own kept-alive connection (MaxConnsPerHost = N),
// issuing GET / back to back for a fixed time, and prints one JSON line:
//
//	{"conns":N,"seconds":T,"requests":R,"per_s":X,"errors":E}
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// splitAddr turns "tcp:HOST:PORT" or "unix:PATH" into a network and address for net.Listen/Dial.
func splitAddr(spec string) (string, string, error) {
	network, addr, ok := strings.Cut(spec, ":")
	if !ok || (network != "tcp" && network != "unix") {
		return "", "", fmt.Errorf("address must be tcp:HOST:PORT or unix:PATH, got %q", spec)
	}
	return network, addr, nil
}

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func server(args []string) error {
	fs := flag.NewFlagSet("server", flag.ExitOnError)
	var listens listFlag
	fs.Var(&listens, "listen", "tcp:HOST:PORT or unix:PATH (repeatable)")
	bodySize := fs.Int("body", 64, "response body size in bytes")
	fs.Parse(args)
	if len(listens) == 0 {
		return fmt.Errorf("server: at least one -listen is required")
	}
	body := []byte(strings.Repeat("s", *bodySize))
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(body)
	})
	errs := make(chan error, len(listens))
	for _, spec := range listens {
		network, addr, err := splitAddr(spec)
		if err != nil {
			return err
		}
		if network == "unix" {
			os.Remove(addr)
		}
		ln, err := net.Listen(network, addr)
		if err != nil {
			return err
		}
		go func() { errs <- http.Serve(ln, handler) }()
	}
	return <-errs
}

func client(args []string) error {
	fs := flag.NewFlagSet("client", flag.ExitOnError)
	target := fs.String("target", "", "tcp:HOST:PORT or unix:PATH")
	conns := fs.Int("conns", 1, "concurrent keep-alive connections")
	seconds := fs.Float64("time", 2, "duration in seconds")
	fs.Parse(args)
	network, addr, err := splitAddr(*target)
	if err != nil {
		return err
	}
	dialer := &net.Dialer{}
	transport := &http.Transport{
		// Every request goes to one address; for unix the URL's host is only a label.
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, network, addr)
		},
		MaxIdleConns:        *conns,
		MaxIdleConnsPerHost: *conns,
		MaxConnsPerHost:     *conns,
		DisableCompression:  true,
	}
	httpClient := &http.Client{Transport: transport}
	url := "http://bench/"
	if network == "tcp" {
		url = "http://" + addr + "/"
	}

	var requests, failures atomic.Int64
	deadline := time.Now().Add(time.Duration(*seconds * float64(time.Second)))
	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < *conns; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				resp, err := httpClient.Get(url)
				if err != nil {
					failures.Add(1)
					time.Sleep(time.Millisecond)
					continue
				}
				// Drain the body so the connection is reused (keep-alive).
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != http.StatusOK {
					failures.Add(1)
					continue
				}
				requests.Add(1)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	out, _ := json.Marshal(map[string]any{
		"conns": *conns, "seconds": elapsed, "requests": requests.Load(),
		"per_s": float64(requests.Load()) / elapsed, "errors": failures.Load(),
	})
	fmt.Println(string(out))
	if failures.Load() > 0 {
		os.Exit(3)
	}
	return nil
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: ss-http server|client [flags] (-h for flags)")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "server":
		err = server(os.Args[2:])
	case "client":
		err = client(os.Args[2:])
	default:
		fmt.Fprintln(os.Stderr, "usage: ss-http server|client [flags]")
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "ss-http:", err)
		os.Exit(1)
	}
}
