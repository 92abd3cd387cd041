// switch_probe: prints what a program can learn about its TCP connection, so that a run over a
// switched connection can be compared with a native run line by line.
//
//   switch_probe server [--family ipv4|ipv6|v4mapped] --port-file F [--hold]
//   switch_probe client [--host H] --port-file F [--nonblock] [--hold]
//   ... [--end shutdown|abort|close|closewrite]   (both sides: how the connection ends, below)
//   ... [--sigio]                      (client: signal-driven I/O asked for before connect)
//
// Each side prints "<section>: <observation>" lines: the addresses of connect/accept,
// getsockname/getpeername, SO_DOMAIN/SO_PROTOCOL/SO_TYPE/SO_ACCEPTCONN/SO_ERROR/SO_PEERCRED,
// TCP_NODELAY, TCP_CORK, TCP_INFO (state), TCP_MAXSEG, TCP_CONGESTION, TCP_USER_TIMEOUT, the
// keepalive options, IP_TOS/IP_TTL or IPV6_TCLASS/IPV6_UNICAST_HOPS, each read, set and read
// back; then a ping/pong exchange, and (section "shutdown") what each side sees after the
// client's half-close. With --end abort the client instead resets the connection (SO_LINGER
// {1, 0}, a last write, close), with --end close it closes it, and the server looks at its socket
// once the client is gone (section "peerclose"); with --end closewrite the server then writes
// (section "peerwrite": empty writes, then bytes). Addresses are printed with their real ports: a
// test normalises them.
// With --hold a "ready ROLE pid=P fd=F local=A peer=B" line and a stdin gate come right after
// connect/accept, before any probing, and the server waits for a second line before it closes.
#include "fixture.h"  // first: it defines _GNU_SOURCE

#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>

static const char* role = "client";
static int hold_close;
static int sigio;  // --sigio: F_SETOWN and O_ASYNC before connect(), SIGIO awaited for "pong"

static void Gate(void) {
  char c;
  for (;;) {
    ssize_t n = read(0, &c, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0 || c == '\n') return;
  }
}

static const char* FamilyName(int family) {
  return family == AF_INET ? "AF_INET" : family == AF_INET6 ? "AF_INET6" : "other";
}

static void AddrText(const struct sockaddr_storage* ss, char* buf, size_t len) {
  char host[INET6_ADDRSTRLEN];
  fx_host_text(ss, host, sizeof(host));
  if (ss->ss_family == AF_INET6) {
    snprintf(buf, len, "[%s]:%d", host, fx_port_of(ss));
  } else if (ss->ss_family == AF_INET) {
    snprintf(buf, len, "%s:%d", host, fx_port_of(ss));
  } else {
    snprintf(buf, len, "family%d", ss->ss_family);
  }
}

static void Say(const char* section, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
static void Say(const char* section, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  printf("%s %s: ", role, section);
  vprintf(fmt, ap);
  printf("\n");
  fflush(stdout);
  va_end(ap);
}

static void Name(const char* section, int fd, int peer) {
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof(ss));
  socklen_t len = sizeof(ss);
  int rc = peer ? getpeername(fd, (struct sockaddr*)&ss, &len)
                : getsockname(fd, (struct sockaddr*)&ss, &len);
  const char* what = peer ? "getpeername" : "getsockname";
  if (rc < 0) {
    Say(section, "%s -1 %s", what, fx_errno_name(errno));
    return;
  }
  char text[96];
  AddrText(&ss, text, sizeof(text));
  Say(section, "%s %s %s len=%u", what, FamilyName(ss.ss_family), text, (unsigned)len);
}

static void GetInt(const char* section, int fd, int level, int name, const char* text) {
  int v = -12345;
  socklen_t len = sizeof(v);
  if (getsockopt(fd, level, name, &v, &len) < 0) {
    Say(section, "get %s -1 %s", text, fx_errno_name(errno));
  } else {
    Say(section, "get %s %d len=%u", text, v, (unsigned)len);
  }
}

static void SetInt(const char* section, int fd, int level, int name, const char* text, int v) {
  int rc = setsockopt(fd, level, name, &v, sizeof(v));
  Say(section, "set %s %d = %d%s%s", text, v, rc, rc < 0 ? " " : "",
      rc < 0 ? fx_errno_name(errno) : "");
}

