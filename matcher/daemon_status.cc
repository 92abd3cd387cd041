// Status: what slipstreamd --status prints.
#include "matcher/daemon.h"
#include "matcher/daemon_state.h"

#include <fcntl.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <deque>
#include <set>

#include <spdlog/spdlog.h>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <nlohmann/json.hpp>

#include "base/proc_scan.h"
#include "base/socket_info.h"
#include "base/syscalls.h"
#include "matcher/paths.h"
#include "matcher/policy.h"

namespace slipstream::matcher {

void Daemon::OnStatus(Session* s, Message& m) {
  // At most 500 listeners and 500 connections (150 807 bytes together in a test); with the
  // supervisors and namespaces, which are never cut, that may exceed one message, so the lists are
  // halved until the reply fits (DaemonTest.StatusOfABusyDaemonFitsInOneMessage; an oversized
  // reply was dropped with EMSGSIZE, and `slipstreamd --status` got no answer).
  std::string json;
  for (size_t listed = 500;; listed /= 2) {
    json = StatusJson(s->id, listed);
    if (json.size() <= kMaxBody) break;
    if (listed == 0) {
      json.clear();  // the namespaces alone are too long: the client reports a bad reply
      break;
    }
  }
  (void)Send(s, MsgType::kStatusReply, m.header.seq, m.header.pid,
             {reinterpret_cast<const uint8_t*>(json.data()), json.size()});
}

namespace {

// The owner of a process, as /proc shows it (the euid of a dumpable process); nullopt when gone.
std::optional<uid_t> ProcessUid(int32_t pid) {
  struct stat st;
  if (pid <= 0 || stat(("/proc/" + std::to_string(pid)).c_str(), &st) < 0) return std::nullopt;
  return st.st_uid;
}

}  // namespace

int32_t Daemon::ShownPid(uint64_t asking_session, int32_t pid) const {
  // Serving every user, a user other than ours (and root) learns the pids of its own processes
  // only: /proc/net/tcp and /proc/net/unix show every user the addresses and inodes we list, but
  // which process holds a socket only its owner sees (/proc/PID/fd). 0 stands for hidden.
  auto it = sessions_.find(asking_session);
  if (it == sessions_.end()) return 0;
  uid_t uid = it->second->uid;
  if (uid == geteuid() || uid == 0) return pid;
  return ProcessUid(pid) == uid ? pid : 0;
}

std::string Daemon::StatusJson(uint64_t asking_session, size_t max_listed) const {
  auto shown = [this, asking_session](int32_t pid) { return ShownPid(asking_session, pid); };
  nlohmann::json j;
  j["schema"] = kStatusSchema;
  j["running"] = true;
  j["pid"] = getpid();
  j["socket"] = SocketPath(config_.dir);
  j["supervisors"] = nlohmann::json::array();
  for (const auto& [id, s] : sessions_) {
    if (!s->closed && id != asking_session)
      j["supervisors"].push_back({{"pid", shown(s->pid)}, {"uid", s->uid}});
  }
  j["listeners"] = nlohmann::json::array();
  j["listeners_total"] = listeners_.size();
  for (const auto& [ino, l] : listeners_) {
    if (j["listeners"].size() >= max_listed) break;
    j["listeners"].push_back({{"address", l.addr.ToString()},
                              {"pid", shown(l.pid)},
                              {"inode", ino},
                              {"netns", netns_cookie_}});
  }
  size_t total = listeners_.size();
  for (const auto& [ino, l] : remote_listeners_) {
    if (l.netns == netns_cookie_) continue;  // in listeners_ too
    ++total;
    if (j["listeners"].size() >= max_listed) continue;
    j["listeners"].push_back({{"address", l.addr.ToString()},
                              {"pid", shown(l.pid)},
                              {"inode", ino},
                              {"netns", l.netns}});
  }
  j["listeners_total"] = total;
  // Namespaces are named by SO_NETNS_COOKIE (the kernel's, unique while the machine runs).
  j["netns"] = netns_cookie_;
  j["namespaces"] = nlohmann::json::array();
  for (const auto& [cookie, e] : netns_table_) {
    nlohmann::json addrs = nlohmann::json::array();
    for (const auto& a : e.addrs) {
      // "10.0.0.1:0" -> "10.0.0.1", "[fd00::1]:0" -> "fd00::1": addresses, no port.
      std::string text = a.ToString();
      text = text.substr(0, text.rfind(':'));
      if (text.size() >= 2 && text.front() == '[') text = text.substr(1, text.size() - 2);
      addrs.push_back(text);
    }
    j["namespaces"].push_back({{"netns", cookie},
                               {"supervisors", e.sessions},
                               {"sequence_numbers", e.seq_evidence},
                               {"addresses", addrs}});
  }
  j["connections"] = nlohmann::json::array();
  j["connections_total"] = live_.size();
  for (const auto& [ino, c] : live_) {
    if (j["connections"].size() >= max_listed) break;
    j["connections"].push_back(
        {{"client", c.client.ToString()},
         {"server", c.server.ToString()},
         {"client_pid", shown(c.client_pid)},
         {"server_pid", shown(c.server_pid)},
         {"client_unix_inode", c.client_end_ino},
         {"server_unix_inode", c.server_end_ino},
         {"client_netns", c.client_netns},
         {"server_netns", c.server_netns},
         {"evidence", c.by_seq ? "tcp-sequence-numbers" : "netns-4-tuple"},
         {"since",
          std::chrono::duration_cast<std::chrono::seconds>(c.since.time_since_epoch()).count()}});
  }
  j["pending"] = pending_.size();
  j["pairs_total"] = pairs_total_;
  j["relays_total"] = relays_total_;
  j["claims_total"] = claims_total_;
  j["gate_ledgers_waiting"] = orphan_ledgers_.size();
  // Paths are bytes, not UTF-8: a runtime directory named in Latin-1 made the default dump() throw
  // (type_error 316) inside the event loop, and std::terminate took the daemon down. Such bytes
  // become U+FFFD in the reply instead.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace slipstream::matcher
