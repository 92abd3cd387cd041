// bad_args: runs trapped socket calls with bad (and borderline) arguments and prints one line per
// case: "<case> = <result>", where the result is 0, "fd", or "-1 <ERRNO>", plus what the call wrote
// back (lengths, bytes changed in an output buffer, flags of a new fd).
//
// The integration test runs it natively and under slipstream-trace and requires identical output:
// a supervisor that emulates a call must fail it exactly as the kernel would. Fd numbers and ports
// are never printed, so the two runs can be compared byte for byte. Each case runs under a 3-second
// alarm whose handler has no SA_RESTART, so a call that would hang shows up as "-1 EINTR".
//
//   bad_args [--peer-port P] [GROUP...]   groups: connect, bind (with listen), accept, names,
//   sockopt (with
//                         shutdown and socket); all when none is given
#include "fixture.h"  // first: it defines _GNU_SOURCE

#include <netinet/tcp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>

static long page_size;
static uint8_t* unmapped;         // a page that is not mapped
static uint8_t* straddle;         // 8 mapped bytes followed by the unmapped page
static uint8_t* read_only;        // a PROT_READ page (holds a valid sockaddr_in for the listener)
static int closed_fd;             // a number that is not an open fd
static uint8_t fill_byte = 0xAA;  // what output buffers hold before a call
static int not_socket;            // /dev/null
static int peer_port;             // --peer-port: a listener outside supervision (0: our own)

static void OnAlarm(int sig) { (void)sig; }

static void Arm(void) { alarm(3); }

// Runs `expr` under the alarm and prints its result; errno is read after the call.
#define RUN(name, expr, returns_fd)           \
  do {                                        \
    Arm();                                    \
    long rc_ = (long)(expr);                  \
    int err_ = errno;                         \
    Print(name, rc_, err_, returns_fd, NULL); \
  } while (0)

// Prints "<name> = <result><extra>".
static void Print(const char* name, long ret, int err, int returns_fd, const char* extra) {
  alarm(0);
  char result[64];
  if (ret < 0) {
    snprintf(result, sizeof(result), "-1 %s", fx_errno_name(err));
  } else if (returns_fd) {
    snprintf(result, sizeof(result), "fd");
  } else {
    snprintf(result, sizeof(result), "%ld", ret);
  }
  printf("%-48s = %s%s%s\n", name, result, extra && *extra ? " " : "", extra ? extra : "");
  fflush(stdout);
}

// A listening TCP socket on 127.0.0.1 (or ::1), port chosen by the kernel.
static int Listener(int v6, int nonblocking, struct sockaddr_storage* addr, socklen_t* len) {
  int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) fx_die("socket");
  *len = fx_make_addr(v6 ? "::1" : "127.0.0.1", 0, addr);
  if (bind(fd, (struct sockaddr*)addr, *len) < 0) fx_die("bind");
  if (listen(fd, 64) < 0) fx_die("listen");
  *len = sizeof(*addr);
  if (getsockname(fd, (struct sockaddr*)addr, len) < 0) fx_die("getsockname");
  if (nonblocking && fx_set_nonblocking(fd, 1) < 0) fx_die("O_NONBLOCK");
  return fd;
}

// A client connected (blocking) to `addr`: after connect returns, the connection sits in the
// listener's accept queue.
static int Client(const struct sockaddr_storage* addr, socklen_t len) {
  int fd = socket(addr->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) fx_die("socket");
  if (connect(fd, (const struct sockaddr*)addr, len) < 0) fx_die("connect");
  return fd;
}

// Is a connection waiting in `listener`'s queue?
static int Queued(int listener) {
  struct pollfd p = {listener, POLLIN, 0};
  return poll(&p, 1, 0) == 1;
}

// Chooses a fill byte that cannot appear in an address the call may write: none of the bytes of
// `port_a`/`port_b`, nor the bytes of a family, 127.0.0.1, ::1 or ::ffff:a.b.c.d.
static void PickFill(int port_a, int port_b) {
  for (int b = 0xAA;; b = (b + 1) & 0xff) {
    if (b == 0 || b == 1 || b == 2 || b == 10 || b == 127 || b == 0xff) continue;
    if (b == (port_a & 0xff) || b == (port_a >> 8) || b == (port_b & 0xff) || b == (port_b >> 8)) {
      continue;
    }
    fill_byte = (uint8_t)b;
    return;
  }
}

