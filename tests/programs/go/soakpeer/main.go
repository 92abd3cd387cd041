// soakpeer: the Go server of the chaos soak (tests/soak/soak.py), built with CGO_ENABLED=0 so
// every socket call is a raw syscall that only the supervisor path can see.
//
//	soakpeer -name NAME -port-file PATH [-port P]
//
// Protocol, replies and "stall" lines as tests/programs/c/soak_peer.c (see soak_proto.h there).
package main

import (
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

const (
	period     = 4093
	replySalt  = 0x5a5a5a5a5a5a5a5a
	reqHeader  = 32
	stallAfter = 60 * time.Second
)

var (
	name     = flag.String("name", "", "server name carried in every reply")
	portFile = flag.String("port-file", "", "write the bound port here")
	port     = flag.Int("port", 0, "port to listen on (0: any)")
	outMu    sync.Mutex
)

// patternBlock is fx_pattern_byte(seed, i) for i < period (tests/programs/c/fixture.h).
func patternBlock(seed uint64) []byte {
	b := make([]byte, period)
	for i := range b {
		x := (uint64(i)+1)*0x9E3779B97F4A7C15 ^ (seed+1)*0xC2B2AE3D27D4EB4F
		x ^= x >> 29
		x *= 0xBF58476D1CE4E5B9
		x ^= x >> 32
		b[i] = byte(x)
	}
	return b
}

func fill(block []byte, off uint64, buf []byte) {
	for k := range buf {
		i := off + uint64(k)
		buf[k] = block[i%period] ^ byte(i/period)
	}
}

func matches(block []byte, off uint64, buf []byte) bool {
	for k := range buf {
		i := off + uint64(k)
		if buf[k] != block[i%period]^byte(i/period) {
			return false
		}
	}
	return true
}

// domain reads what the accepted fd really is (1 AF_UNIX, 2 TCP) from the socket's xattr, which
// the supervisor does not trap.
func domain(c *net.TCPConn) uint32 {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0
	}
	var d uint32
	attr := []byte("system.sockprotoname\x00")
	raw.Control(func(fd uintptr) {
		buf := make([]byte, 32)
		n, _, e := syscall.Syscall6(syscall.SYS_FGETXATTR, fd,
			uintptr(unsafe.Pointer(&attr[0])), uintptr(unsafe.Pointer(&buf[0])), 32, 0, 0)
		if e != 0 {
			return
		}
		s := string(buf[:n])
		if len(s) >= 4 && s[:4] == "UNIX" {
			d = 1
		} else if len(s) >= 3 && s[:3] == "TCP" {
			d = 2
		}
	})
	return d
}

func say(format string, args ...interface{}) {
	outMu.Lock()
	defer outMu.Unlock()
	fmt.Printf(format+"\n", args...)
}

func serve(c *net.TCPConn) {
	defer c.Close()
	dom := domain(c)
	c.SetDeadline(time.Now().Add(stallAfter))
	var nonce uint64
	err := exchange(c, dom, &nonce)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		say("stall nonce=%016x server=%s", nonce, *name)
	}
}

func exchange(c *net.TCPConn, dom uint32, nonce *uint64) error {
	h := make([]byte, reqHeader)
	if _, err := io.ReadFull(c, h); err != nil {
		return err
	}
	if string(h[:4]) != "SSKQ" {
		return nil
	}
	pause := binary.LittleEndian.Uint32(h[4:])
	*nonce = binary.LittleEndian.Uint64(h[8:])
	reqLen := binary.LittleEndian.Uint64(h[16:])
	replyLen := binary.LittleEndian.Uint64(h[24:])
	block := patternBlock(*nonce)
	buf := make([]byte, 65536)
	var got uint64
	status := uint32(0)
	for got < reqLen {
		want := reqLen - got
		if want > uint64(len(buf)) {
			want = uint64(len(buf))
		}
		n, err := c.Read(buf[:want])
		if n > 0 && !matches(block, got, buf[:n]) {
			status = 1
		}
		got += uint64(n)
		if err != nil {
			return err
		}
	}
	r := make([]byte, 56)
	copy(r, "SSKR")
	binary.LittleEndian.PutUint32(r[4:], status)
	copy(r[8:24], *name)
	binary.LittleEndian.PutUint64(r[24:], *nonce)
	binary.LittleEndian.PutUint64(r[32:], got)
	binary.LittleEndian.PutUint64(r[40:], replyLen)
	binary.LittleEndian.PutUint32(r[48:], dom)
	if _, err := c.Write(r); err != nil {
		return err
	}
	block = patternBlock(*nonce ^ replySalt)
	for off := uint64(0); off < replyLen; {
		if pause > 0 && off >= replyLen/2 {
			time.Sleep(time.Duration(pause) * time.Millisecond)
			pause = 0
		}
		n := replyLen - off
		if n > uint64(len(buf)) {
			n = uint64(len(buf))
		}
		fill(block, off, buf[:n])
		if _, err := c.Write(buf[:n]); err != nil {
			return err
		}
		off += n
	}
	// The client half-closes once it has everything.
	_, err := io.Copy(io.Discard, c)
	return err
}

func main() {
	flag.Parse()
	l, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: *port})
	if err != nil {
		fmt.Fprintln(os.Stderr, "soakpeer:", err)
		os.Exit(1)
	}
	tmp := fmt.Sprintf("%s.tmp.%d", *portFile, os.Getpid())
	os.WriteFile(tmp, []byte(fmt.Sprintf("%d\n", l.Addr().(*net.TCPAddr).Port)), 0o644)
	os.Rename(tmp, *portFile)
	for {
		c, err := l.AcceptTCP()
		if err != nil {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		go serve(c)
	}
}