static void SetGet(const char* section, int fd, int level, int name, const char* text, int v) {
  GetInt(section, fd, level, name, text);
  SetInt(section, fd, level, name, text, v);
  GetInt(section, fd, level, name, text);
}

static void TcpInfo(const char* section, int fd) {
  struct tcp_info info;
  memset(&info, 0, sizeof(info));
  socklen_t len = sizeof(info);
  if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) < 0) {
    Say(section, "get TCP_INFO -1 %s", fx_errno_name(errno));
    return;
  }
  Say(section, "get TCP_INFO state=%u len=%u", (unsigned)info.tcpi_state, (unsigned)len);
}

// getsockname/getpeername at the edges of move_addr_to_user(): a buffer shorter than the
// address (truncated, the full length returned), a negative length, unwritable memory.
static void NameEdges(const char* section, int fd, int peer) {
  int (*get)(int, struct sockaddr*, socklen_t*) = peer ? getpeername : getsockname;
  const char* what = peer ? "getpeername" : "getsockname";
  unsigned char buf[16];
  memset(buf, 0xaa, sizeof(buf));
  socklen_t len = 6;
  int rc = get(fd, (struct sockaddr*)buf, &len);
  // Bytes 2-3 are the port, which differs from run to run.
  Say(section, "%s short: %d %s len=%u bytes=%02x%02x....%02x%02x%02x", what, rc,
      rc < 0 ? fx_errno_name(errno) : "", (unsigned)len, buf[0], buf[1], buf[4], buf[5], buf[6]);
  int negative = -1;
  rc = get(fd, (struct sockaddr*)buf, (socklen_t*)&negative);
  Say(section, "%s negative: %d %s", what, rc, rc < 0 ? fx_errno_name(errno) : "");
  len = sizeof(buf);
  rc = get(fd, (struct sockaddr*)8, &len);
  Say(section, "%s bad address: %d %s", what, rc, rc < 0 ? fx_errno_name(errno) : "");
  rc = get(fd, (struct sockaddr*)buf, (socklen_t*)8);
  Say(section, "%s bad length: %d %s", what, rc, rc < 0 ? fx_errno_name(errno) : "");
}

// The kernel's checks of option calls, in the kernel's order: ranges, short, negative and huge
// lengths, unreadable and unwritable memory, partial reads (the hybrid library answers the kept
// TCP options and SO_DOMAIN/SO_PROTOCOL of a switched socket itself).
static void OptionEdges(const char* section, int fd) {
  static const struct {
    int level, name;
    const char* text;
    int v;
  } sets[] = {
      {IPPROTO_TCP, TCP_KEEPIDLE, "TCP_KEEPIDLE", 0},
      {IPPROTO_TCP, TCP_KEEPIDLE, "TCP_KEEPIDLE", 32767},
      {IPPROTO_TCP, TCP_KEEPIDLE, "TCP_KEEPIDLE", 32768},
      {IPPROTO_TCP, TCP_KEEPINTVL, "TCP_KEEPINTVL", 0},
      {IPPROTO_TCP, TCP_KEEPINTVL, "TCP_KEEPINTVL", 32768},
      {IPPROTO_TCP, TCP_KEEPCNT, "TCP_KEEPCNT", 127},
      {IPPROTO_TCP, TCP_KEEPCNT, "TCP_KEEPCNT", 128},
      {IPPROTO_TCP, TCP_KEEPCNT, "TCP_KEEPCNT", -1},
      {IPPROTO_TCP, TCP_USER_TIMEOUT, "TCP_USER_TIMEOUT", -1},
      {IPPROTO_TCP, TCP_NODELAY, "TCP_NODELAY", -7},
      {IPPROTO_TCP, TCP_CORK, "TCP_CORK", 0},
  };
  for (size_t i = 0; i < sizeof(sets) / sizeof(sets[0]); ++i) {
    SetInt(section, fd, sets[i].level, sets[i].name, sets[i].text, sets[i].v);
    GetInt(section, fd, sets[i].level, sets[i].name, sets[i].text);
  }
  int one = 1;
  static const int lens[] = {0, 3, -1, 8};
  for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); ++i) {
    int rc = setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &one, (socklen_t)lens[i]);
    Say(section, "set TCP_KEEPCNT len=%d: %d %s", lens[i], rc, rc < 0 ? fx_errno_name(errno) : "");
  }
  int rc = setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, (void*)8, sizeof(int));
  Say(section, "set TCP_NODELAY bad address: %d %s", rc, rc < 0 ? fx_errno_name(errno) : "");
  rc = setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, (void*)8, 2);
  Say(section, "set TCP_NODELAY bad address, len 2: %d %s", rc, rc < 0 ? fx_errno_name(errno) : "");
  GetInt(section, fd, IPPROTO_TCP, TCP_KEEPCNT, "TCP_KEEPCNT");
  static const struct {
    int level, name;
    const char* text;
  } gets[] = {{IPPROTO_TCP, TCP_KEEPIDLE, "TCP_KEEPIDLE"}, {SOL_SOCKET, SO_DOMAIN, "SO_DOMAIN"}};
  for (size_t i = 0; i < sizeof(gets) / sizeof(gets[0]); ++i) {
    static const int get_lens[] = {2, 0, -1, 9};
    for (size_t j = 0; j < sizeof(get_lens) / sizeof(get_lens[0]); ++j) {
      unsigned char buf[12];
      memset(buf, 0xaa, sizeof(buf));
      socklen_t len = (socklen_t)get_lens[j];
      rc = getsockopt(fd, gets[i].level, gets[i].name, buf, &len);
      Say(section, "get %s len=%d: %d %s len=%d bytes=%02x%02x%02x%02x%02x", gets[i].text,
          get_lens[j], rc, rc < 0 ? fx_errno_name(errno) : "", (int)len, buf[0], buf[1], buf[2],
          buf[3], buf[4]);
    }
    socklen_t len = sizeof(int);
    rc = getsockopt(fd, gets[i].level, gets[i].name, (void*)8, &len);
    Say(section, "get %s bad address: %d %s len=%u", gets[i].text, rc,
        rc < 0 ? fx_errno_name(errno) : "", (unsigned)len);
    rc = getsockopt(fd, gets[i].level, gets[i].name, &one, (socklen_t*)8);
    Say(section, "get %s bad length address: %d %s", gets[i].text, rc,
        rc < 0 ? fx_errno_name(errno) : "");
  }
}

