// ss-memcload: closed-loop memcached load generator (text protocol), operations per second.
//
//   ss-memcload ADDR [--conns N] [--time SECONDS] [--keys K] [--max-value BYTES]
//                    [--get-ratio R] [--preload] [--seed S]
//
// ADDR is tcp:HOST:PORT or unix:PATH (memcached -s). Why not memcslap: the Debian memcslap
// (libmemcached 1.1) runs one thread per connection, reports "0 keys" in its timings and has no
// fixed-duration mode, which makes 64 connections on a 2-core machine measure thread scheduling
// rather than the transport. This generator keeps N connections on one thread with epoll, each
// with exactly one request outstanding, for a fixed time.
//
// Workload, after the paper's memcached experiment: a pool of K keys (default 10000) whose values
// are 1 B ... 4 KiB (each key has a fixed size derived from its number, so the data set is the
// same in every run), 90% get / 10% set, keys drawn uniformly. --preload stores every key first
// (pipelined, on one connection) so gets hit.
//
// Output (one JSON line): {"conns":N,"seconds":T,"ops":X,"ops_per_s":Y,"gets":..,"sets":..,
//                          "hits":..,"misses":..,"errors":E}
#include <fcntl.h>
#include <stdbool.h>
#include <sys/epoll.h>

#include "bench_common.h"

#define MAX_CONNS 1024
#define MAX_VALUE 65536
#define BUF_SIZE (MAX_VALUE + 512)

typedef struct {
  int fd;
  bool is_get;
  char out[BUF_SIZE];
  size_t out_len, out_off;
  char in[BUF_SIZE];
  size_t in_len;
} conn;

static struct {
  unsigned keys;
  unsigned max_value;
  double get_ratio;
  uint64_t rng;
  char value[MAX_VALUE];
  uint64_t gets, sets, hits, misses, errors;
} g;

static uint64_t rnd(void) {  // xorshift64: cheap, and reproducible from --seed
  g.rng ^= g.rng << 13;
  g.rng ^= g.rng >> 7;
  g.rng ^= g.rng << 17;
  return g.rng;
}

// Fixed value size per key, spread over 1 ... max_value bytes.
static unsigned value_size(unsigned key) {
  uint32_t h = key * 2654435761u;
  return 1 + (h >> 8) % g.max_value;
}

static size_t format_set(char* out, unsigned key) {
  unsigned n = value_size(key);
  int len = sprintf(out, "set ssb:%06u 0 0 %u\r\n", key, n);
  memcpy(out + len, g.value, n);
  memcpy(out + len + n, "\r\n", 2);
  return (size_t)len + n + 2;
}

// Builds the next request for `c` (get or set by --get-ratio).
static void next_request(conn* c) {
  unsigned key = (unsigned)(rnd() % g.keys);
  c->is_get = (double)(rnd() % 1000000) < g.get_ratio * 1e6;
  if (c->is_get) {
    c->out_len = (size_t)sprintf(c->out, "get ssb:%06u\r\n", key);
  } else {
    c->out_len = format_set(c->out, key);
  }
  c->out_off = 0;
  c->in_len = 0;
}

static const char* find_crlf(const char* p, size_t len) {
  for (size_t i = 0; i + 1 < len; i++) {
    if (p[i] == '\r' && p[i + 1] == '\n') return p + i;
  }
  return NULL;
}

// Returns 1 when the response in c->in is complete (and counts it), 0 if more bytes are needed.
static int response_complete(conn* c) {
  const char* p = c->in;
  size_t len = c->in_len;
  const char* eol = find_crlf(p, len);
  if (!eol) return 0;
  size_t line = (size_t)(eol - p);
  if (!c->is_get) {
    if (line == 6 && memcmp(p, "STORED", 6) == 0) {
      g.sets++;
    } else {
      g.errors++;
    }
    return 1;
  }
  if (line == 3 && memcmp(p, "END", 3) == 0) {
    g.gets++;
    g.misses++;
    return 1;
  }
  if (line > 6 && memcmp(p, "VALUE ", 6) == 0) {
    // "VALUE <key> <flags> <bytes>\r\n<data>\r\nEND\r\n": the byte count is the last field.
    const char* last = eol;
    while (last > p && last[-1] != ' ') last--;
    size_t bytes = strtoull(last, NULL, 10);
    size_t total = line + 2 + bytes + 2 + 5;
    if (len < total) return 0;
    if (memcmp(p + total - 5, "END\r\n", 5) != 0) g.errors++;
    g.gets++;
    g.hits++;
    return 1;
  }
  g.errors++;  // SERVER_ERROR, CLIENT_ERROR, ERROR
  return 1;
}

// Sends what is left of c->out; returns 0 when all is sent, 1 if the socket is full, -1 on error.
static int flush_out(conn* c) {
  while (c->out_off < c->out_len) {
    ssize_t n = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) return 1;
      return -1;
    }
    c->out_off += (size_t)n;
  }
  return 0;
}