static int LocalPort(int fd) {
  struct sockaddr_storage a;
  socklen_t len = sizeof(a);
  if (getsockname(fd, (struct sockaddr*)&a, &len) < 0) return 0;
  return fx_port_of(&a);
}

// How many bytes of `buf` were written by the call: the index after the last byte that no longer
// holds the fill (PickFill makes every written byte differ from it).
static int Changed(const uint8_t* buf, size_t len) {
  int n = 0;
  for (size_t k = 0; k < len; ++k) {
    if (buf[k] != fill_byte) n = (int)k + 1;
  }
  return n;
}

// Is `p` one of the caller's own buffers (not NULL, unmapped, straddling or read-only)?
static int Readable(const void* p) {
  const uint8_t* b = p;
  return b != NULL && !(b >= straddle && b < read_only + page_size);
}

// An output buffer of the accept/names groups, refilled per case once the ports are known.
static uint8_t out_addr[sizeof(struct sockaddr_storage)];

static void FdFlagsText(int fd, char* out, size_t len) {
  int fl = fcntl(fd, F_GETFL);
  int fdfl = fcntl(fd, F_GETFD);
  snprintf(out, len, "nonblock=%d cloexec=%d", (fl & O_NONBLOCK) != 0, (fdfl & FD_CLOEXEC) != 0);
}

// ---- connect
// -------------------------------------------------------------------------------------

static void ConnectCase(const char* name, int nb, int fd, const void* addr, int len) {
  char full[96];
  snprintf(full, sizeof(full), "%s_%s", nb ? "nb" : "b", name);
  Arm();
  int rc = connect(fd, (const struct sockaddr*)addr, (socklen_t)len);
  Print(full, rc, errno, 0, NULL);
}

static int NewSocket(int family, int nb) {
  int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | (nb ? SOCK_NONBLOCK : 0), 0);
  if (fd < 0) fx_die("socket");
  return fd;
}

static void ConnectGroup(int nb) {
  struct sockaddr_storage la;
  socklen_t ll;
  int l = Listener(0, 0, &la, &ll);
  int s;
  s = NewSocket(AF_INET, nb);
  ConnectCase("connect_unmapped_addr", nb, s, unmapped, 16);
  ConnectCase("connect_null_addr", nb, s, NULL, 16);
  ConnectCase("connect_straddling_addr", nb, s, straddle, 16);
  ConnectCase("connect_len_zero", nb, s, &la, 0);
  ConnectCase("connect_len_short", nb, s, &la, 8);
  ConnectCase("connect_len_negative", nb, s, &la, -1);
  ConnectCase("connect_len_too_long", nb, s, &la, 129);
  ConnectCase("connect_closed_fd", nb, closed_fd, &la, (int)ll);
  ConnectCase("connect_not_socket", nb, not_socket, &la, (int)ll);
  ConnectCase("connect_listening_socket", nb, l, &la, (int)ll);
  {
    struct sockaddr_storage v6;
    socklen_t v6len = fx_make_addr("::1", fx_port_of(&la), &v6);
    ConnectCase("connect_v6_addr_on_v4_socket", nb, s, &v6, (int)v6len);
    ConnectCase("connect_v6_family_short_len", nb, s, &v6, 16);
  }
  close(s);

  // A valid address in a 128-byte buffer passed with length 128; then a second and third connect.
  s = NewSocket(AF_INET, nb);
  {
    struct sockaddr_storage big;
    memcpy(&big, &la, sizeof(big));
    ConnectCase("connect_len_128", nb, s, &big, 128);
    if (nb) {
      struct pollfd p = {s, POLLOUT, 0};
      poll(&p, 1, 3000);
      ConnectCase("connect_again_after_poll", nb, s, &la, (int)ll);
    }
    ConnectCase("connect_already_connected", nb, s, &la, (int)ll);
    struct sockaddr unspec = {.sa_family = AF_UNSPEC};
    ConnectCase("connect_unspec_disconnects", nb, s, &unspec, sizeof(unspec));
    struct sockaddr_storage peer;
    socklen_t plen = sizeof(peer);
    Arm();
    int rc = getpeername(s, (struct sockaddr*)&peer, &plen);
    Print(nb ? "nb_getpeername_after_unspec" : "b_getpeername_after_unspec", rc, errno, 0, NULL);
  }
  close(s);

  // The destination in read-only memory is fine: connect only reads it.
  s = NewSocket(AF_INET, nb);
  ConnectCase("connect_read_only_addr", nb, s, read_only, (int)sizeof(struct sockaddr_in));
  close(s);

  // A port that is bound but not listening refuses.
  {
    int holder = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_storage ha;
    socklen_t hl = fx_make_addr("127.0.0.1", 0, &ha);
    if (bind(holder, (struct sockaddr*)&ha, hl) < 0) fx_die("bind");
    hl = sizeof(ha);
    getsockname(holder, (struct sockaddr*)&ha, &hl);
    s = NewSocket(AF_INET, nb);
    ConnectCase("connect_refused", nb, s, &ha, (int)hl);
    if (nb) {
      struct pollfd p = {s, POLLOUT, 0};
      poll(&p, 1, 3000);
      int err = 0;
      socklen_t elen = sizeof(err);
      getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &elen);
      printf("%-48s = %s\n", "nb_connect_refused_so_error", err ? fx_errno_name(err) : "0");
    }
    close(s);
    close(holder);
  }

  // IPv6 sockets: a v4-mapped destination, refused on an IPV6_V6ONLY socket.
  {
    struct sockaddr_storage mapped;
    socklen_t mlen = fx_make_addr("::ffff:127.0.0.1", fx_port_of(&la), &mapped);
    s = NewSocket(AF_INET6, nb);
    ConnectCase("connect_v4mapped_on_v6", nb, s, &mapped, (int)mlen);
    close(s);
    s = NewSocket(AF_INET6, nb);
    int one = 1;
    setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    ConnectCase("connect_v4mapped_on_v6only", nb, s, &mapped, (int)mlen);
    ConnectCase("connect_v4_addr_on_v6_socket", nb, s, &la, (int)ll);
    close(s);
  }
  close(l);
}