static void Probe(int fd, int family) {
  const char* s = "names";
  Name(s, fd, 0);
  Name(s, fd, 1);
  NameEdges(s, fd, 0);
  NameEdges(s, fd, 1);
  Name(s, fd, 1);  // again: the kept answer, in hybrid mode
  s = "socket";
  GetInt(s, fd, SOL_SOCKET, SO_DOMAIN, "SO_DOMAIN");
  GetInt(s, fd, SOL_SOCKET, SO_PROTOCOL, "SO_PROTOCOL");
  GetInt(s, fd, SOL_SOCKET, SO_TYPE, "SO_TYPE");
  GetInt(s, fd, SOL_SOCKET, SO_ACCEPTCONN, "SO_ACCEPTCONN");
  GetInt(s, fd, SOL_SOCKET, SO_ERROR, "SO_ERROR");
  struct ucred cred;
  socklen_t cred_len = sizeof(cred);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cred_len) < 0) {
    Say(s, "get SO_PEERCRED -1 %s", fx_errno_name(errno));
  } else {
    Say(s, "get SO_PEERCRED pid=%d uid=%d gid=%d", (int)cred.pid, (int)cred.uid, (int)cred.gid);
  }
  s = "tcp";
  TcpInfo(s, fd);
  SetGet(s, fd, IPPROTO_TCP, TCP_NODELAY, "TCP_NODELAY", 1);
  SetGet(s, fd, IPPROTO_TCP, TCP_CORK, "TCP_CORK", 1);
  SetInt(s, fd, IPPROTO_TCP, TCP_CORK, "TCP_CORK", 0);
  GetInt(s, fd, IPPROTO_TCP, TCP_MAXSEG, "TCP_MAXSEG");
  SetGet(s, fd, IPPROTO_TCP, TCP_USER_TIMEOUT, "TCP_USER_TIMEOUT", 10000);
  char cc[32] = "";
  socklen_t cc_len = sizeof(cc);
  if (getsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, cc, &cc_len) < 0) {
    Say(s, "get TCP_CONGESTION -1 %s", fx_errno_name(errno));
  } else {
    Say(s, "get TCP_CONGESTION %s", cc);
  }
  s = "keepalive";
  SetGet(s, fd, SOL_SOCKET, SO_KEEPALIVE, "SO_KEEPALIVE", 1);
  SetGet(s, fd, IPPROTO_TCP, TCP_KEEPIDLE, "TCP_KEEPIDLE", 30);
  SetGet(s, fd, IPPROTO_TCP, TCP_KEEPINTVL, "TCP_KEEPINTVL", 5);
  SetGet(s, fd, IPPROTO_TCP, TCP_KEEPCNT, "TCP_KEEPCNT", 3);
  OptionEdges("optedges", fd);
  s = "ip";
  if (family == AF_INET) {
    SetGet(s, fd, IPPROTO_IP, IP_TOS, "IP_TOS", 0x10);
    GetInt(s, fd, IPPROTO_IP, IP_TTL, "IP_TTL");
  } else {
    SetGet(s, fd, IPPROTO_IPV6, IPV6_TCLASS, "IPV6_TCLASS", 0x10);
    GetInt(s, fd, IPPROTO_IPV6, IPV6_UNICAST_HOPS, "IPV6_UNICAST_HOPS");
    GetInt(s, fd, IPPROTO_IPV6, IPV6_V6ONLY, "IPV6_V6ONLY");
  }
}

