// connect_flip: a connect() whose address another thread rewrites while the call runs (issue #12:
// the supervisor reads the address when the call is trapped; the kernel may read it again).
//
//   connect_flip server --port-file F [--count N]
//   connect_flip client --port-a A --port-b B [--count N]
//
// The server accepts connections one after the other and writes "id=<its port>\n" on each, then
// waits for the client's EOF. The client's second thread flips the sin_port of one shared
// sockaddr_in between A and B in a tight loop while the main thread connects N times with that
// very struct. Each connection: getpeername() names the server the program is connected to, and
// the first line read names the server that answered; they must be the same. Prints
//   client: connections=N to_a=X to_b=Y mismatches=0 errors=0
// and exits 0, or 1 when a connection mismatched or failed (details on stderr).
#include "fixture.h"  // first: it defines _GNU_SOURCE

#include <pthread.h>
#include <stdatomic.h>

static struct sockaddr_in g_addr;  // rewritten by the flipper while connect() reads it
static atomic_int g_stop;
static uint16_t g_ports[2];

static void* Flip(void* arg) {
  (void)arg;
  volatile uint16_t* port = &g_addr.sin_port;
  for (unsigned long i = 0; !atomic_load_explicit(&g_stop, memory_order_relaxed); ++i) {
    *port = g_ports[i & 1];
  }
  return NULL;
}

static int ReadLine(int fd, char* buf, size_t len) {
  size_t n = 0;
  while (n + 1 < len) {
    ssize_t r = read(fd, buf + n, 1);
    if (r <= 0) return -1;
    if (buf[n] == '\n') break;
    ++n;
  }
  buf[n] = '\0';
  return (int)n;
}

static int Server(const char* port_file, long long count) {
  int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_storage ss;
  socklen_t len = fx_make_addr("127.0.0.1", 0, &ss);
  if (l < 0 || bind(l, (struct sockaddr*)&ss, len) < 0 || listen(l, 128) < 0) fx_die("listen");
  len = sizeof(ss);
  if (getsockname(l, (struct sockaddr*)&ss, &len) < 0) fx_die("getsockname");
  int port = fx_port_of(&ss);
  fx_write_port_file(port_file, port);
  char id[32];
  int id_len = snprintf(id, sizeof(id), "id=%d\n", port);
  for (long long i = 0; count == 0 || i < count; ++i) {
    int c = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    if (c < 0) fx_die("accept");
    char byte;
    if (fx_write_all(c, id, (size_t)id_len) != 0 || read(c, &byte, 1) != 0) {
      fprintf(stderr, "connect_flip: server %d: connection %lld: no clean EOF\n", port, i);
    }
    close(c);
  }
  printf("server: port=%d connections=%lld\n", port, count);
  return 0;
}

static int Client(int port_a, int port_b, long long count) {
  g_ports[0] = htons((uint16_t)port_a);
  g_ports[1] = htons((uint16_t)port_b);
  g_addr.sin_family = AF_INET;
  g_addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  g_addr.sin_port = g_ports[0];
  pthread_t flipper;
  if (pthread_create(&flipper, NULL, Flip, NULL) != 0) fx_die("pthread_create");
  long long to_a = 0, to_b = 0, mismatches = 0, errors = 0;
  for (long long i = 0; i < count; ++i) {
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) fx_die("socket");
    if (connect(s, (struct sockaddr*)&g_addr, sizeof(g_addr)) != 0) {
      fprintf(stderr, "connect_flip: connection %lld: connect: %s\n", i, fx_errno_name(errno));
      ++errors;
      close(s);
      continue;
    }
    struct sockaddr_storage peer;
    socklen_t len = sizeof(peer);
    char line[64];
    int peer_port = getpeername(s, (struct sockaddr*)&peer, &len) == 0 ? fx_port_of(&peer) : -1;
    int id = ReadLine(s, line, sizeof(line)) > 3 ? atoi(line + 3) : -1;
    if (peer_port != port_a && peer_port != port_b) {
      fprintf(stderr, "connect_flip: connection %lld: getpeername port %d\n", i, peer_port);
      ++errors;
    } else if (id != peer_port) {
      fprintf(stderr, "connect_flip: connection %lld: connected to %d, answered by %d\n", i,
              peer_port, id);
      ++mismatches;
    }
    to_a += peer_port == port_a;
    to_b += peer_port == port_b;
    close(s);
  }
  atomic_store(&g_stop, 1);
  pthread_join(flipper, NULL);
  printf("client: connections=%lld to_a=%lld to_b=%lld mismatches=%lld errors=%lld\n", count, to_a,
         to_b, mismatches, errors);
  return mismatches == 0 && errors == 0 ? 0 : 1;
}

int main(int argc, char** argv) {
  fx_program = "connect_flip";
  if (argc < 2) fx_die("usage: connect_flip server|client ...");
  const char* port_file = NULL;
  int port_a = 0, port_b = 0;
  long long count = 0;
  for (int i = 2; i + 1 < argc; i += 2) {
    if (strcmp(argv[i], "--port-file") == 0)
      port_file = argv[i + 1];
    else if (strcmp(argv[i], "--port-a") == 0)
      port_a = atoi(argv[i + 1]);
    else if (strcmp(argv[i], "--port-b") == 0)
      port_b = atoi(argv[i + 1]);
    else if (strcmp(argv[i], "--count") == 0)
      count = fx_parse_count("--count", argv[i + 1]);
    else
      fx_die("unknown option %s", argv[i]);
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (strcmp(argv[1], "server") == 0 && port_file != NULL) return Server(port_file, count);
  if (strcmp(argv[1], "client") == 0 && port_a > 0 && port_b > 0) {
    return Client(port_a, port_b, count);
  }
  fx_die("usage: connect_flip server --port-file F | client --port-a A --port-b B");
  return 2;
}