// ---- bind and listen
// -------------------------------------------------------------------------------

static void BindCase(const char* name, int fd, const void* addr, int len) {
  Arm();
  int rc = bind(fd, (const struct sockaddr*)addr, (socklen_t)len);
  Print(name, rc, errno, 0, NULL);
}

static void BindGroup(void) {
  struct sockaddr_storage la;
  socklen_t ll;
  int l = Listener(0, 0, &la, &ll);
  struct sockaddr_storage any;
  socklen_t anylen = fx_make_addr("127.0.0.1", 0, &any);
  int s = NewSocket(AF_INET, 0);
  BindCase("bind_unmapped_addr", s, unmapped, 16);
  BindCase("bind_null_addr", s, NULL, 16);
  BindCase("bind_len_short", s, &any, 8);
  BindCase("bind_len_negative", s, &any, -1);
  BindCase("bind_len_too_long", s, &any, 129);
  BindCase("bind_closed_fd", closed_fd, &any, (int)anylen);
  BindCase("bind_not_socket", not_socket, &any, (int)anylen);
  BindCase("bind_in_use", s, &la, (int)ll);
  BindCase("bind_ok", s, &any, (int)anylen);
  BindCase("bind_twice", s, &any, (int)anylen);
  close(s);
  s = NewSocket(AF_INET, 0);
  struct sockaddr_storage v6;
  socklen_t v6len = fx_make_addr("::1", 0, &v6);
  BindCase("bind_v6_addr_on_v4_socket", s, &v6, (int)v6len);
  close(s);

  RUN("listen_closed_fd", listen(closed_fd, 5), 0);
  RUN("listen_not_socket", listen(not_socket, 5), 0);
  int c = Client(&la, ll);
  RUN("listen_connected_socket", listen(c, 5), 0);
  close(c);
  s = NewSocket(AF_INET, 0);
  RUN("listen_unbound_autobinds", listen(s, -5), 0);
  RUN("listen_twice", listen(s, 10), 0);
  close(s);
  close(l);
}

// ---- accept and accept4
// ----------------------------------------------------------------------------

