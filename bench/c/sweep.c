// ss-sweep: ping-pong and streaming sweep over one connection, message sizes 1 B ... 4 MiB.
//
//   ss-sweep server ADDR
//   ss-sweep client ADDR [--modes pingpong,stream] [--min BYTES] [--max BYTES] [--factor F]
//                        [--time SECONDS]
//
// ADDR is tcp:HOST:PORT or unix:PATH (see bench_common.h). The same binary runs in every variant
// of the benchmark (plain TCP, both sides under slipstream-trace, one side only, native AF_UNIX),
// so any difference comes from the transport alone.
//
// Protocol: before each measurement the client sends a header {magic, mode, size, count}.
//   pingpong: count times, the client writes `size` bytes and the server echoes them back
//             (NetPIPE's pattern). One-way latency = elapsed / count / 2; throughput in the
//             NetPIPE sense = size / one-way latency.
//   stream:   the client writes count * size bytes in `size`-byte writes, the server reads them
//             all and answers one byte; throughput = bytes / elapsed (Netperf's TCP_STREAM
//             pattern).
// The count per size is calibrated so that each point takes about --time seconds; calibration
// runs double as warm-up.
//
// Output: one JSON object per line on stdout, e.g.
//   {"mode":"pingpong","size":64,"count":52000,"seconds":0.2,"latency_us":1.9,"mbps":268.1}
#define _GNU_SOURCE  // accept4
#include <stdbool.h>

#include "bench_common.h"

enum { kMagic = 0x53535750 /* "SSWP" */, kEnd = 0, kPingPong = 1, kStream = 2 };

typedef struct {
  uint32_t magic;
  uint32_t mode;
  uint64_t size;
  uint64_t count;
} header;

#define MAX_SIZE (64u << 20)

static char* alloc_buf(size_t size) {
  char* b = malloc(size);
  if (!b) die("malloc %zu", size);
  // Touch every page now so first-use page faults do not land inside a measurement.
  memset(b, 'x', size);
  return b;
}

// ---- server ---------------------------------------------------------------------------------

static void serve_connection(int fd, char* buf, size_t bufsize) {
  header h;
  while (read_all(fd, &h, sizeof h) == 0) {
    if (h.magic != kMagic || h.size == 0 || h.size > bufsize) {
      fprintf(stderr, "ss-sweep server: bad header (magic %x size %llu)\n", h.magic,
              (unsigned long long)h.size);
      return;
    }
    if (h.mode == kEnd) return;
    if (h.mode == kPingPong) {
      for (uint64_t i = 0; i < h.count; i++) {
        if (read_all(fd, buf, h.size) != 0 || write_all(fd, buf, h.size) != 0) return;
      }
    } else if (h.mode == kStream) {
      uint64_t left = h.size * h.count;
      while (left > 0) {
        ssize_t n = read(fd, buf, left < bufsize ? left : bufsize);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;
        left -= (uint64_t)n;
      }
      char ack = 'k';
      if (write_all(fd, &ack, 1) != 0) return;
    } else {
      fprintf(stderr, "ss-sweep server: unknown mode %u\n", h.mode);
      return;
    }
  }
}

static _Noreturn void run_server(const char* spec) {
  bench_addr a = parse_addr(spec);
  int lfd = listen_on(&a, 16);
  char* buf = alloc_buf(MAX_SIZE);
  // Connections are served one at a time: the harness runs one client at a time, and a server
  // that never competes with itself keeps the measurement about the transport.
  for (;;) {
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      die("accept4");
    }
    set_nodelay(fd, &a);
    serve_connection(fd, buf, MAX_SIZE);
    close(fd);
  }
}

// ---- client ---------------------------------------------------------------------------------

// Runs one measurement of `count` messages of `size` bytes; returns elapsed seconds.
static double measure(int fd, uint32_t mode, size_t size, uint64_t count, char* buf) {
  header h = {kMagic, mode, size, count};
  if (write_all(fd, &h, sizeof h) != 0) die("write header");
  double t0 = now_s();
  if (mode == kPingPong) {
    for (uint64_t i = 0; i < count; i++) {
      if (write_all(fd, buf, size) != 0) die("pingpong write (size %zu)", size);
      if (read_all(fd, buf, size) != 0) die("pingpong read (size %zu)", size);
    }
  } else {
    for (uint64_t i = 0; i < count; i++) {
      if (write_all(fd, buf, size) != 0) die("stream write (size %zu)", size);
    }
    char ack;
    if (read_all(fd, &ack, 1) != 0) die("stream ack");
  }
  return now_s() - t0;
}

