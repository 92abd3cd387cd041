// switchpeer: a Go client and server (net package, CGO_ENABLED=0: raw syscalls, non-blocking
// sockets and the netpoller) for Slipstream's switch tests.
//
//	switchpeer server [-family ipv4|ipv6|v4mapped] [-port P] [-port-file F] [-count N]
//	                  [-mode echo|sink|source|rr] [-bytes N] [-seed S] [-hold] [-log]
//	switchpeer client [-host H] (-port P | -port-file F) [-retry SECONDS] [-wait-retry] [-count N]
//	                  [-mode echo|sink|source|rr] [-bytes N] [-chunk C] [-rounds R] [-seed S]
//	                  [-hold] [-log]
//
// It speaks the protocol of tests/programs/c/switch_peer.c (modes, stream, CRC-32, gates, ready,
// conn and summary lines), so Go, C and Python clients and servers pair with each other.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

var (
	family    = flag.String("family", "ipv4", "server: ipv4, ipv6 or v4mapped")
	host      = flag.String("host", "127.0.0.1", "client: server host")
	port      = flag.Int("port", 0, "port")
	portFile  = flag.String("port-file", "", "server: write the port here; client: read it")
	retry     = flag.Int("retry", 0, "client: retry refused connects for this many seconds")
	waitRetry = flag.Bool("wait-retry", false, "client: print refused, wait for a line, retry")
	count     = flag.Int("count", 1, "connections (server: 0 serves forever)")
	mode      = flag.String("mode", "echo", "echo, sink, source or rr")
	nbytes    = flag.Int64("bytes", 65536, "bytes per connection")
	chunk     = flag.Int("chunk", 65536, "client: write size")
	rounds    = flag.Int("rounds", 100, "rr: round trips")
	seed      = flag.Uint64("seed", 0, "stream seed")
	hold      = flag.Bool("hold", false, "print a ready line per connection and wait for a line")
	logConns  = flag.Bool("log", false, "print one line per finished connection")
)

var outMu sync.Mutex

func say(format string, args ...interface{}) {
	outMu.Lock()
	defer outMu.Unlock()
	fmt.Printf(format, args...)
}

// gate waits for one line on stdin, reading byte by byte; EOF counts as a line.
func gate() {
	b := make([]byte, 1)
	for {
		n, err := os.Stdin.Read(b)
		if err != nil || (n == 1 && b[0] == '\n') {
			return
		}
	}
}

func splitmix64(x uint64) uint64 {
	x += 0x9E3779B97F4A7C15
	x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9
	x = (x ^ (x >> 27)) * 0x94D049BB133111EB
	return x ^ (x >> 31)
}

type stream struct{ alphabet [4096]byte }

func newStream(s uint64) *stream {
	st := &stream{}
	for j := uint64(0); j < 4096; j++ {
		st.alphabet[j] = byte(splitmix64(s*4096 + j))
	}
	return st
}

// fill writes bytes [off, off+len(buf)) of the stream into buf.
func (st *stream) fill(off uint64, buf []byte) {
	for k := 0; k < len(buf); {
		pos := off + uint64(k)
		block := pos >> 12
		in := int(pos & 4095)
		n := 4096 - in
		if n > len(buf)-k {
			n = len(buf) - k
		}
		start := int((uint64(in) + block*1031) & 4095)
		x := byte((block >> 12) & 0xff)
		for i := 0; i < n; i++ {
			buf[k+i] = st.alphabet[(start+i)&4095] ^ x
		}
		k += n
	}
}

func streamCrc(s uint64, n int64) uint32 {
	st := newStream(s)
	buf := make([]byte, 65536)
	var crc uint32
	for off := int64(0); off < n; {
		m := int64(len(buf))
		if n-off < m {
			m = n - off
		}
		st.fill(uint64(off), buf[:m])
		crc = crc32.Update(crc, crc32.IEEETable, buf[:m])
		off += m
	}
	return crc
}

// addrText formats like the C fixture: 127.0.0.1:80, [::1]:80, [::ffff:127.0.0.1]:80.
func addrText(sa syscall.Sockaddr) string {
	switch a := sa.(type) {
	case *syscall.SockaddrInet4:
		return fmt.Sprintf("%s:%d", net.IP(a.Addr[:]).String(), a.Port)
	case *syscall.SockaddrInet6:
		ip := net.IP(a.Addr[:])
		text := ip.String()
		if ip.To4() != nil {
			text = "::ffff:" + ip.To4().String()
		}
		return fmt.Sprintf("[%s]:%d", text, a.Port)
	}
	return fmt.Sprintf("%T", sa)
}

// rawNames returns the fd and the raw getsockname/getpeername of a connection.
func rawNames(c *net.TCPConn) (int, string, string) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, "?", "?"
	}
	fd, local, peer := -1, "?", "?"
	rc.Control(func(f uintptr) {
		fd = int(f)
		if sa, err := syscall.Getsockname(fd); err == nil {
			local = addrText(sa)
		} else {
			local = "error-" + err.Error()
		}
		if sa, err := syscall.Getpeername(fd); err == nil {
			peer = addrText(sa)
		} else {
			peer = "error-" + err.Error()
		}
	})
	return fd, local, peer
}

