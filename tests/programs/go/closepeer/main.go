// closepeer: the Go side of Slipstream's close and shutdown tests (net package, CGO_ENABLED=0:
// raw syscalls and the netpoller).
//
//	closepeer server -port-file F -case C
//	closepeer client -port-file F -case C
//
// Both print "ready ROLE pid=P fd=F local=A peer=B" once connected and then wait for a line on
// stdin (the test looks at the kernel's view first). Cases:
//
//	closeread  server: CloseRead(), then Read() (3 s deadline: a hang prints "read: timeout"),
//	           then writes "hello" and closes; client: reads to the end
//	linger     client: SetLinger(0), Close(); server: Read() (3 s deadline)
//	writeafter client: Close(); server: Read() (EOF), then two writes of 5 bytes 50 ms apart
//
// Errors are printed as errno names (ECONNRESET, EPIPE), EOF or timeout.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

var (
	portFile = flag.String("port-file", "", "server: write the port here; client: read it")
	caseName = flag.String("case", "closeread", "closeread, linger or writeafter")
)

func say(format string, args ...interface{}) { fmt.Printf(format+"\n", args...) }

func gate() {
	b := make([]byte, 1)
	for {
		n, err := os.Stdin.Read(b)
		if err != nil || (n == 1 && b[0] == '\n') {
			return
		}
	}
}

func errText(err error) string {
	var errno syscall.Errno
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, io.EOF):
		return "EOF"
	case errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	case errors.As(err, &errno):
		switch errno {
		case syscall.ECONNRESET:
			return "ECONNRESET"
		case syscall.EPIPE:
			return "EPIPE"
		}
		return "errno" + strconv.Itoa(int(errno))
	}
	return "error " + err.Error()
}

func ready(role string, c *net.TCPConn) {
	fd := -1
	if rc, err := c.SyscallConn(); err == nil {
		rc.Control(func(f uintptr) { fd = int(f) })
	}
	say("ready %s pid=%d fd=%d local=%s peer=%s", role, os.Getpid(), fd, c.LocalAddr(),
		c.RemoteAddr())
	gate()
}

func readOnce(c *net.TCPConn) {
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	say("read: %d %s", n, errText(err))
}

func server() {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		say("listen: %v", err)
		os.Exit(1)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := os.WriteFile(*portFile+".tmp", []byte(strconv.Itoa(port)+"\n"), 0o644); err != nil {
		os.Exit(1)
	}
	os.Rename(*portFile+".tmp", *portFile)
	conn, err := l.Accept()
	if err != nil {
		say("accept: %v", err)
		os.Exit(1)
	}
	c := conn.(*net.TCPConn)
	ready("server", c)
	switch *caseName {
	case "closeread":
		say("closeread: %s", errText(c.CloseRead()))
		readOnce(c)
		_, err := c.Write([]byte("hello"))
		say("write: %s", errText(err))
		c.Close()
	case "linger":
		readOnce(c)
	case "writeafter":
		readOnce(c)
		for i := 0; i < 2; i++ {
			n, err := c.Write([]byte("hello"))
			say("write: %d %s", n, errText(err))
			time.Sleep(50 * time.Millisecond)
		}
	}
}

func client() {
	var port int
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		if b, err := os.ReadFile(*portFile); err == nil {
			if p, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				port = p
				break
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	conn, err := net.Dial("tcp4", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		say("dial: %v", err)
		os.Exit(1)
	}
	c := conn.(*net.TCPConn)
	ready("client", c)
	switch *caseName {
	case "closeread":
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		b, err := io.ReadAll(c)
		say("got: %q %s", b, errText(err))
	case "linger":
		say("linger: %s", errText(c.SetLinger(0)))
		say("close: %s", errText(c.Close()))
	case "writeafter":
		say("close: %s", errText(c.Close()))
	}
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: closepeer server|client -port-file F -case C")
		os.Exit(2)
	}
	role := os.Args[1]
	flag.CommandLine.Parse(os.Args[2:])
	if role == "server" {
		server()
	} else {
		client()
	}
	say("done")
}