// --sigio, before connect(): this process owns the socket's SIGIO, which stays blocked so that
// sigtimedwait() takes it.
static void AskForSigio(int fd) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGIO);
  if (sigprocmask(SIG_BLOCK, &set, NULL) < 0 || fcntl(fd, F_SETOWN, getpid()) < 0 ||
      fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_ASYNC) < 0) {
    fx_die("signal-driven I/O");
  }
}

// Whether SIGIO arrives once the peer's next bytes do (those sent before `Drained` are taken
// first: a connection becoming writable may raise one too).
static void DrainSigio(void) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGIO);
  struct timespec now = {0, 0};
  while (sigtimedwait(&set, NULL, &now) == SIGIO) {
  }
}

static void AwaitSigio(int fd) {
  Say("sigio", "owner is this process: %d, O_ASYNC: %d", fcntl(fd, F_GETOWN) == getpid(),
      (fcntl(fd, F_GETFL) & O_ASYNC) != 0);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGIO);
  struct timespec wait = {10, 0};
  int sig = sigtimedwait(&set, NULL, &wait);
  Say("sigio", "%s", sig == SIGIO ? "SIGIO arrived with the reply" : "no SIGIO in 10 s");
}

// Lock-step, so that each observation sees one known state of the connection.
static void Exchange(int fd) {
  char buf[16];
  if (strcmp(role, "client") == 0) {
    if (sigio) DrainSigio();
    if (fx_write_all(fd, "ping\n", 5) < 0) fx_die("write ping");
    if (sigio) AwaitSigio(fd);
    ssize_t n = fx_read_full(fd, buf, 5);
    Say("exchange", "read %zd %.*s", n, n > 0 ? (int)n - 1 : 0, buf);
    TcpInfo("exchange", fd);
    GetInt("exchange", fd, SOL_SOCKET, SO_ERROR, "SO_ERROR");
  } else {
    ssize_t n = fx_read_full(fd, buf, 5);
    Say("exchange", "read %zd %.*s", n, n > 0 ? (int)n - 1 : 0, buf);
    TcpInfo("exchange", fd);
    GetInt("exchange", fd, SOL_SOCKET, SO_ERROR, "SO_ERROR");
    if (fx_write_all(fd, "pong\n", 5) < 0) fx_die("write pong");
  }
}

// The client half-closes; the server reads EOF, looks, answers "eof"; the client reads it and
// looks; then (with --hold, after a second gate) the server closes.
static void Shutdown(int fd) {
  char buf[8];
  if (strcmp(role, "client") == 0) {
    int rc = shutdown(fd, SHUT_WR);
    Say("shutdown", "shutdown SHUT_WR = %d", rc);
    ssize_t n = fx_read_full(fd, buf, 4);
    Say("shutdown", "read %zd %.*s", n, n > 0 ? (int)n - 1 : 0, buf);
    TcpInfo("shutdown", fd);
    Name("shutdown", fd, 1);
  } else {
    ssize_t n = fx_read_full(fd, buf, 1);
    Say("shutdown", "read after the client half-closed = %zd", n);
    TcpInfo("shutdown", fd);
    Name("shutdown", fd, 1);
    if (fx_write_all(fd, "eof\n", 4) < 0) fx_die("write eof");
    if (hold_close) Gate();  // the client looks at its socket before this one closes
  }
}