// Runs accept (flags < 0) or accept4 on a fresh listener that has one queued connection (unless
// `queue` is 0), and prints the result, what was written to addr/addrlen, the new fd's flags and
// whether a connection is still queued afterwards.
static void AcceptCase(const char* name, int nb, int v6, int queue, void* addr, void* addrlen,
                       int flags) {
  struct sockaddr_storage la;
  socklen_t ll;
  int l = Listener(v6, nb, &la, &ll);
  int c = queue ? Client(&la, ll) : -1;
  PickFill(fx_port_of(&la), c >= 0 ? LocalPort(c) : 0);
  if (addr == out_addr) memset(out_addr, fill_byte, sizeof(out_addr));
  char full[96];
  snprintf(full, sizeof(full), "%s_%s", nb ? "nb" : "b", name);
  Arm();
  int fd = flags < 0 ? accept(l, addr, addrlen) : accept4(l, addr, addrlen, flags);
  int err = errno;
  alarm(0);
  char extra[160] = "";
  size_t used = 0;
  if (fd >= 0) {
    FdFlagsText(fd, extra, sizeof(extra));
    used = strlen(extra);
    close(fd);
  }
  if (Readable(addrlen)) {
    used += (size_t)snprintf(extra + used, sizeof(extra) - used, "%slen=%d", used ? " " : "",
                             *(int*)addrlen);
  }
  if (Readable(addr)) {
    used += (size_t)snprintf(extra + used, sizeof(extra) - used, "%swritten=%d", used ? " " : "",
                             Changed(addr, sizeof(struct sockaddr_storage)));
  }
  if (queue) {
    snprintf(extra + used, sizeof(extra) - used, "%squeued_after=%d", used ? " " : "", Queued(l));
  }
  Print(full, fd, err, 1, extra);
  if (c >= 0) close(c);
  close(l);
}

// A queued connection whose peer has reset it (SO_LINGER 0): Linux still hands it out, with the
// peer's address, and the first read reports the reset.
static void AcceptResetCase(int nb, int with_addr) {
  struct sockaddr_storage la;
  socklen_t ll;
  int l = Listener(0, nb, &la, &ll);
  int c = Client(&la, ll);
  PickFill(fx_port_of(&la), LocalPort(c));
  struct linger lin = {1, 0};
  if (setsockopt(c, SOL_SOCKET, SO_LINGER, &lin, sizeof(lin)) < 0) fx_die("SO_LINGER");
  close(c);  // RST
  memset(out_addr, fill_byte, sizeof(out_addr));
  socklen_t len = sizeof(struct sockaddr_in);
  Arm();
  int fd = with_addr ? accept(l, (struct sockaddr*)out_addr, &len) : accept(l, NULL, NULL);
  int err = errno;
  alarm(0);
  char extra[96] = "";
  if (fd >= 0) {
    char byte;
    ssize_t n = read(fd, &byte, 1);
    snprintf(extra, sizeof(extra), "%s%sread=%zd %s", with_addr ? "written=" : "",
             with_addr ? (Changed(out_addr, sizeof(out_addr)) == 16 ? "16 " : "? ") : "", n,
             n < 0 ? fx_errno_name(errno) : "");
    close(fd);
  }
  char name[96];
  snprintf(name, sizeof(name), "%s_accept_reset_connection%s", nb ? "nb" : "b",
           with_addr ? "" : "_null_addr");
  Print(name, fd, err, 1, extra);
  close(l);
}

// accept() with no free fd: EMFILE, and the connection stays in the listener's queue (it still
// polls readable), to be accepted once an fd is free.
static void AcceptEmfileCase(int nb) {
  struct sockaddr_storage la;
  socklen_t ll;
  int l = Listener(0, nb, &la, &ll);
  int c = Client(&la, ll);
  struct rlimit old;
  getrlimit(RLIMIT_NOFILE, &old);
  struct rlimit low = old;
  low.rlim_cur = 64;
  if (setrlimit(RLIMIT_NOFILE, &low) < 0) fx_die("setrlimit");
  int spare[64];
  int n = 0;
  while (n < 64 && (spare[n] = dup(not_socket)) >= 0) ++n;
  Arm();
  int fd = accept(l, NULL, NULL);
  int err = errno;
  alarm(0);
  int queued = Queued(l);
  if (n > 0) close(spare[--n]);
  Arm();
  int again = accept(l, NULL, NULL);
  int again_err = errno;
  alarm(0);
  char extra[96];
  snprintf(extra, sizeof(extra), "queued_after=%d retry=%s", queued,
           again >= 0 ? "fd" : fx_errno_name(again_err));
  char name[96];
  snprintf(name, sizeof(name), "%s_accept_emfile", nb ? "nb" : "b");
  Print(name, fd, err, 1, extra);
  if (fd >= 0) close(fd);
  if (again >= 0) close(again);
  while (n > 0) close(spare[--n]);
  setrlimit(RLIMIT_NOFILE, &old);
  close(c);
  close(l);
}

