#include "supervisor/trace_log.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <regex>

namespace slipstream::supervisor {
namespace {

using tracer::Call;

// The line format, from the one file that tests/integration/harness.py reads too
// (supervisor/trace_line.re, Python syntax). std::regex has no named groups: they become plain
// ones, numbered in the same order (time, tid, call, args, result, note).
std::string TraceLinePattern() {
  std::ifstream in(SLIPSTREAM_TRACE_LINE_RE);
  std::string pattern;
  std::getline(in, pattern);
  return std::regex_replace(pattern, std::regex(R"(\(\?P<\w+>)"), "(");
}
const std::regex& TraceLine() {
  static const std::regex line(TraceLinePattern());
  return line;
}

TEST(TraceLinePatternTest, IsReadFromTheSharedFile) {
  std::string pattern = TraceLinePattern();
  ASSERT_FALSE(pattern.empty()) << "cannot read " << SLIPSTREAM_TRACE_LINE_RE;
  EXPECT_EQ(pattern.find("?P<"), std::string::npos) << pattern;
  EXPECT_EQ(std::regex(pattern).mark_count(), 6u);  // time, tid, call, args, result, note
}

// 12:34:56.123456 local time, on an arbitrary day.
std::chrono::system_clock::time_point At123456() {
  tm local{};
  local.tm_year = 2024 - 1900;
  local.tm_mon = 4;
  local.tm_mday = 17;
  local.tm_hour = 12;
  local.tm_min = 34;
  local.tm_sec = 56;
  local.tm_isdst = -1;
  return std::chrono::system_clock::from_time_t(mktime(&local)) + std::chrono::microseconds(123456);
}

TraceRecord Record(Call call, std::string args, TraceRecord::Outcome outcome) {
  TraceRecord r;
  r.when = At123456();
  r.call = call;
  r.tid = 4242;
  r.args = std::move(args);
  r.outcome = outcome;
  return r;
}

TEST(TraceLogTest, KernelOutcome) {
  auto r =
      Record(Call::kSocket, "AF_INET, SOCK_STREAM|SOCK_CLOEXEC, 0", TraceRecord::Outcome::kKernel);
  EXPECT_EQ(TraceLog::Format(r),
            "12:34:56.123456 [4242] socket(AF_INET, SOCK_STREAM|SOCK_CLOEXEC, 0) = ? (kernel)");
}

TEST(TraceLogTest, ValueOutcomeWithNote) {
  auto r = Record(Call::kAccept4, "3, SOCK_CLOEXEC", TraceRecord::Outcome::kValue);
  r.value = 5;
  r.note = "(peer 127.0.0.1:51234)";
  EXPECT_EQ(TraceLog::Format(r),
            "12:34:56.123456 [4242] accept4(3, SOCK_CLOEXEC) = 5 (peer 127.0.0.1:51234)");
}

TEST(TraceLogTest, ErrorOutcomeNamesTheErrno) {
  auto r = Record(Call::kConnect, "4, 127.0.0.1:9", TraceRecord::Outcome::kError);
  r.err = ECONNREFUSED;
  EXPECT_EQ(
      TraceLog::Format(r),
      "12:34:56.123456 [4242] connect(4, 127.0.0.1:9) = -1 ECONNREFUSED (Connection refused)");
  r.err = 999;
  EXPECT_EQ(TraceLog::Format(r),
            "12:34:56.123456 [4242] connect(4, 127.0.0.1:9) = -1 errno 999 (Unknown error 999)");
}

TEST(TraceLogTest, AbandonedOutcome) {
  auto r = Record(Call::kAccept, "3", TraceRecord::Outcome::kAbandoned);
  EXPECT_EQ(TraceLog::Format(r), "12:34:56.123456 [4242] accept(3) = ? (interrupted)");
}

TEST(TraceLogTest, EveryOutcomeParsesAsTheHarnessExpects) {
  struct Case {
    TraceRecord::Outcome outcome;
    int64_t value;
    int err;
    const char* note;
    const char* result;
  };
  const Case cases[] = {
      {TraceRecord::Outcome::kKernel, 0, 0, "", "? (kernel)"},
      {TraceRecord::Outcome::kAbandoned, 0, 0, "", "? (interrupted)"},
      {TraceRecord::Outcome::kValue, 0, 0, "(127.0.0.1:80)", "0"},
      {TraceRecord::Outcome::kValue, 17, 0, "", "17"},
      {TraceRecord::Outcome::kError, 0, EINPROGRESS, "switched (x)",
       "-1 EINPROGRESS (Operation now in progress)"},
      {TraceRecord::Outcome::kError, 0, 512, "", "-1 ERESTARTSYS (Unknown error 512)"},
  };
  for (const Case& c : cases) {
    auto r = Record(Call::kGetpeername, "7", c.outcome);
    r.value = c.value;
    r.err = c.err;
    r.note = c.note;
    std::string line = TraceLog::Format(r);
    std::smatch m;
    ASSERT_TRUE(std::regex_match(line, m, TraceLine())) << line;
    EXPECT_EQ(m[2], "4242");
    EXPECT_EQ(m[3], "getpeername");
    EXPECT_EQ(m[4], "7");
    EXPECT_EQ(m[5], c.result) << line;
    EXPECT_EQ(m[6], c.note) << line;
  }
}

TEST(TraceLogTest, WriteAppendsOneLinePerRecord) {
  char* buf = nullptr;
  size_t size = 0;
  FILE* out = open_memstream(&buf, &size);
  ASSERT_NE(out, nullptr);
  {
    TraceLog log(out);
    EXPECT_TRUE(log.enabled());
    log.Write(Record(Call::kListen, "3, 128", TraceRecord::Outcome::kKernel));
    auto r = Record(Call::kShutdown, "3, SHUT_WR", TraceRecord::Outcome::kValue);
    log.Write(r);
  }
  fclose(out);
  EXPECT_EQ(std::string(buf, size),
            "12:34:56.123456 [4242] listen(3, 128) = ? (kernel)\n"
            "12:34:56.123456 [4242] shutdown(3, SHUT_WR) = 0\n");
  free(buf);
}

TEST(TraceLogTest, DisabledWithoutOutput) {
  TraceLog log(nullptr);
  EXPECT_FALSE(log.enabled());
  log.Write(Record(Call::kListen, "3, 128", TraceRecord::Outcome::kKernel));  // no crash, no-op
}

TEST(TraceLogTest, SocketTypeText) {
  EXPECT_EQ(SocketTypeText(SOCK_STREAM), "SOCK_STREAM");
  EXPECT_EQ(SocketTypeText(SOCK_DGRAM), "SOCK_DGRAM");
  EXPECT_EQ(SocketTypeText(SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC),
            "SOCK_STREAM|SOCK_NONBLOCK|SOCK_CLOEXEC");
  EXPECT_EQ(SocketTypeText(SOCK_STREAM | SOCK_CLOEXEC), "SOCK_STREAM|SOCK_CLOEXEC");
  EXPECT_EQ(SocketTypeText(5), "5");
}

TEST(TraceLogTest, AcceptFlagsText) {
  EXPECT_EQ(AcceptFlagsText(0), "0");
  EXPECT_EQ(AcceptFlagsText(SOCK_CLOEXEC), "SOCK_CLOEXEC");
  EXPECT_EQ(AcceptFlagsText(SOCK_NONBLOCK | SOCK_CLOEXEC), "SOCK_NONBLOCK|SOCK_CLOEXEC");
  EXPECT_EQ(AcceptFlagsText(1), "1");
  EXPECT_EQ(AcceptFlagsText(SOCK_CLOEXEC | 1), "SOCK_CLOEXEC|1");
}

TEST(TraceLogTest, SockoptText) {
  EXPECT_EQ(SockoptText(SOL_SOCKET, SO_REUSEADDR), "SOL_SOCKET, SO_REUSEADDR");
  EXPECT_EQ(SockoptText(SOL_SOCKET, SO_ERROR), "SOL_SOCKET, SO_ERROR");
  EXPECT_EQ(SockoptText(IPPROTO_TCP, TCP_NODELAY), "IPPROTO_TCP, TCP_NODELAY");
  EXPECT_EQ(SockoptText(IPPROTO_IPV6, IPV6_V6ONLY), "IPPROTO_IPV6, IPV6_V6ONLY");
  EXPECT_EQ(SockoptText(IPPROTO_IP, IP_TOS), "IPPROTO_IP, IP_TOS");
  EXPECT_EQ(SockoptText(SOL_SOCKET, 9999), "SOL_SOCKET, 9999");
  EXPECT_EQ(SockoptText(999, 5), "999, 5");
}

TEST(TraceLogTest, ShutdownHowText) {
  EXPECT_EQ(ShutdownHowText(SHUT_RD), "SHUT_RD");
  EXPECT_EQ(ShutdownHowText(SHUT_WR), "SHUT_WR");
  EXPECT_EQ(ShutdownHowText(SHUT_RDWR), "SHUT_RDWR");
  EXPECT_EQ(ShutdownHowText(7), "7");
}

}  // namespace
}  // namespace slipstream::supervisor