// The client leaves: an abortive close after a last write (abort), or a plain close with nothing
// unread (close). The server waits until it sees that, then looks: getpeername, TCP_INFO, and
// after a reset what SO_ERROR, reads and a write report.
static void PeerClose(int fd, int abort, int writes) {
  if (strcmp(role, "client") == 0) {
    if (abort) {
      struct linger now = {1, 0};
      int rc = setsockopt(fd, SOL_SOCKET, SO_LINGER, &now, sizeof(now));
      Say("peerclose", "set SO_LINGER {1, 0} = %d", rc);
      if (fx_write_all(fd, "bye\n", 4) < 0) fx_die("write bye");
    }
    return;  // the caller closes
  }
  for (;;) {  // RDHUP: the FIN or RST arrived (TCP), or the peer end was closed (AF_UNIX)
    struct pollfd p = {fd, POLLRDHUP, 0};
    int n = poll(&p, 1, 30000);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) fx_die("the client never left");
    if (p.revents & (POLLRDHUP | POLLHUP)) break;
  }
  Name("peerclose", fd, 1);
  TcpInfo("peerclose", fd);
  if (abort) {
    GetInt("peerclose", fd, SOL_SOCKET, SO_ERROR, "SO_ERROR");
    char buf[8];
    for (int i = 0; i < 2; ++i) {
      ssize_t n = read(fd, buf, sizeof(buf));
      Say("peerclose", "read %zd%s%s", n, n < 0 ? " " : "", n < 0 ? fx_errno_name(errno) : "");
    }
    ssize_t n = send(fd, "x", 1, MSG_NOSIGNAL);
    Say("peerclose", "send %zd%s%s", n, n < 0 ? " " : "", n < 0 ? fx_errno_name(errno) : "");
    Name("peerclose", fd, 1);
    TcpInfo("peerclose", fd);
  } else {
    char c;
    ssize_t n = read(fd, &c, 1);
    Say("peerclose", "read %zd%s%s", n, n < 0 ? " " : "", n < 0 ? fx_errno_name(errno) : "");
    GetInt("peerclose", fd, SOL_SOCKET, SO_ERROR, "SO_ERROR");
  }
  if (writes) {  // two empty writes, then two of a byte: TCP's answers are 0, 0, 1, EPIPE
    const size_t sizes[] = {0, 0, 1, 1};
    for (int i = 0; i < 4; ++i) {
      ssize_t n = send(fd, "x", sizes[i], MSG_NOSIGNAL);
      Say("peerwrite", "send %zu: %zd%s%s", sizes[i], n, n < 0 ? " " : "",
          n < 0 ? fx_errno_name(errno) : "");
    }
  }
  if (hold_close) Gate();  // as after "shutdown"
}

static void End(int fd, const char* how) {
  if (strcmp(how, "shutdown") == 0) return Shutdown(fd);
  PeerClose(fd, strcmp(how, "abort") == 0, strcmp(how, "closewrite") == 0);
}

static void Ready(int fd, int hold) {
  if (!hold) return;
  struct sockaddr_storage local, peer;
  socklen_t ll = sizeof(local), pl = sizeof(peer);
  getsockname(fd, (struct sockaddr*)&local, &ll);
  getpeername(fd, (struct sockaddr*)&peer, &pl);
  char lt[96], pt[96];
  AddrText(&local, lt, sizeof(lt));
  AddrText(&peer, pt, sizeof(pt));
  printf("ready %s pid=%d fd=%d local=%s peer=%s\n", role, (int)getpid(), fd, lt, pt);
  fflush(stdout);
  Gate();
}

