// Is reading TCP sequence numbers with TCP_REPAIR harmless on a live idle connection?
// Run inside a fresh network namespace so that /proc/net/snmp counts only our segments.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/sockios.h>

#ifndef TCP_REPAIR_OFF_NO_WP
#define TCP_REPAIR_OFF_NO_WP -1
#endif

static long snmp(const char* field) {
  FILE* f = fopen("/proc/net/snmp", "r");
  char names[4096], values[4096];
  long result = -1;
  while (fgets(names, sizeof names, f) && fgets(values, sizeof values, f)) {
    if (strncmp(names, "Tcp:", 4) != 0) continue;
    char *ns, *vs;
    char* n = strtok_r(names, " \n", &ns);
    char* v = strtok_r(values, " \n", &vs);
    while (n && v) {
      if (strcmp(n, field) == 0) result = atol(v);
      n = strtok_r(NULL, " \n", &ns);
      v = strtok_r(NULL, " \n", &vs);
    }
  }
  fclose(f);
  return result;
}

static int read_seqs(int fd, unsigned* snd, unsigned* rcv, int off_mode) {
  int one = 1, q;
  socklen_t len = sizeof(unsigned);
  if (setsockopt(fd, IPPROTO_TCP, TCP_REPAIR, &one, sizeof one) < 0) return -errno;
  q = TCP_SEND_QUEUE;
  setsockopt(fd, IPPROTO_TCP, TCP_REPAIR_QUEUE, &q, sizeof q);
  if (getsockopt(fd, IPPROTO_TCP, TCP_QUEUE_SEQ, snd, &len) < 0) return -errno;
  q = TCP_RECV_QUEUE;
  setsockopt(fd, IPPROTO_TCP, TCP_REPAIR_QUEUE, &q, sizeof q);
  if (getsockopt(fd, IPPROTO_TCP, TCP_QUEUE_SEQ, rcv, &len) < 0) return -errno;
  q = TCP_NO_QUEUE;
  setsockopt(fd, IPPROTO_TCP, TCP_REPAIR_QUEUE, &q, sizeof q);
  if (setsockopt(fd, IPPROTO_TCP, TCP_REPAIR, &off_mode, sizeof off_mode) < 0) return -errno;
  return 0;
}

static int reuse(int fd) {
  int v = -1;
  socklen_t l = sizeof v;
  getsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &v, &l);
  return v;
}

int main(int argc, char** argv) {
  int port = argc > 1 ? atoi(argv[1]) : 40123;
  int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(l, (void*)&a, sizeof a) || listen(l, 8)) return perror("bind/listen"), 1;
  int c = socket(AF_INET, SOCK_STREAM, 0);
  if (connect(c, (void*)&a, sizeof a)) return perror("connect"), 1;
  int s = accept(l, NULL, NULL);
  usleep(100000);  // let the handshake's last segment settle
  unsigned csnd, crcv, ssnd, srcv;
  long out0 = snmp("OutSegs"), in0 = snmp("InSegs");
  int reuse_before = reuse(s);
  int rc1 = read_seqs(c, &csnd, &crcv, TCP_REPAIR_OFF_NO_WP);
  int rc2 = read_seqs(s, &ssnd, &srcv, TCP_REPAIR_OFF_NO_WP);
  int reuse_after = reuse(s);
  usleep(300000);
  long out1 = snmp("OutSegs"), in1 = snmp("InSegs");
  printf("read: client rc=%d snd=%u rcv=%u  server rc=%d snd=%u rcv=%u\n", rc1, csnd, crcv, rc2,
         ssnd, srcv);
  printf("mirror: client.snd==server.rcv %d  client.rcv==server.snd %d\n", csnd == srcv,
         crcv == ssnd);
  printf("segments during the reads + 300 ms: out %ld in %ld (NO_WP)\n", out1 - out0, in1 - in0);
  printf("SO_REUSEADDR of the accepted socket: before %d after %d (repair off resets sk_reuse)\n",
         reuse_before, reuse_after);
  // Data afterwards, both directions.
  char buf[64];
  const char* m1 = "hello from client";
  const char* m2 = "hello from server!";
  ssize_t w1 = write(c, m1, strlen(m1));
  ssize_t r1 = read(s, buf, sizeof buf);
  int ok1 = r1 == (ssize_t)strlen(m1) && memcmp(buf, m1, r1) == 0;
  ssize_t w2 = write(s, m2, strlen(m2));
  ssize_t r2 = read(c, buf, sizeof buf);
  int ok2 = r2 == (ssize_t)strlen(m2) && memcmp(buf, m2, r2) == 0;
  printf("data after: c->s %zd/%zd ok=%d  s->c %zd/%zd ok=%d\n", w1, r1, ok1, w2, r2, ok2);
  // The seqs moved by exactly the bytes sent.
  unsigned csnd2, crcv2;
  read_seqs(c, &csnd2, &crcv2, TCP_REPAIR_OFF_NO_WP);
  printf("after data: client snd +%u rcv +%u\n", csnd2 - csnd, crcv2 - crcv);
  // With unread data queued on the server: the read does not consume it.
  write(c, "abc", 3);
  usleep(50000);
  int inq0 = -1, inq1 = -1;
  ioctl(s, SIOCINQ, &inq0);
  unsigned x, y;
  read_seqs(s, &x, &y, TCP_REPAIR_OFF_NO_WP);
  ioctl(s, SIOCINQ, &inq1);
  ssize_t r3 = read(s, buf, sizeof buf);
  printf("unread data: SIOCINQ before %d after %d, read %zd '%.*s'\n", inq0, inq1, r3, (int)r3, buf);
  // Contrast: TCP_REPAIR_OFF (1) sends a window probe.
  long out2 = snmp("OutSegs");
  read_seqs(c, &x, &y, 0 /* TCP_REPAIR_OFF */);
  usleep(100000);
  long out3 = snmp("OutSegs");
  printf("TCP_REPAIR_OFF instead of NO_WP: out segments %ld\n", out3 - out2);
  int bad = !(rc1 == 0 && rc2 == 0 && csnd == srcv && crcv == ssnd && out1 == out0 && ok1 && ok2 &&
              csnd2 - csnd == strlen(m1) && crcv2 - crcv == strlen(m2) && inq0 == 3 && inq1 == 3 &&
              r3 == 3);
  printf("%s\n", bad ? "FAIL" : "PASS");
  return bad;
}
