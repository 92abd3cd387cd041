// ss-connrate: connection rate, one cycle = socket + connect + one echo + close.
//
//   ss-connrate server ADDR
//   ss-connrate client ADDR [--time SECONDS] [--size BYTES]
//
// ADDR is tcp:HOST:PORT or unix:PATH. This is the case where Slipstream pays most: every cycle
// goes through the trapped socket and connect calls (and accept on the server), and once the
// switch is active, through the matcher as well. The client times the three phases separately so
// the report can say what dominates the set-up cost:
//   connect_us  socket() + connect() returning
//   echo_us     write `size` bytes + read the echo (includes the server's accept and first read)
//   close_us    close()
//
// Output (one JSON line): {"cycles":N,"seconds":T,"per_s":R,"connect_us":..,"echo_us":..,
//                          "close_us":..,"p50_us":..,"p99_us":..,"errors":E}
#define _GNU_SOURCE  // accept4
#include "bench_common.h"

#define MAX_MSG 65536
#define MAX_SAMPLES (1u << 20)

static _Noreturn void run_server(const char* spec) {
  bench_addr a = parse_addr(spec);
  int lfd = listen_on(&a, 1024);
  char buf[MAX_MSG];
  // One connection at a time, as the client makes them: accept, read one message, echo, close.
  for (;;) {
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      die("accept4");
    }
    ssize_t n;
    do {
      n = read(fd, buf, sizeof buf);
    } while (n < 0 && errno == EINTR);
    if (n > 0) write_all(fd, buf, (size_t)n);
    close(fd);
  }
}

static int cmp_double(const void* x, const void* y) {
  double a = *(const double*)x, b = *(const double*)y;
  return (a > b) - (a < b);
}

static _Noreturn void usage(void) {
  fprintf(stderr,
          "usage: ss-connrate server ADDR\n"
          "       ss-connrate client ADDR [--time SECONDS] [--size BYTES]\n");
  exit(2);
}

static int run_client(const char* spec, int argc, char** argv) {
  double duration = 1.0;
  size_t size = 64;
  for (int i = 0; i + 1 < argc; i += 2) {
    if (strcmp(argv[i], "--time") == 0) {
      duration = atof(argv[i + 1]);
    } else if (strcmp(argv[i], "--size") == 0) {
      size = strtoull(argv[i + 1], NULL, 0);
    } else {
      usage();
    }
  }
  if ((argc & 1) || duration <= 0 || size == 0 || size > MAX_MSG) usage();

  bench_addr a = parse_addr(spec);
  char out[MAX_MSG], in[MAX_MSG];
  memset(out, 'c', size);
  double* cycle_us = malloc(MAX_SAMPLES * sizeof(double));
  if (!cycle_us) die("malloc");

  // A short unrecorded warm-up so the first cycle's one-off costs (page faults, the matcher
  // being started on demand) do not count.
  for (int i = 0; i < 20; i++) {
    int fd = connect_to(&a);
    if (fd < 0) die("warm-up connect %s", spec);
    if (write_all(fd, out, size) != 0 || read_all(fd, in, size) != 0) die("warm-up echo");
    close(fd);
  }

  uint64_t cycles = 0, errors = 0;
  double sum_connect = 0, sum_echo = 0, sum_close = 0;
  double start = now_s(), end = start + duration, t = start;
  while (t < end && cycles < MAX_SAMPLES) {
    double t0 = now_s();
    int fd = connect_to(&a);
    double t1 = now_s();
    if (fd < 0) {
      // Count and go on (e.g. EADDRNOTAVAIL if ephemeral ports ran out); the report shows it.
      if (errors++ == 0) perror("ss-connrate: connect");
      t = t1;
      continue;
    }
    if (write_all(fd, out, size) != 0 || read_all(fd, in, size) != 0) {
      if (errors++ == 0) perror("ss-connrate: echo");
      close(fd);
      t = now_s();
      continue;
    }
    double t2 = now_s();
    close(fd);
    t = now_s();
    sum_connect += t1 - t0;
    sum_echo += t2 - t1;
    sum_close += t - t2;
    cycle_us[cycles++] = (t - t0) * 1e6;
  }
  double elapsed = t - start;
  if (cycles == 0) die("no successful cycle");
  qsort(cycle_us, cycles, sizeof(double), cmp_double);
  printf("{\"cycles\":%llu,\"seconds\":%.6f,\"per_s\":%.1f,\"connect_us\":%.3f,\"echo_us\":%.3f,"
         "\"close_us\":%.3f,\"p50_us\":%.3f,\"p99_us\":%.3f,\"errors\":%llu}\n",
         (unsigned long long)cycles, elapsed, (double)cycles / elapsed,
         sum_connect / (double)cycles * 1e6, sum_echo / (double)cycles * 1e6,
         sum_close / (double)cycles * 1e6, cycle_us[cycles / 2], cycle_us[cycles * 99 / 100],
         (unsigned long long)errors);
  return errors == 0 ? 0 : 3;
}

int main(int argc, char** argv) {
  if (argc < 3) usage();
  if (strcmp(argv[1], "server") == 0) run_server(argv[2]);
  if (strcmp(argv[1], "client") == 0) return run_client(argv[2], argc - 3, argv + 3);
  usage();
}
