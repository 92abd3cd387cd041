// goserver: a Go TCP server (net package, CGO_ENABLED=0: raw syscalls) for Slipstream's tests.
//
//	goserver -listen 127.0.0.1:0 -port-file F -mode echo|sink -count N [-spin K] [-sigurg]
//
// Same modes and the same summary line as tests/programs/c/tcp_server.c, so outputs compare:
//
//	server: mode=sink connections=N bytes_in=X bytes_out=Y peer_host=127.0.0.1 errors=0
//
// Every connection checks that RemoteAddr (from accept) equals a raw getpeername(2) and that
// LocalAddr names the listening port. -spin starts K busy goroutines so the runtime preempts with
// SIGURG while connections are served; -sigurg counts SIGURG deliveries and reports them on
// stderr ("goserver: SIGURG received N").
package main

import (
	"bufio"
	"flag"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

var (
	listenAddr = flag.String("listen", "127.0.0.1:0", "address to listen on")
	portFile   = flag.String("port-file", "", "write the bound port here")
	mode       = flag.String("mode", "sink", "echo or sink")
	count      = flag.Int("count", 1, "connections to serve before exiting (0: forever)")
	spin       = flag.Int("spin", 0, "busy goroutines that force SIGURG preemption")
	sigurg     = flag.Bool("sigurg", false, "count SIGURG deliveries")
)

type totals struct {
	connections, bytesIn, bytesOut, errors int64
	mu                                     sync.Mutex
	peerHost                               string
	peerDiffers                            bool
}

func (t *totals) fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "goserver: "+format+"\n", args...)
	atomic.AddInt64(&t.errors, 1)
}

func (t *totals) notePeer(host string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.peerHost == "" {
		t.peerHost = host
	} else if t.peerHost != host {
		t.peerDiffers = true
	}
}

func writePortFile(path string, port int) error {
	tmp := fmt.Sprintf("%s.tmp.%d", path, os.Getpid())
	if err := os.WriteFile(tmp, []byte(fmt.Sprintf("%d\n", port)), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// rawPeer returns getpeername(2) of the connection's socket, as an address string.
func rawPeer(c *net.TCPConn) (string, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return "", err
	}
	var sa syscall.Sockaddr
	var serr error
	if err := rc.Control(func(fd uintptr) { sa, serr = syscall.Getpeername(int(fd)) }); err != nil {
		return "", err
	}
	if serr != nil {
		return "", serr
	}
	switch a := sa.(type) {
	case *syscall.SockaddrInet4:
		return (&net.TCPAddr{IP: net.IP(a.Addr[:]), Port: a.Port}).String(), nil
	case *syscall.SockaddrInet6:
		return (&net.TCPAddr{IP: net.IP(a.Addr[:]), Port: a.Port}).String(), nil
	}
	return "", fmt.Errorf("unexpected sockaddr %T", sa)
}

func serve(c *net.TCPConn, port int, t *totals) {
	defer c.Close()
	remote := c.RemoteAddr().(*net.TCPAddr)
	if raw, err := rawPeer(c); err != nil {
		t.fail("getpeername: %v", err)
	} else if raw != remote.String() {
		t.fail("getpeername %s differs from RemoteAddr %s", raw, remote)
	}
	if local := c.LocalAddr().(*net.TCPAddr); local.Port != port {
		t.fail("LocalAddr %s does not name port %d", local, port)
	}
	t.notePeer(remote.IP.String())
	var in, out int64
	switch *mode {
	case "echo":
		n, err := io.Copy(c, c)
		if err != nil {
			t.fail("echo: %v", err)
			return
		}
		in, out = n, n
	case "sink":
		h := fnv.New64a()
		n, err := io.Copy(h, bufio.NewReaderSize(c, 65536))
		if err != nil {
			t.fail("sink: %v", err)
			return
		}
		reply := fmt.Sprintf("%d %016x\n", n, h.Sum64())
		if _, err := io.WriteString(c, reply); err != nil {
			t.fail("reply: %v", err)
			return
		}
		in, out = n, int64(len(reply))
	}
	atomic.AddInt64(&t.bytesIn, in)
	atomic.AddInt64(&t.bytesOut, out)
	atomic.AddInt64(&t.connections, 1)
}

func main() {
	flag.Parse()
	if *mode != "echo" && *mode != "sink" {
		fmt.Fprintln(os.Stderr, "goserver: -mode must be echo or sink")
		os.Exit(2)
	}
	var urgs int64
	if *sigurg {
		ch := make(chan os.Signal, 1024)
		signal.Notify(ch, syscall.SIGURG)
		go func() {
			for range ch {
				atomic.AddInt64(&urgs, 1)
			}
		}()
	}
	stop := make(chan struct{})
	for k := 0; k < *spin; k++ {
		go func() {
			x := uint64(1)
			for {
				for i := 0; i < 1<<20; i++ { // no calls: only async preemption can stop this
					x = x*6364136223846793005 + 1
				}
				select {
				case <-stop:
					return
				default:
				}
			}
		}()
	}
	ln, err := net.Listen("tcp", *listenAddr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "goserver:", err)
		os.Exit(1)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	if *portFile != "" {
		if err := writePortFile(*portFile, port); err != nil {
			fmt.Fprintln(os.Stderr, "goserver:", err)
			os.Exit(1)
		}
	}
	t := &totals{}
	var wg sync.WaitGroup
	for served := 0; *count == 0 || served < *count; served++ {
		c, err := ln.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, "goserver: accept:", err)
			os.Exit(1)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			serve(c.(*net.TCPConn), port, t)
		}()
	}
	ln.Close()
	wg.Wait()
	close(stop)
	if *sigurg {
		time.Sleep(10 * time.Millisecond) // let the counter goroutine drain the channel
		fmt.Fprintf(os.Stderr, "goserver: SIGURG received %d\n", atomic.LoadInt64(&urgs))
	}
	peer := t.peerHost
	if t.peerDiffers {
		peer = "(several)"
	} else if peer == "" {
		peer = "-"
	}
	fmt.Printf("server: mode=%s connections=%d bytes_in=%d bytes_out=%d peer_host=%s errors=%d\n",
		*mode, t.connections, t.bytesIn, t.bytesOut, peer, t.errors)
	if t.errors != 0 {
		os.Exit(3)
	}
}
