// flagspeer: the three failing inputs of issue #9's data-path flags, between a Go server and
// client built with CGO_ENABLED=0 (raw syscalls). Speaks the protocol of
// tests/programs/py/flags_peer.py:
//
//	flagspeer server --port-file F
//	flagspeer client --port-file F
//
// The server's calls are raw syscalls on the connection's fd switched to blocking mode, as a C
// program would make them: recvfrom(fd, buf, 5, MSG_PEEK|MSG_WAITALL, NULL, NULL),
// recvfrom(fd, NULL, 5, MSG_TRUNC, NULL, NULL), and sendto with the peer's address.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

const tail = "123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOP" // 51 bytes after "0"

var stdin = bufio.NewReader(os.Stdin)

func ready(role string, c *net.TCPConn, fd uintptr) {
	fmt.Printf("ready %s pid=%d fd=%d local=%s peer=%s\n", role, os.Getpid(), fd,
		c.LocalAddr(), c.RemoteAddr())
	stdin.ReadString('\n')
}

// rawFd returns the connection's fd (valid while c is open).
func rawFd(c *net.TCPConn) uintptr {
	rc, err := c.SyscallConn()
	if err != nil {
		panic(err)
	}
	var fd uintptr
	rc.Control(func(f uintptr) { fd = f })
	return fd
}

func result(r uintptr, errno syscall.Errno) string {
	if errno != 0 {
		return "err=" + strconv.Itoa(int(errno))
	}
	return "ret=" + strconv.Itoa(int(r))
}

func server(portFile string) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	os.WriteFile(portFile+".tmp", []byte(fmt.Sprintf("%d\n", port)), 0o644)
	os.Rename(portFile+".tmp", portFile)
	conn, err := l.Accept()
	if err != nil {
		panic(err)
	}
	c := conn.(*net.TCPConn)
	fd := rawFd(c)
	ready("server", c, fd)
	syscall.SetNonblock(int(fd), false) // blocking calls, as a C program makes them

	buf := make([]byte, 8)
	r, _, e := syscall.Syscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&buf[0])), 5,
		syscall.MSG_PEEK|syscall.MSG_WAITALL, 0, 0)
	shown := 0
	if e == 0 {
		shown = int(r)
	}
	fmt.Printf("peek_waitall: %s data=%s\n", result(r, e), buf[:shown])
	r, _, e = syscall.Syscall6(syscall.SYS_RECVFROM, fd, 0, 5, syscall.MSG_TRUNC, 0, 0)
	fmt.Printf("trunc: %s\n", result(r, e))
	rest := make([]byte, 47)
	n, _ := io.ReadFull(c, rest)
	fmt.Printf("rest: %s\n", rest[:n])
	peer := c.RemoteAddr().(*net.TCPAddr)
	to := &syscall.SockaddrInet4{Port: peer.Port}
	copy(to.Addr[:], peer.IP.To4())
	if err := syscall.Sendto(int(fd), []byte("hello"), 0, to); err != nil {
		fmt.Printf("sendto: err=%d\n", int(err.(syscall.Errno)))
	} else {
		fmt.Printf("sendto: ret=5\n")
	}
	c.CloseWrite()
	one := make([]byte, 1)
	n, err = c.Read(one)
	fmt.Printf("eof: n=%d %v\n", n, err)
}

func client(portFile string) {
	text, err := os.ReadFile(portFile)
	if err != nil {
		panic(err)
	}
	conn, err := net.Dial("tcp4", "127.0.0.1:"+strings.TrimSpace(string(text)))
	if err != nil {
		panic(err)
	}
	c := conn.(*net.TCPConn)
	ready("client", c, rawFd(c))
	c.Write([]byte("0"))
	time.Sleep(50 * time.Millisecond)
	c.Write([]byte(tail))
	got := make([]byte, 5)
	n, _ := io.ReadFull(c, got)
	fmt.Printf("got: %s\n", got[:n])
	one := make([]byte, 1)
	n, err = c.Read(one)
	fmt.Printf("eof: n=%d %v\n", n, err)
}

func main() {
	portFile := flag.String("port-file", "", "where the server writes its port")
	flag.CommandLine.Parse(os.Args[2:])
	switch os.Args[1] {
	case "server":
		server(*portFile)
	case "client":
		client(*portFile)
	}
}
