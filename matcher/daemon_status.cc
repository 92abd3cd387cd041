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
  std::string json = StatusJson(s->id);
  if (json.size() > kMaxBody) json.resize(0);
  (void)Send(s, MsgType::kStatusReply, m.header.seq, m.header.pid,
             {reinterpret_cast<const uint8_t*>(json.data()), json.size()});
}

std::string Daemon::StatusJson(uint64_t asking_session) const {
  nlohmann::json j;
  j["schema"] = kStatusSchema;
  j["running"] = true;
  j["pid"] = getpid();
  j["socket"] = SocketPath(config_.dir);
  j["supervisors"] = nlohmann::json::array();
  for (const auto& [id, s] : sessions_) {
    if (!s->closed && id != asking_session)
      j["supervisors"].push_back({{"pid", s->pid}, {"uid", s->uid}});
  }
  // Lists are cut so that the reply stays within one message (kMaxBody, 256 KiB): an entry takes
  // at most about 300 bytes; the totals are always exact.
  constexpr size_t kMaxListed = 500;
  j["listeners"] = nlohmann::json::array();
  j["listeners_total"] = listeners_.size();
  for (const auto& [ino, l] : listeners_) {
    if (j["listeners"].size() >= kMaxListed) break;
    j["listeners"].push_back(
        {{"address", l.addr.ToString()}, {"pid", l.pid}, {"inode", ino}, {"netns", netns_cookie_}});
  }
  size_t total = listeners_.size();
  for (const auto& [ino, l] : remote_listeners_) {
    if (l.netns == netns_cookie_) continue;  // in listeners_ too
    ++total;
    if (j["listeners"].size() >= kMaxListed) continue;
    j["listeners"].push_back(
        {{"address", l.addr.ToString()}, {"pid", l.pid}, {"inode", ino}, {"netns", l.netns}});
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
    if (j["connections"].size() >= kMaxListed) break;
    j["connections"].push_back(
        {{"client", c.client.ToString()},
         {"server", c.server.ToString()},
         {"client_pid", c.client_pid},
         {"server_pid", c.server_pid},
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
  return j.dump();
}

}  // namespace slipstream::matcher
