#include "matcher/policy.h"

#include <gtest/gtest.h>

namespace slipstream::matcher {
namespace {

TcpSocketInfo Listener(const std::string& addr, bool v6only = false, uint64_t inode = 1) {
  TcpSocketInfo info;
  info.local = *SockAddr::Parse(addr);
  info.inode = inode;
  info.v6only = v6only;
  return info;
}

SockAddr A(const std::string& text) { return *SockAddr::Parse(text); }

TEST(ListenerCanReceive, ExactAddressAndPort) {
  EXPECT_TRUE(ListenerCanReceive(Listener("127.0.0.1:80"), A("127.0.0.1:80")));
  EXPECT_FALSE(ListenerCanReceive(Listener("127.0.0.1:80"), A("127.0.0.1:81")));
  EXPECT_FALSE(ListenerCanReceive(Listener("127.0.0.2:80"), A("127.0.0.1:80")));
}

TEST(ListenerCanReceive, Wildcards) {
  EXPECT_TRUE(ListenerCanReceive(Listener("0.0.0.0:80"), A("127.0.0.1:80")));
  EXPECT_FALSE(ListenerCanReceive(Listener("0.0.0.0:80"), A("[::1]:80")));
  EXPECT_TRUE(ListenerCanReceive(Listener("[::]:80"), A("[::1]:80")));
  // A dual-stack IPv6 wildcard takes IPv4 connections too, unless IPV6_V6ONLY.
  EXPECT_TRUE(ListenerCanReceive(Listener("[::]:80"), A("127.0.0.1:80")));
  EXPECT_FALSE(ListenerCanReceive(Listener("[::]:80", /*v6only=*/true), A("127.0.0.1:80")));
}

TEST(ListenerCanReceive, V4MappedIsTheSameAddress) {
  EXPECT_TRUE(ListenerCanReceive(Listener("[::ffff:127.0.0.1]:80"), A("127.0.0.1:80")));
  EXPECT_TRUE(ListenerCanReceive(Listener("127.0.0.1:80"), A("[::ffff:127.0.0.1]:80")));
}

// Each row was observed on Linux 6.18: connect() to the unspecified address, then getpeername().
TEST(KernelDestination, TheUnspecifiedAddressMeansThisHost) {
  struct Row {
    const char* dest;
    const char* bound;  // nullptr: unbound
    const char* reached;
  };
  const Row rows[] = {
      {"0.0.0.0:80", nullptr, "127.0.0.1:80"},
      {"0.0.0.0:80", "0.0.0.0:0", "127.0.0.1:80"},
      {"0.0.0.0:80", "127.0.0.5:0", "127.0.0.5:80"},
      {"[::]:80", nullptr, "[::1]:80"},
      {"[::]:80", "[::1]:0", "[::1]:80"},
      {"[::]:80", "[::ffff:127.0.0.5]:0", "[::ffff:127.0.0.1]:80"},
      {"[::ffff:0.0.0.0]:80", nullptr, "[::ffff:127.0.0.1]:80"},
      {"[::ffff:0.0.0.0]:80", "[::ffff:127.0.0.5]:0", "[::ffff:127.0.0.5]:80"},
      {"127.0.0.2:80", "127.0.0.5:0", "127.0.0.2:80"},
      {"[::1]:80", nullptr, "[::1]:80"},
  };
  for (const Row& row : rows) {
    SockAddr bound = row.bound ? A(row.bound) : SockAddr();
    EXPECT_EQ(KernelDestination(A(row.dest), row.bound ? &bound : nullptr).ToString(), row.reached)
        << row.dest << " bound to " << (row.bound ? row.bound : "nothing");
  }
}

TEST(DecideConnect, UnspecifiedDestinationMeetsTheLoopbackListener) {
  std::vector<TcpSocketInfo> ls = {Listener("127.0.0.1:80", false, 1)};
  auto yes = [](uint64_t) { return true; };
  EXPECT_EQ(DecideConnect(ls, KernelDestination(A("0.0.0.0:80"), nullptr), yes),
            QueryReason::kSupervised);
}

TEST(DecideConnect, EveryCandidateMustBeSupervised) {
  std::vector<TcpSocketInfo> ls = {Listener("127.0.0.1:80", false, 1),
                                   Listener("0.0.0.0:80", false, 2),
                                   Listener("127.0.0.1:81", false, 3)};
  auto only1 = [](uint64_t ino) { return ino == 1; };
  auto one_and_two = [](uint64_t ino) { return ino == 1 || ino == 2; };
  EXPECT_EQ(DecideConnect(ls, A("127.0.0.1:80"), only1), QueryReason::kUnsupervisedListener);
  EXPECT_EQ(DecideConnect(ls, A("127.0.0.1:80"), one_and_two), QueryReason::kSupervised);
  // Listener 3 is on another port: whether it is supervised does not matter.
  EXPECT_EQ(DecideConnect(ls, A("127.0.0.1:81"), one_and_two), QueryReason::kUnsupervisedListener);
}

TEST(DecideConnect, SoReusePortGroupMembersAreSeparateListeners) {
  std::vector<TcpSocketInfo> ls = {Listener("127.0.0.1:80", false, 1),
                                   Listener("127.0.0.1:80", false, 2)};
  EXPECT_EQ(DecideConnect(ls, A("127.0.0.1:80"), [](uint64_t ino) { return ino == 1; }),
            QueryReason::kUnsupervisedListener);
  EXPECT_EQ(DecideConnect(ls, A("127.0.0.1:80"), [](uint64_t) { return true; }),
            QueryReason::kSupervised);
}

TEST(DecideConnect, NoListener) {
  EXPECT_EQ(DecideConnect({}, A("127.0.0.1:80"), [](uint64_t) { return true; }),
            QueryReason::kNoListener);
}

TEST(DecideCrossNetns, WildcardListenerTakesItsNamespacesAddressesOnly) {
  std::map<uint64_t, NetnsView> ns;
  ns[2] = NetnsView{true, {A("10.0.0.2:0")}};
  ns[3] = NetnsView{true, {A("10.0.0.3:0")}};
  std::vector<RemoteListenerView> ls = {{2, A("0.0.0.0:80"), false}, {3, A("10.0.0.3:81"), false}};
  std::vector<uint64_t> found;
  EXPECT_EQ(DecideCrossNetns(1, true, ns, ls, A("10.0.0.2:80"), &found), CrossReason::kSupervised);
  EXPECT_EQ(found, std::vector<uint64_t>{2});
  found.clear();
  EXPECT_EQ(DecideCrossNetns(1, true, ns, ls, A("10.0.0.3:80"), &found), CrossReason::kNoListener);
  EXPECT_EQ(DecideCrossNetns(1, true, ns, ls, A("10.0.0.3:81"), &found), CrossReason::kSupervised);
  found.clear();
  // A remote host, or an address no namespace with supervisors has.
  EXPECT_EQ(DecideCrossNetns(1, true, ns, ls, A("192.0.2.1:80"), &found), CrossReason::kNoListener);
  // Our own namespace's listeners are not "another namespace".
  EXPECT_EQ(DecideCrossNetns(2, true, ns, ls, A("10.0.0.2:80"), &found), CrossReason::kNoListener);
}

TEST(DecideCrossNetns, SameAddressInTwoNamespacesListsBoth) {
  std::map<uint64_t, NetnsView> ns;
  ns[2] = NetnsView{true, {A("10.0.0.2:0")}};
  ns[3] = NetnsView{true, {A("10.0.0.2:0")}};
  std::vector<RemoteListenerView> ls = {{2, A("0.0.0.0:80"), false}, {3, A("0.0.0.0:80"), false}};
  std::vector<uint64_t> found;
  EXPECT_EQ(DecideCrossNetns(1, true, ns, ls, A("10.0.0.2:80"), &found), CrossReason::kSupervised);
  EXPECT_EQ(found.size(), 2u);  // either may take it: sequence numbers will tell
}

TEST(DecideCrossNetns, NeedsEvidenceOnBothSides) {
  std::map<uint64_t, NetnsView> ns;
  ns[2] = NetnsView{false, {A("10.0.0.2:0")}};
  std::vector<RemoteListenerView> ls = {{2, A("0.0.0.0:80"), false}};
  std::vector<uint64_t> found;
  EXPECT_EQ(DecideCrossNetns(1, true, ns, ls, A("10.0.0.2:80"), &found),
            CrossReason::kNoEvidenceThere);
  ns[2].seq_evidence = true;
  found.clear();
  EXPECT_EQ(DecideCrossNetns(1, false, ns, ls, A("10.0.0.2:80"), &found),
            CrossReason::kNoEvidenceHere);
}

TEST(InOtherNetns, OnlyNamespacesWithEvidenceAndNotOurs) {
  std::map<uint64_t, NetnsView> ns;
  ns[1] = NetnsView{true, {A("10.0.0.1:0")}};
  ns[2] = NetnsView{false, {A("10.0.0.2:0")}};
  EXPECT_TRUE(InOtherNetns(3, ns, A("10.0.0.1:5555")));
  EXPECT_FALSE(InOtherNetns(1, ns, A("10.0.0.1:5555")));
  EXPECT_FALSE(InOtherNetns(3, ns, A("10.0.0.2:5555")));
  EXPECT_FALSE(InOtherNetns(3, ns, A("192.0.2.1:5555")));
}

// Every combination of the four facts, against the rule written out once by hand: a pushed end
// is taken, whatever else holds; otherwise the daemon is asked only for a peer on this host, with
// a switch to the port in flight or not known not to be, while the daemon is there.
TEST(DecideAccept, EveryCombinationOfFacts) {
  const std::optional<uint32_t> gates[] = {std::nullopt, 0u, 1u, 7u};
  int cases = 0;
  for (bool pushed : {false, true}) {
    for (bool on_host : {false, true}) {
      for (auto gate : gates) {
        for (bool daemon : {false, true}) {
          AcceptDecision d = DecideAccept({pushed, on_host, gate, daemon});
          AcceptAction want = pushed ? AcceptAction::kTakePushed
                              : on_host && gate != std::optional<uint32_t>(0u) && daemon
                                  ? AcceptAction::kClaim
                                  : AcceptAction::kStayTcp;
          EXPECT_EQ(d.action, want) << "pushed " << pushed << " on_host " << on_host << " gate "
                                    << (gate ? std::to_string(*gate) : "?") << " daemon " << daemon;
          EXPECT_NE(d.why, nullptr);
          ++cases;
        }
      }
    }
  }
  EXPECT_EQ(cases, 32);
}

TEST(DecideAccept, SaysWhichFactDecided) {
  EXPECT_STREQ(DecideAccept({false, false, 1u, true}).why, "the peer is not on this host");
  EXPECT_STREQ(DecideAccept({false, true, 0u, true}).why, "no switch to this port is in flight");
  EXPECT_STREQ(DecideAccept({false, true, 1u, false}).why, "no slipstreamd");
  EXPECT_EQ(DecideAccept({true, false, 0u, false}).action, AcceptAction::kTakePushed);
  EXPECT_EQ(DecideAccept({false, true, std::nullopt, true}).action, AcceptAction::kClaim);
}

}  // namespace
}  // namespace slipstream::matcher
