#include "supervisor/trace_log.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cstring>
#include <ctime>

#include "base/errno_name.h"

namespace slipstream::supervisor {
namespace {

std::string TimeText(std::chrono::system_clock::time_point when) {
  auto since_epoch = when.time_since_epoch();
  auto secs = std::chrono::duration_cast<std::chrono::seconds>(since_epoch);
  auto usecs = std::chrono::duration_cast<std::chrono::microseconds>(since_epoch - secs);
  time_t t = static_cast<time_t>(secs.count());
  tm local{};
  localtime_r(&t, &local);
  char buf[32];
  snprintf(buf, sizeof(buf), "%02d:%02d:%02d.%06ld", local.tm_hour, local.tm_min, local.tm_sec,
           static_cast<long>(usecs.count()));
  return buf;
}

}  // namespace

std::string TraceLog::Format(const TraceRecord& r) {
  std::string line = TimeText(r.when) + " [" + std::to_string(r.tid) + "] " +
                     tracer::CallName(r.call) + "(" + r.args + ") = ";
  switch (r.outcome) {
    case TraceRecord::Outcome::kKernel:
      line += "? (kernel)";
      break;
    case TraceRecord::Outcome::kValue:
      line += std::to_string(r.value);
      break;
    case TraceRecord::Outcome::kError: {
      const char* name = ErrnoName(r.err);
      line += "-1 ";
      line += std::strcmp(name, "E?") == 0 ? "errno " + std::to_string(r.err) : std::string(name);
      line += " (";
      line += strerror(r.err);
      line += ")";
      break;
    }
    case TraceRecord::Outcome::kAbandoned:
      line += "? (interrupted)";
      break;
  }
  if (!r.note.empty()) line += " " + r.note;
  return line;
}

void TraceLog::Write(const TraceRecord& record) {
  if (out_ == nullptr) return;
  std::string line = Format(record);
  line += '\n';
  fwrite(line.data(), 1, line.size(), out_);
  fflush(out_);
}

std::string SocketTypeText(int type) {
  std::string text;
  switch (type & 0xf) {
    case SOCK_STREAM:
      text = "SOCK_STREAM";
      break;
    case SOCK_DGRAM:
      text = "SOCK_DGRAM";
      break;
    default:
      text = std::to_string(type & 0xf);
  }
  if (type & SOCK_NONBLOCK) text += "|SOCK_NONBLOCK";
  if (type & SOCK_CLOEXEC) text += "|SOCK_CLOEXEC";
  return text;
}

std::string AcceptFlagsText(int flags) {
  if (flags == 0) return "0";
  std::string text;
  auto add = [&text](const char* s) { text += text.empty() ? s : std::string("|") + s; };
  if (flags & SOCK_NONBLOCK) add("SOCK_NONBLOCK");
  if (flags & SOCK_CLOEXEC) add("SOCK_CLOEXEC");
  int rest = flags & ~(SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (rest) add(std::to_string(rest).c_str());
  return text;
}

std::string SockoptText(int level, int name) {
  const char* level_name = nullptr;
  const char* opt_name = nullptr;
  switch (level) {
    case SOL_SOCKET:
      level_name = "SOL_SOCKET";
      switch (name) {
        case SO_REUSEADDR:
          opt_name = "SO_REUSEADDR";
          break;
        case SO_REUSEPORT:
          opt_name = "SO_REUSEPORT";
          break;
        case SO_KEEPALIVE:
          opt_name = "SO_KEEPALIVE";
          break;
        case SO_ERROR:
          opt_name = "SO_ERROR";
          break;
        case SO_TYPE:
          opt_name = "SO_TYPE";
          break;
        case SO_DOMAIN:
          opt_name = "SO_DOMAIN";
          break;
        case SO_PROTOCOL:
          opt_name = "SO_PROTOCOL";
          break;
        case SO_RCVBUF:
          opt_name = "SO_RCVBUF";
          break;
        case SO_SNDBUF:
          opt_name = "SO_SNDBUF";
          break;
        case SO_LINGER:
          opt_name = "SO_LINGER";
          break;
        case SO_ACCEPTCONN:
          opt_name = "SO_ACCEPTCONN";
          break;
        case SO_PEERCRED:
          opt_name = "SO_PEERCRED";
          break;
        case SO_RCVTIMEO_OLD:
          opt_name = "SO_RCVTIMEO";
          break;
        case SO_SNDTIMEO_OLD:
          opt_name = "SO_SNDTIMEO";
          break;
        case SO_BROADCAST:
          opt_name = "SO_BROADCAST";
          break;
      }
      break;
    case IPPROTO_TCP:
      level_name = "IPPROTO_TCP";
      switch (name) {
        case TCP_NODELAY:
          opt_name = "TCP_NODELAY";
          break;
        case TCP_CORK:
          opt_name = "TCP_CORK";
          break;
        case TCP_INFO:
          opt_name = "TCP_INFO";
          break;
        case TCP_KEEPIDLE:
          opt_name = "TCP_KEEPIDLE";
          break;
        case TCP_KEEPINTVL:
          opt_name = "TCP_KEEPINTVL";
          break;
        case TCP_KEEPCNT:
          opt_name = "TCP_KEEPCNT";
          break;
        case TCP_MAXSEG:
          opt_name = "TCP_MAXSEG";
          break;
        case TCP_USER_TIMEOUT:
          opt_name = "TCP_USER_TIMEOUT";
          break;
        case TCP_QUICKACK:
          opt_name = "TCP_QUICKACK";
          break;
        case TCP_DEFER_ACCEPT:
          opt_name = "TCP_DEFER_ACCEPT";
          break;
        case TCP_FASTOPEN:
          opt_name = "TCP_FASTOPEN";
          break;
        case TCP_CONGESTION:
          opt_name = "TCP_CONGESTION";
          break;
      }
      break;
    case IPPROTO_IP:
      level_name = "IPPROTO_IP";
      if (name == IP_TOS) opt_name = "IP_TOS";
      if (name == IP_TTL) opt_name = "IP_TTL";
      break;
    case IPPROTO_IPV6:
      level_name = "IPPROTO_IPV6";
      if (name == IPV6_V6ONLY) opt_name = "IPV6_V6ONLY";
      if (name == IPV6_TCLASS) opt_name = "IPV6_TCLASS";
      break;
  }
  std::string text = level_name ? level_name : std::to_string(level);
  text += ", ";
  text += opt_name ? opt_name : std::to_string(name);
  return text;
}

std::string ShutdownHowText(int how) {
  switch (how) {
    case SHUT_RD:
      return "SHUT_RD";
    case SHUT_WR:
      return "SHUT_WR";
    case SHUT_RDWR:
      return "SHUT_RDWR";
    default:
      return std::to_string(how);
  }
}

}  // namespace slipstream::supervisor