static void AcceptGroup(int nb) {
  uint8_t* addr = out_addr;
  int len;
#define FILL(n) (len = (n))
  FILL(16);
  AcceptCase("accept_queued", nb, 0, 1, addr, &len, -1);
  FILL(16);
  AcceptCase("accept4_queued_no_flags", nb, 0, 1, addr, &len, 0);
  FILL(16);
  AcceptCase("accept4_nonblock_cloexec", nb, 0, 1, addr, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
  AcceptCase("accept_null_addr", nb, 0, 1, NULL, NULL, -1);
  AcceptCase("accept_null_addr_unmapped_len", nb, 0, 1, NULL, unmapped, -1);
  FILL(16);
  AcceptCase("accept4_bad_flags", nb, 0, 1, addr, &len, 0x1);
  FILL(16);
  AcceptCase("accept4_o_append_flag", nb, 0, 1, addr, &len, O_APPEND);
  len = 16;
  AcceptCase("accept_unmapped_addr", nb, 0, 1, unmapped, &len, -1);
  // Which is stored first, the length or the address? (Linux 6.18 stores the length first.)
  len = 20;
  AcceptCase("accept_unmapped_addr_len20", nb, 0, 1, unmapped, &len, -1);
  len = 16;
  AcceptCase("accept_straddling_addr", nb, 0, 1, straddle, &len, -1);
  len = 16;
  AcceptCase("accept_read_only_addr", nb, 0, 1, read_only, &len, -1);
  FILL(16);
  AcceptCase("accept_unmapped_addrlen", nb, 0, 1, addr, unmapped, -1);
  FILL(16);
  AcceptCase("accept_null_addrlen", nb, 0, 1, addr, NULL, -1);
  FILL(-1);
  AcceptCase("accept_negative_addrlen", nb, 0, 1, addr, &len, -1);
  FILL(4);
  AcceptCase("accept_short_addrlen", nb, 0, 1, addr, &len, -1);
  FILL(0);
  AcceptCase("accept_zero_addrlen", nb, 0, 1, addr, &len, -1);
  FILL(1000);
  AcceptCase("accept_large_addrlen", nb, 0, 1, addr, &len, -1);
  FILL(16);
  AcceptCase("accept_v6_truncated_addr", nb, 1, 1, addr, &len, -1);
  FILL(28);
  AcceptCase("accept4_v6_full_addr", nb, 1, 1, addr, &len, SOCK_CLOEXEC);
  {
    // addrlen in read-only memory: the address is written, storing the length faults.
    uint8_t* ro_addr = out_addr;
    int* ro_len = (int*)(read_only + 512);
    struct sockaddr_storage la;
    socklen_t ll;
    int l = Listener(0, nb, &la, &ll);
    int c = Client(&la, ll);
    PickFill(fx_port_of(&la), LocalPort(c));
    memset(ro_addr, fill_byte, sizeof(out_addr));
    Arm();
    int fd = accept(l, (struct sockaddr*)ro_addr, (socklen_t*)ro_len);
    int err = errno;
    char extra[64];
    snprintf(extra, sizeof(extra), "written=%d queued_after=%d", Changed(ro_addr, sizeof(out_addr)),
             Queued(l));
    Print(nb ? "nb_accept_read_only_addrlen" : "b_accept_read_only_addrlen", fd, err, 1, extra);
    if (fd >= 0) close(fd);
    close(c);
    close(l);
  }
  if (nb) {
    FILL(16);
    AcceptCase("accept_empty_queue", nb, 0, 0, addr, &len, -1);
  }
#undef FILL

  AcceptResetCase(nb, 1);
  AcceptResetCase(nb, 0);
  AcceptEmfileCase(nb);

  char name[96];
  snprintf(name, sizeof(name), "%s_accept_closed_fd", nb ? "nb" : "b");
  RUN(name, accept(closed_fd, NULL, NULL), 1);
  snprintf(name, sizeof(name), "%s_accept_not_socket", nb ? "nb" : "b");
  RUN(name, accept(not_socket, NULL, NULL), 1);
  int s = NewSocket(AF_INET, nb);
  snprintf(name, sizeof(name), "%s_accept_not_listening", nb ? "nb" : "b");
  RUN(name, accept(s, NULL, NULL), 1);
  close(s);
  // An established TCP socket with nothing to read is not a listener: EINVAL at once. With
  // --peer-port the peer is a listener outside supervision, so the connection stays TCP even
  // where Slipstream would move a connection between two supervised ends to AF_UNIX.
  {
    struct sockaddr_storage la;
    socklen_t ll;
    int l = Listener(0, 0, &la, &ll);
    if (peer_port > 0) ll = fx_make_addr("127.0.0.1", peer_port, &la);
    int c = Client(&la, ll);
    int server_side = peer_port > 0 ? -1 : accept(l, NULL, NULL);
    if (nb) fx_set_nonblocking(c, 1);
    snprintf(name, sizeof(name), "%s_accept_connected_socket", nb ? "nb" : "b");
    RUN(name, accept(c, NULL, NULL), 1);
    if (server_side >= 0) close(server_side);
    close(c);
    close(l);
  }
}

// ---- getsockname and getpeername
// -------------------------------------------------------------------

static void NameCase(const char* name, int peer, int fd, void* addr, void* addrlen) {
  Arm();
  int rc = peer ? getpeername(fd, addr, addrlen) : getsockname(fd, addr, addrlen);
  int err = errno;
  char extra[96] = "";
  size_t used = 0;
  if (Readable(addrlen)) used += (size_t)snprintf(extra, sizeof(extra), "len=%d", *(int*)addrlen);
  if (Readable(addr)) {
    snprintf(extra + used, sizeof(extra) - used, "%swritten=%d", used ? " " : "",
             Changed(addr, sizeof(struct sockaddr_storage)));
  }
  Print(name, rc, err, 0, extra);
}

static void NamesGroup(void) {
  struct sockaddr_storage la;
  socklen_t ll;
  int l = Listener(0, 0, &la, &ll);
  int c = Client(&la, ll);
  int a = accept(l, NULL, NULL);
  uint8_t* addr = out_addr;
  int len;
  int* ro_len = (int*)(read_only + 512);
  PickFill(fx_port_of(&la), LocalPort(c));
#define FILL(n) (memset(addr, fill_byte, sizeof(out_addr)), len = (n))
  for (int peer = 0; peer <= 1; ++peer) {
    char name[96];
#define CASE(label, fd, ad, al)                                                       \
  snprintf(name, sizeof(name), "%s_%s", peer ? "getpeername" : "getsockname", label); \
  NameCase(name, peer, fd, ad, al)
    FILL(16);
    CASE("ok", c, addr, &len);
    FILL(16);
    CASE("closed_fd", closed_fd, addr, &len);
    FILL(16);
    CASE("not_socket", not_socket, addr, &len);
    len = 16;
    CASE("unmapped_addr", c, unmapped, &len);
    len = 20;
    CASE("unmapped_addr_len20", c, unmapped, &len);
    len = 16;
    CASE("null_addr", c, NULL, &len);
    len = 0;
    CASE("null_addr_zero_len", c, NULL, &len);
    len = 16;
    CASE("straddling_addr", c, straddle, &len);
    len = 16;
    CASE("read_only_addr", c, read_only, &len);
    FILL(16);
    CASE("unmapped_addrlen", c, addr, unmapped);
    FILL(16);
    CASE("null_addrlen", c, addr, NULL);
    FILL(16);
    CASE("read_only_addrlen", c, addr, ro_len);
    FILL(-1);
    CASE("negative_addrlen", c, addr, &len);
    FILL(4);
    CASE("short_addrlen", c, addr, &len);
    FILL(0);
    CASE("zero_addrlen", c, addr, &len);
    FILL(16);
    CASE("listener", l, addr, &len);
    FILL(16);
    CASE("accepted", a, addr, &len);
    int fresh = NewSocket(AF_INET, 0);
    FILL(16);
    CASE("unbound", fresh, addr, &len);
    close(fresh);
    fresh = NewSocket(AF_INET6, 0);
    FILL(16);
    CASE("unbound_v6_short", fresh, addr, &len);
    close(fresh);
#undef CASE
  }
#undef FILL
  close(a);
  close(c);
  close(l);
}

// ---- getsockopt, setsockopt, shutdown, socket
// -------------------------------------------------------

static void SockoptGroup(void) {
  struct sockaddr_storage la;
  socklen_t ll;
  int l = Listener(0, 0, &la, &ll);
  int c = Client(&la, ll);
  int val;
  int len;
  char extra[64];
#define GET(name, fd, level, opt, v, lp)                       \
  do {                                                         \
    val = -7;                                                  \
    Arm();                                                     \
    int rc_ = getsockopt(fd, level, opt, v, (socklen_t*)(lp)); \
    int err_ = errno;                                          \
    snprintf(extra, sizeof(extra), "val=%d len=%d", val, len); \
    Print(name, rc_, err_, 0, rc_ == 0 ? extra : NULL);        \
  } while (0)
  len = 4;
  GET("getsockopt_so_error", c, SOL_SOCKET, SO_ERROR, &val, &len);
  len = 4;
  GET("getsockopt_so_type", c, SOL_SOCKET, SO_TYPE, &val, &len);
  len = 4;
  GET("getsockopt_so_domain", c, SOL_SOCKET, SO_DOMAIN, &val, &len);
  len = 4;
  GET("getsockopt_so_acceptconn_listener", l, SOL_SOCKET, SO_ACCEPTCONN, &val, &len);
  len = 4;
  GET("getsockopt_tcp_nodelay", c, IPPROTO_TCP, TCP_NODELAY, &val, &len);
  len = 4;
  GET("getsockopt_unmapped_optlen", c, SOL_SOCKET, SO_TYPE, &val, (socklen_t*)unmapped);
  len = -1;
  GET("getsockopt_negative_optlen", c, SOL_SOCKET, SO_TYPE, &val, &len);
  len = 4;
  GET("getsockopt_unmapped_optval", c, SOL_SOCKET, SO_TYPE, unmapped, &len);
  len = 4;
  GET("getsockopt_closed_fd", closed_fd, SOL_SOCKET, SO_TYPE, &val, &len);
  len = 4;
  GET("getsockopt_not_socket", not_socket, SOL_SOCKET, SO_TYPE, &val, &len);
  len = 4;
  GET("getsockopt_unknown_option", c, SOL_SOCKET, 9999, &val, &len);
  len = 4;
  GET("getsockopt_unknown_level", c, 9999, 1, &val, &len);
#undef GET
  int one = 1;
  RUN("setsockopt_tcp_nodelay", setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, 4), 0);
  len = 4;
  val = -7;
  getsockopt(c, IPPROTO_TCP, TCP_NODELAY, &val, (socklen_t*)&len);
  printf("%-48s = %d\n", "tcp_nodelay_after_set", val != 0);
  RUN("setsockopt_unmapped_optval", setsockopt(c, SOL_SOCKET, SO_KEEPALIVE, unmapped, 4), 0);
  RUN("setsockopt_short_optlen", setsockopt(c, SOL_SOCKET, SO_KEEPALIVE, &one, 2), 0);
  RUN("setsockopt_negative_optlen", setsockopt(c, SOL_SOCKET, SO_KEEPALIVE, &one, (socklen_t)-1),
      0);
  RUN("setsockopt_closed_fd", setsockopt(closed_fd, SOL_SOCKET, SO_KEEPALIVE, &one, 4), 0);
  RUN("setsockopt_not_socket", setsockopt(not_socket, SOL_SOCKET, SO_KEEPALIVE, &one, 4), 0);

  RUN("shutdown_closed_fd", shutdown(closed_fd, SHUT_WR), 0);
  RUN("shutdown_not_socket", shutdown(not_socket, SHUT_WR), 0);
  int fresh = NewSocket(AF_INET, 0);
  RUN("shutdown_not_connected", shutdown(fresh, SHUT_WR), 0);
  close(fresh);
  RUN("shutdown_bad_how", shutdown(c, 7), 0);
  RUN("shutdown_wr", shutdown(c, SHUT_WR), 0);
  close(c);
  close(l);

  int fd;
  Arm();
  fd = socket(AF_INET, SOCK_STREAM, IPPROTO_UDP);
  Print("socket_stream_udp_protocol", fd, errno, 1, NULL);
  if (fd >= 0) close(fd);
  Arm();
  fd = socket(AF_INET, SOCK_STREAM | 0x100000, 0);
  Print("socket_bad_type_flag", fd, errno, 1, NULL);
  if (fd >= 0) close(fd);
  Arm();
  fd = socket(AF_INET6, SOCK_STREAM | SOCK_NONBLOCK, 0);
  if (fd >= 0) {
    FdFlagsText(fd, extra, sizeof(extra));
    Print("socket_v6_nonblock", fd, errno, 1, extra);
    close(fd);
  } else {
    Print("socket_v6_nonblock", fd, errno, 1, NULL);
  }
}