type tally struct {
	out, in       int64
	crcOut, crcIn uint32
}

func clientOne(c *net.TCPConn, s uint64, t *tally) error {
	c.SetDeadline(time.Now().Add(120 * time.Second))
	switch *mode {
	case "echo", "sink":
		st := newStream(s)
		out := make([]byte, *chunk)
		in := make([]byte, *chunk)
		for off := int64(0); off < *nbytes; {
			n := int64(*chunk)
			if *nbytes-off < n {
				n = *nbytes - off
			}
			st.fill(uint64(off), out[:n])
			if _, err := c.Write(out[:n]); err != nil {
				return err
			}
			t.out += n
			t.crcOut = crc32.Update(t.crcOut, crc32.IEEETable, out[:n])
			if *mode == "echo" {
				got, err := io.ReadFull(c, in[:n])
				t.in += int64(got)
				t.crcIn = crc32.Update(t.crcIn, crc32.IEEETable, in[:got])
				if err != nil {
					return err
				}
				if !bytes.Equal(in[:n], out[:n]) {
					return fmt.Errorf("echoed bytes differ at offset %d", off)
				}
			}
			off += n
		}
		if err := c.CloseWrite(); err != nil {
			return err
		}
		rest, err := io.ReadAll(c)
		t.in += int64(len(rest))
		t.crcIn = crc32.Update(t.crcIn, crc32.IEEETable, rest)
		if err != nil {
			return err
		}
		if *mode == "sink" {
			want := fmt.Sprintf("%d %08x\n", t.out, t.crcOut)
			if string(rest) != want {
				return fmt.Errorf("reply %q, want %q", rest, want)
			}
		} else if len(rest) != 0 {
			return fmt.Errorf("%d bytes after half-close", len(rest))
		}
	case "source":
		data, err := io.ReadAll(c)
		t.in = int64(len(data))
		t.crcIn = crc32.ChecksumIEEE(data)
		if err != nil {
			return err
		}
		if t.in != *nbytes || t.crcIn != streamCrc(*seed, *nbytes) {
			return fmt.Errorf("got %d bytes, crc %08x: not the stream", t.in, t.crcIn)
		}
	case "rr":
		got := make([]byte, 16)
		for i := 0; i < *rounds; i++ {
			req := fmt.Sprintf("req %011d\n", i)
			if _, err := io.WriteString(c, req); err != nil {
				return err
			}
			t.out += 16
			t.crcOut = crc32.Update(t.crcOut, crc32.IEEETable, []byte(req))
			if _, err := io.ReadFull(c, got); err != nil {
				return err
			}
			t.in += 16
			t.crcIn = crc32.Update(t.crcIn, crc32.IEEETable, got)
			if string(got) != "rsp "+req[4:] {
				return fmt.Errorf("response %q to %q", got, req)
			}
		}
		if err := c.CloseWrite(); err != nil {
			return err
		}
		if rest, err := io.ReadAll(c); err != nil || len(rest) != 0 {
			return fmt.Errorf("no EOF after half-close (%d bytes, %v)", len(rest), err)
		}
	default:
		return fmt.Errorf("unknown mode %s", *mode)
	}
	return nil
}