static int Server(const char* family, const char* port_file, int hold, const char* end) {
  int v6 = strcmp(family, "ipv4") != 0;
  struct sockaddr_storage addr;
  socklen_t len = fx_make_addr(strcmp(family, "ipv4") == 0   ? "127.0.0.1"
                               : strcmp(family, "ipv6") == 0 ? "::1"
                                                             : "::",
                               0, &addr);
  int l = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (l < 0) fx_die("socket");
  if (v6) {
    int only = strcmp(family, "ipv6") == 0;
    if (setsockopt(l, IPPROTO_IPV6, IPV6_V6ONLY, &only, sizeof(only)) < 0) fx_die("V6ONLY");
  }
  if (bind(l, (struct sockaddr*)&addr, len) < 0 || listen(l, 16) < 0) fx_die("listen");
  len = sizeof(addr);
  if (getsockname(l, (struct sockaddr*)&addr, &len) < 0) fx_die("getsockname");
  fx_write_port_file(port_file, fx_port_of(&addr));
  struct sockaddr_storage peer;
  memset(&peer, 0, sizeof(peer));
  socklen_t peer_len = sizeof(peer);
  int fd = accept4(l, (struct sockaddr*)&peer, &peer_len, SOCK_CLOEXEC);
  if (fd < 0) fx_die("accept4");
  Ready(fd, hold);
  char text[96];
  AddrText(&peer, text, sizeof(text));
  Say("accept", "%s %s len=%u", FamilyName(peer.ss_family), text, (unsigned)peer_len);
  Probe(fd, v6 ? AF_INET6 : AF_INET);
  Exchange(fd);
  End(fd, end);
  close(fd);
  close(l);
  return 0;
}

static int Client(const char* host, const char* port_file, int nonblock, int hold,
                  const char* end) {
  struct sockaddr_storage dest;
  socklen_t len = fx_make_addr(host, fx_read_port_file(port_file, 30), &dest);
  if (len == 0) fx_die("bad host %s", host);
  int fd = socket(dest.ss_family, SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0);
  if (fd < 0) fx_die("socket");
  if (sigio) AskForSigio(fd);
  int rc = connect(fd, (struct sockaddr*)&dest, len);
  Say("connect", "connect = %d%s%s", rc, rc < 0 ? " " : "", rc < 0 ? fx_errno_name(errno) : "");
  if (nonblock) {
    struct pollfd p = {fd, POLLOUT, 0};
    int n = poll(&p, 1, 30000);
    Say("connect", "poll = %d%s%s%s%s", n, p.revents & POLLOUT ? " POLLOUT" : "",
        p.revents & POLLIN ? " POLLIN" : "", p.revents & POLLERR ? " POLLERR" : "",
        p.revents & POLLHUP ? " POLLHUP" : "");
    GetInt("connect", fd, SOL_SOCKET, SO_ERROR, "SO_ERROR");
    if (fx_set_nonblocking(fd, 0) < 0) fx_die("clear O_NONBLOCK");
  }
  Ready(fd, hold);
  Probe(fd, dest.ss_family);
  Exchange(fd);
  End(fd, end);
  close(fd);
  return 0;
}

int main(int argc, char** argv) {
  fx_program = "switch_probe";
  if (argc < 2) goto usage;
  role = argv[1];
  const char* family = "ipv4";
  const char* host = "127.0.0.1";
  const char* port_file = NULL;
  const char* end = "shutdown";
  int nonblock = 0, hold = 0;
  for (int i = 2; i < argc; ++i) {
    if (strcmp(argv[i], "--nonblock") == 0) {
      nonblock = 1;
    } else if (strcmp(argv[i], "--sigio") == 0) {
      sigio = 1;
    } else if (strcmp(argv[i], "--hold") == 0) {
      hold = 1;
    } else if (i + 1 < argc && strcmp(argv[i], "--family") == 0) {
      family = argv[++i];
    } else if (i + 1 < argc && strcmp(argv[i], "--host") == 0) {
      host = argv[++i];
    } else if (i + 1 < argc && strcmp(argv[i], "--end") == 0) {
      end = argv[++i];
    } else if (i + 1 < argc && strcmp(argv[i], "--port-file") == 0) {
      port_file = argv[++i];
    } else {
      goto usage;
    }
  }
  if (port_file == NULL || (strcmp(end, "shutdown") != 0 && strcmp(end, "abort") != 0 &&
                            strcmp(end, "close") != 0 && strcmp(end, "closewrite") != 0)) {
    goto usage;
  }
  hold_close = hold;
  if (strcmp(role, "server") == 0) return Server(family, port_file, hold, end);
  if (strcmp(role, "client") == 0) return Client(host, port_file, nonblock, hold, end);
usage:
  fprintf(stderr, "usage: switch_probe server|client [options] --port-file F\n");
  return 2;
}
