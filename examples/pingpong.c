// pingpong: the example program of `scripts/demo`. An ordinary TCP program that knows nothing
// about Slipstream: a server that echoes, and a client that measures round-trip latency and
// streaming throughput, then reports what its socket looks like from the inside and the outside.
//
//   pingpong server PORT_FILE           listen on 127.0.0.1 (ephemeral port), serve clients forever
//   pingpong client PORT [ROUNDS] [MiB]
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double Now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int ReadFull(int fd, char* buf, size_t n) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = read(fd, buf + got, n - got);
    if (r <= 0) return -1;
    got += (size_t)r;
  }
  return 0;
}

static int WriteFull(int fd, const char* buf, size_t n) {
  size_t put = 0;
  while (put < n) {
    ssize_t w = write(fd, buf + put, n - put);
    if (w <= 0) return -1;
    put += (size_t)w;
  }
  return 0;
}

static void* Serve(void* arg) {
  int fd = (int)(intptr_t)arg;
  static __thread char buf[1 << 16];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n <= 0 || WriteFull(fd, buf, (size_t)n) < 0) break;
  }
  close(fd);
  return NULL;
}

static int Server(const char* port_file) {
  int l = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof(a);
  if (bind(l, (struct sockaddr*)&a, sizeof(a)) < 0 || listen(l, 64) < 0 ||
      getsockname(l, (struct sockaddr*)&a, &len) < 0) {
    perror("server");
    return 1;
  }
  FILE* f = fopen(port_file, "w");
  fprintf(f, "%d\n", ntohs(a.sin_port));
  fclose(f);
  for (;;) {
    int c = accept(l, NULL, NULL);
    if (c < 0) continue;
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    pthread_t t;
    pthread_create(&t, NULL, Serve, (void*)(intptr_t)c);
    pthread_detach(t);
  }
}

static int Client(int port, int rounds, int mib) {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_port = htons((uint16_t)port),
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (connect(s, (struct sockaddr*)&a, sizeof(a)) < 0) {
    perror("connect");
    return 1;
  }
  int one = 1;
  setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

  char byte = 'x';
  double t0 = Now();
  for (int i = 0; i < rounds; ++i) {
    if (WriteFull(s, &byte, 1) < 0 || ReadFull(s, &byte, 1) < 0) return 1;
  }
  double rtt_us = (Now() - t0) / rounds * 1e6;

  // Streaming: a writer thread would be simpler to read, but echoing back through the same socket
  // keeps the program single-threaded: send 64 KiB, read 64 KiB back, repeat.
  static char buf[1 << 16];
  memset(buf, 'y', sizeof(buf));
  size_t chunks = (size_t)mib * 16;
  t0 = Now();
  for (size_t i = 0; i < chunks; ++i) {
    if (WriteFull(s, buf, sizeof(buf)) < 0 || ReadFull(s, buf, sizeof(buf)) < 0) return 1;
  }
  double mib_s = mib / (Now() - t0);

  // What the program sees: a TCP socket with TCP addresses...
  struct sockaddr_in self, peer;
  socklen_t len = sizeof(self);
  getsockname(s, (struct sockaddr*)&self, &len);
  len = sizeof(peer);
  getpeername(s, (struct sockaddr*)&peer, &len);
  int domain = 0, nodelay = 0;
  len = sizeof(domain);
  getsockopt(s, SOL_SOCKET, SO_DOMAIN, &domain, &len);
  len = sizeof(nodelay);
  getsockopt(s, IPPROTO_TCP, TCP_NODELAY, &nodelay, &len);
  // ...and what the kernel says: is the inode behind our fd an AF_UNIX socket?
  char path[64], link[64] = {0};
  snprintf(path, sizeof(path), "/proc/self/fd/%d", s);
  if (readlink(path, link, sizeof(link) - 1) < 0) strcpy(link, "?");
  unsigned long ino = 0;
  sscanf(link, "socket:[%lu]", &ino);
  int in_unix = 0;
  FILE* f = fopen("/proc/net/unix", "r");
  char line[512];
  while (f && fgets(line, sizeof(line), f)) {
    unsigned long field = 0;
    if (sscanf(line, "%*s %*s %*s %*s %*s %*s %lu", &field) == 1 && field == ino) in_unix = 1;
  }
  if (f) fclose(f);

  char self_text[32], peer_text[32];
  inet_ntop(AF_INET, &self.sin_addr, self_text, sizeof(self_text));
  inet_ntop(AF_INET, &peer.sin_addr, peer_text, sizeof(peer_text));
  printf("  program sees : %s:%d -> %s:%d, SO_DOMAIN=%s, TCP_NODELAY=%d\n", self_text,
         ntohs(self.sin_port), peer_text, ntohs(peer.sin_port),
         domain == AF_INET ? "AF_INET" : "other", nodelay);
  printf("  kernel says  : fd %s is %s\n", link,
         in_unix ? "an AF_UNIX socket (listed in /proc/net/unix)" : "a TCP socket");
  printf("  round trip   : %.1f us (%d rounds of 1 byte)\n", rtt_us, rounds);
  printf("  echo stream  : %.0f MiB/s (%d MiB out and back in 64 KiB chunks)\n", mib_s, mib);
  close(s);
  return 0;
}

int main(int argc, char** argv) {
  if (argc >= 3 && strcmp(argv[1], "server") == 0) return Server(argv[2]);
  if (argc >= 3 && strcmp(argv[1], "client") == 0) {
    return Client(atoi(argv[2]), argc > 3 ? atoi(argv[3]) : 20000, argc > 4 ? atoi(argv[4]) : 512);
  }
  fprintf(stderr, "usage: pingpong server PORT_FILE | pingpong client PORT [ROUNDS] [MiB]\n");
  return 2;
}