static int Wanted(int argc, char** argv, const char* group) {
  int any = 0;
  for (int i = 1; i < argc; ++i) {
    if (strcmp(argv[i], "--peer-port") == 0) {
      ++i;
      continue;
    }
    any = 1;
    if (strcmp(argv[i], group) == 0) return 1;
  }
  return !any;
}

int main(int argc, char** argv) {
  fx_program = "bad_args";
  signal(SIGPIPE, SIG_IGN);
  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = OnAlarm;
  sa.sa_flags = 0;  // no SA_RESTART: a call that would hang returns EINTR
  sigaction(SIGALRM, &sa, NULL);

  for (int i = 1; i + 1 < argc; ++i) {
    if (strcmp(argv[i], "--peer-port") == 0) peer_port = (int)fx_parse_count("port", argv[i + 1]);
  }
  page_size = sysconf(_SC_PAGESIZE);
  uint8_t* pages =
      mmap(NULL, (size_t)page_size * 3, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (pages == MAP_FAILED) fx_die("mmap");
  unmapped = pages + page_size;
  if (munmap(unmapped, (size_t)page_size) < 0) fx_die("munmap");
  straddle = unmapped - 8;
  read_only = pages + 2 * page_size;
  {
    // The read-only page holds a valid sockaddr_in (the listener is filled in per case) and, at
    // offset 512, an addrlen of 16.
    struct sockaddr_in* sin = (struct sockaddr_in*)read_only;
    sin->sin_family = AF_INET;
    sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    *(int*)(read_only + 512) = 16;
  }
  not_socket = open("/dev/null", O_RDWR | O_CLOEXEC);
  // Far above anything this program opens, and checked to be free.
  closed_fd = 1009;
  if (fcntl(closed_fd, F_GETFD) >= 0) fx_die("fd %d is open", closed_fd);

  if (Wanted(argc, argv, "connect")) {
    // The read-only destination of connect_read_only_addr: a listener that lives until exit.
    struct sockaddr_storage la;
    socklen_t ll;
    Listener(0, 0, &la, &ll);
    if (mprotect(read_only, (size_t)page_size, PROT_READ | PROT_WRITE) < 0) fx_die("mprotect");
    ((struct sockaddr_in*)read_only)->sin_port = ((struct sockaddr_in*)&la)->sin_port;
  }
  if (mprotect(read_only, (size_t)page_size, PROT_READ) < 0) fx_die("mprotect");

  if (Wanted(argc, argv, "connect")) {
    ConnectGroup(0);
    ConnectGroup(1);
  }
  if (Wanted(argc, argv, "bind")) BindGroup();
  if (Wanted(argc, argv, "accept")) {
    AcceptGroup(0);
    AcceptGroup(1);
  }
  if (Wanted(argc, argv, "names")) NamesGroup();
  if (Wanted(argc, argv, "sockopt")) SockoptGroup();
  return 0;
}