func readPort() int {
	if *portFile == "" {
		return *port
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(*portFile); err == nil {
			if p, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && p > 0 {
				return p
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	fmt.Fprintln(os.Stderr, "switchpeer: no port in", *portFile)
	os.Exit(1)
	return 0
}

func dial(addr string) (*net.TCPConn, error) {
	deadline := time.Now().Add(time.Duration(*retry) * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, 30*time.Second)
		if err == nil {
			return c.(*net.TCPConn), nil
		}
		if errors.Is(err, syscall.ECONNREFUSED) && time.Now().Before(deadline) {
			if *waitRetry {
				say("refused pid=%d\n", os.Getpid())
				gate()
			} else {
				time.Sleep(10 * time.Millisecond)
			}
			continue
		}
		return nil, err
	}
}

func runClient() (ok, out, in, errs int64) {
	addr := net.JoinHostPort(*host, strconv.Itoa(readPort()))
	for i := 0; i < *count; i++ {
		c, err := dial(addr)
		if err != nil {
			fmt.Fprintf(os.Stderr, "switchpeer: conn %d: %v\n", i, err)
			errs++
			continue
		}
		fd, local, peer := rawNames(c)
		if *hold {
			say("ready client pid=%d fd=%d local=%s peer=%s\n", os.Getpid(), fd, local, peer)
			gate()
		}
		s := *seed + uint64(i)
		var t tally
		err = clientOne(c, s, &t)
		c.Close()
		out += t.out
		in += t.in
		if err != nil {
			fmt.Fprintf(os.Stderr, "switchpeer: conn %d: %v\n", i, err)
			errs++
		} else {
			ok++
		}
		if *logConns {
			say("conn local=%s peer=%s seed=%d bytes_out=%d crc_out=%08x bytes_in=%d crc_in=%08x\n",
				local, peer, s, t.out, t.crcOut, t.in, t.crcIn)
		}
	}
	return
}

func serveOne(c *net.TCPConn, t *tally) error {
	c.SetDeadline(time.Now().Add(120 * time.Second))
	switch *mode {
	case "source":
		st := newStream(*seed)
		buf := make([]byte, 65536)
		for off := int64(0); off < *nbytes; {
			n := int64(len(buf))
			if *nbytes-off < n {
				n = *nbytes - off
			}
			st.fill(uint64(off), buf[:n])
			if _, err := c.Write(buf[:n]); err != nil {
				return err
			}
			t.out += n
			off += n
		}
		return nil
	case "rr":
		req := make([]byte, 16)
		for {
			n, err := io.ReadFull(c, req)
			t.in += int64(n)
			t.crcIn = crc32.Update(t.crcIn, crc32.IEEETable, req[:n])
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
			if string(req[:4]) != "req " || req[15] != '\n' {
				return fmt.Errorf("bad request %q", req)
			}
			copy(req, "rsp ")
			if _, err := c.Write(req); err != nil {
				return err
			}
			t.out += 16
		}
	}
	buf := make([]byte, 65536)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			t.in += int64(n)
			t.crcIn = crc32.Update(t.crcIn, crc32.IEEETable, buf[:n])
			if *mode == "echo" {
				if _, werr := c.Write(buf[:n]); werr != nil {
					return werr
				}
				t.out += int64(n)
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	if *mode == "sink" {
		reply := fmt.Sprintf("%d %08x\n", t.in, t.crcIn)
		if _, err := io.WriteString(c, reply); err != nil {
			return err
		}
		t.out += int64(len(reply))
	}
	return nil
}

func runServer() (ok, in, out, errs int64) {
	network, listen := "tcp4", "127.0.0.1"
	switch *family {
	case "ipv6":
		network, listen = "tcp6", "::1"
	case "v4mapped":
		network, listen = "tcp", "::" // dual stack: IPV6_V6ONLY off
	}
	ln, err := net.Listen(network, net.JoinHostPort(listen, strconv.Itoa(*port)))
	if err != nil {
		fmt.Fprintln(os.Stderr, "switchpeer:", err)
		os.Exit(1)
	}
	if *portFile != "" {
		p := ln.Addr().(*net.TCPAddr).Port
		tmp := fmt.Sprintf("%s.tmp.%d", *portFile, os.Getpid())
		if err := os.WriteFile(tmp, []byte(fmt.Sprintf("%d\n", p)), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "switchpeer:", err)
			os.Exit(1)
		}
		os.Rename(tmp, *portFile)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for served := 0; *count == 0 || served < *count; served++ {
		conn, err := ln.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, "switchpeer: accept:", err)
			os.Exit(1)
		}
		c := conn.(*net.TCPConn)
		fd, local, peer := rawNames(c)
		if peer != addrText(tcpSockaddr(c.RemoteAddr().(*net.TCPAddr))) {
			fmt.Fprintf(os.Stderr, "switchpeer: getpeername %s, RemoteAddr %s\n", peer, c.RemoteAddr())
			mu.Lock()
			errs++
			mu.Unlock()
		}
		if *hold {
			say("ready server pid=%d fd=%d local=%s peer=%s\n", os.Getpid(), fd, local, peer)
			gate()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var t tally
			err := serveOne(c, &t)
			c.Close()
			mu.Lock()
			defer mu.Unlock()
			in += t.in
			out += t.out
			if err != nil {
				fmt.Fprintf(os.Stderr, "switchpeer: server: %v\n", err)
				errs++
			} else {
				ok++
			}
			if *logConns {
				say("conn local=%s peer=%s bytes_in=%d crc_in=%08x bytes_out=%d\n", local, peer,
					t.in, t.crcIn, t.out)
			}
		}()
	}
	ln.Close()
	wg.Wait()
	return
}

// tcpSockaddr converts RemoteAddr back to a sockaddr of the listener's family for comparison.
func tcpSockaddr(a *net.TCPAddr) syscall.Sockaddr {
	if *family == "ipv4" {
		sa := &syscall.SockaddrInet4{Port: a.Port}
		copy(sa.Addr[:], a.IP.To4())
		return sa
	}
	sa := &syscall.SockaddrInet6{Port: a.Port}
	copy(sa.Addr[:], a.IP.To16())
	return sa
}

func main() {
	if len(os.Args) < 2 || (os.Args[1] != "server" && os.Args[1] != "client") {
		fmt.Fprintln(os.Stderr, "usage: switchpeer server|client [flags]")
		os.Exit(2)
	}
	role := os.Args[1]
	flag.CommandLine.Parse(os.Args[2:])
	var errs int64
	if role == "server" {
		ok, in, out, e := runServer()
		errs = e
		say("server: mode=%s connections=%d bytes_in=%d bytes_out=%d errors=%d\n", *mode, ok, in,
			out, errs)
	} else {
		ok, out, in, e := runClient()
		errs = e
		say("client: mode=%s connections=%d bytes_out=%d bytes_in=%d errors=%d\n", *mode, ok, out,
			in, errs)
	}
	if errs != 0 {
		os.Exit(1)
	}
}