static void preload(const bench_addr* a) {
  int fd = connect_to(a);
  if (fd < 0) die("preload connect");
  set_nodelay(fd, a);
  static char out[64 * BUF_SIZE];
  char in[8192];
  // Pipeline batches of 64 sets, then read the 64 "STORED\r\n" replies.
  for (unsigned first = 0; first < g.keys; first += 64) {
    size_t len = 0;
    unsigned n = 0;
    for (unsigned k = first; k < g.keys && n < 64; k++, n++) len += format_set(out + len, k);
    if (write_all(fd, out, len) != 0) die("preload write");
    unsigned lines = 0;
    while (lines < n) {
      ssize_t r = read(fd, in, sizeof in);
      if (r <= 0) die("preload read");
      for (ssize_t i = 0; i < r; i++) lines += in[i] == '\n';
    }
  }
  close(fd);
}

static _Noreturn void usage(void) {
  fprintf(stderr,
          "usage: ss-memcload ADDR [--conns N] [--time SECONDS] [--keys K] [--max-value BYTES]\n"
          "                        [--get-ratio R] [--preload] [--seed S]\n");
  exit(2);
}

int main(int argc, char** argv) {
  if (argc < 2) usage();
  const char* spec = argv[1];
  int nconns = 1;
  double duration = 2.0;
  bool do_preload = false;
  g.keys = 10000;
  g.max_value = 4096;
  g.get_ratio = 0.9;
  g.rng = 0x9e3779b97f4a7c15ull;
  for (int i = 2; i < argc; i++) {
    const char* opt = argv[i];
    if (strcmp(opt, "--preload") == 0) {
      do_preload = true;
      continue;
    }
    if (i + 1 >= argc) usage();
    const char* val = argv[++i];
    if (strcmp(opt, "--conns") == 0) {
      nconns = atoi(val);
    } else if (strcmp(opt, "--time") == 0) {
      duration = atof(val);
    } else if (strcmp(opt, "--keys") == 0) {
      g.keys = (unsigned)atoi(val);
    } else if (strcmp(opt, "--max-value") == 0) {
      g.max_value = (unsigned)atoi(val);
    } else if (strcmp(opt, "--get-ratio") == 0) {
      g.get_ratio = atof(val);
    } else if (strcmp(opt, "--seed") == 0) {
      g.rng = strtoull(val, NULL, 0) | 1;
    } else {
      usage();
    }
  }
  if (nconns < 1 || nconns > MAX_CONNS || duration <= 0 || g.keys == 0 || g.max_value == 0 ||
      g.max_value > MAX_VALUE) {
    usage();
  }
  memset(g.value, 'v', sizeof g.value);
  bench_addr a = parse_addr(spec);
  if (do_preload) preload(&a);

  conn* conns = calloc((size_t)nconns, sizeof(conn));
  if (!conns) die("calloc");
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) die("epoll_create1");
  for (int i = 0; i < nconns; i++) {
    conn* c = &conns[i];
    c->fd = connect_to(&a);
    if (c->fd < 0) die("connect %s (connection %d)", spec, i);
    set_nodelay(c->fd, &a);
    // Non-blocking after connect: connect itself stays the plain blocking call programs make.
    fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) != 0) die("epoll_ctl");
  }

  // Start every connection's first request, then run the closed loop until the deadline.
  double start = now_s(), end = start + duration, t = start;
  for (int i = 0; i < nconns; i++) {
    next_request(&conns[i]);
    if (flush_out(&conns[i]) < 0) die("write");
  }
  struct epoll_event evs[MAX_CONNS];
  while (t < end) {
    int n = epoll_wait(ep, evs, MAX_CONNS, 100);
    if (n < 0 && errno != EINTR) die("epoll_wait");
    for (int i = 0; i < n; i++) {
      conn* c = evs[i].data.ptr;
      if (evs[i].events & EPOLLOUT) {
        int r = flush_out(c);
        if (r < 0) die("write");
        if (r == 0) {
          struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
          epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        }
      }
      if (!(evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) continue;
      ssize_t r = read(c->fd, c->in + c->in_len, sizeof c->in - c->in_len);
      if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      if (r <= 0) die("read (server closed?)");
      c->in_len += (size_t)r;
      if (!response_complete(c)) {
        if (c->in_len == sizeof c->in) die("response too large");
        continue;
      }
      next_request(c);
      int w = flush_out(c);
      if (w < 0) die("write");
      if (w == 1) {
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
      }
    }
    t = now_s();
  }
  uint64_t ops = g.gets + g.sets;
  double elapsed = t - start;
  printf("{\"conns\":%d,\"seconds\":%.6f,\"ops\":%llu,\"ops_per_s\":%.1f,\"gets\":%llu,"
         "\"sets\":%llu,\"hits\":%llu,\"misses\":%llu,\"errors\":%llu}\n",
         nconns, elapsed, (unsigned long long)ops, (double)ops / elapsed,
         (unsigned long long)g.gets, (unsigned long long)g.sets, (unsigned long long)g.hits,
         (unsigned long long)g.misses, (unsigned long long)g.errors);
  return g.errors == 0 ? 0 : 3;
}