static _Noreturn void usage(void) {
  fprintf(stderr,
          "usage: ss-sweep server ADDR\n"
          "       ss-sweep client ADDR [--modes pingpong,stream] [--min BYTES] [--max BYTES]\n"
          "                            [--factor F] [--time SECONDS]\n"
          "ADDR: tcp:HOST:PORT or unix:PATH\n");
  exit(2);
}

static int run_client(const char* spec, int argc, char** argv) {
  bool do_pingpong = true, do_stream = true;
  size_t min_size = 1, max_size = 4u << 20;
  unsigned factor = 2;
  double target = 0.2;
  for (int i = 0; i < argc; i++) {
    const char* opt = argv[i];
    if (i + 1 >= argc) usage();
    const char* val = argv[++i];
    if (strcmp(opt, "--modes") == 0) {
      do_pingpong = strstr(val, "pingpong") != NULL;
      do_stream = strstr(val, "stream") != NULL;
    } else if (strcmp(opt, "--min") == 0) {
      min_size = strtoull(val, NULL, 0);
    } else if (strcmp(opt, "--max") == 0) {
      max_size = strtoull(val, NULL, 0);
    } else if (strcmp(opt, "--factor") == 0) {
      factor = (unsigned)atoi(val);
    } else if (strcmp(opt, "--time") == 0) {
      target = atof(val);
    } else {
      usage();
    }
  }
  if (min_size == 0 || max_size > MAX_SIZE || min_size > max_size || factor < 2 || target <= 0) {
    usage();
  }

  bench_addr a = parse_addr(spec);
  int fd = connect_to(&a);
  if (fd < 0) die("connect %s", spec);
  set_nodelay(fd, &a);
  char* buf = alloc_buf(max_size);

  for (int m = 0; m < 2; m++) {
    uint32_t mode = m == 0 ? kPingPong : kStream;
    if ((mode == kPingPong && !do_pingpong) || (mode == kStream && !do_stream)) continue;
    for (size_t size = min_size; size <= max_size; size *= factor) {
      // Calibrate: grow the count until one run takes a tenth of the target, then scale it. A
      // single slow run (a first-use page fault, a stray wake-up) can make the estimate far too
      // low, so the measured run is repeated, rescaled, while it falls well short of the target.
      uint64_t count = 1;
      double t = measure(fd, mode, size, count, buf);
      while (t < target / 10 && count < (1ull << 30)) {
        count *= 4;
        t = measure(fd, mode, size, count, buf);
      }
      uint64_t final_count = count;
      for (int attempt = 0; attempt < 4; attempt++) {
        final_count = (uint64_t)((double)final_count * target / (t > 0 ? t : 1e-9)) + 1;
        t = measure(fd, mode, size, final_count, buf);
        if (t >= target / 2) break;
      }
      double mbps = (double)size * 8.0 * (double)final_count / t / 1e6;
      // For ping-pong, NetPIPE's throughput is size per one-way time: twice the data moved.
      if (mode == kPingPong) mbps *= 2.0;
      // latency_us: one-way time for ping-pong, time per write for streaming.
      double per_msg_us = t / (double)final_count * 1e6;
      if (mode == kPingPong) per_msg_us /= 2.0;
      printf("{\"mode\":\"%s\",\"size\":%zu,\"count\":%llu,\"seconds\":%.6f,"
             "\"latency_us\":%.4f,\"mbps\":%.3f}\n",
             mode == kPingPong ? "pingpong" : "stream", size, (unsigned long long)final_count, t,
             per_msg_us, mbps);
      fflush(stdout);
      if (size > max_size / factor) break;  // no overflow past max
    }
  }
  header end = {kMagic, kEnd, 1, 0};
  write_all(fd, &end, sizeof end);
  close(fd);
  return 0;
}

int main(int argc, char** argv) {
  if (argc < 3) usage();
  if (strcmp(argv[1], "server") == 0) run_server(argv[2]);
  if (strcmp(argv[1], "client") == 0) return run_client(argv[2], argc - 3, argv + 3);
  usage();
}
