#include "matcher/status_text.h"

#include <gtest/gtest.h>

namespace slipstream::matcher {
namespace {

constexpr const char* kStatus =
    R"({"pid":12,"supervisors":[{"pid":3,"uid":0}],"listeners_total":1,"connections_total":2,)"
    R"("pending":0,"pairs_total":2,"relays_total":1,"connections":[{"client_pid":4,)"
    R"("client":"127.0.0.1:40000","server_pid":5,"server":"127.0.0.1:8080",)"
    R"("client_unix_inode":77,"server_unix_inode":78,"evidence":"tcp-sequence-numbers"}]})";

TEST(StatusTextTest, FormatsTheDaemonsStatus) {
  auto text = StatusText(kStatus);
  ASSERT_TRUE(text);
  EXPECT_NE(text->find("slipstreamd pid 12, 1 supervisor(s), 1 listener(s), 2 switched "
                       "connection(s), 0 pending, 2 paired, 1 relayed since start\n"),
            std::string::npos)
      << *text;
  EXPECT_NE(text->find("127.0.0.1:40000"), std::string::npos);
  EXPECT_NE(text->find("77<->78"), std::string::npos);
  EXPECT_NE(text->find("0->0"), std::string::npos);  // namespaces absent: 0
  EXPECT_NE(text->find("tcp seq"), std::string::npos);
  EXPECT_NE(text->find("(1 of 2 listed)"), std::string::npos);
  // Namespace cookies are unsigned 64-bit.
  std::string big = kStatus;
  big.replace(big.find(R"("evidence")"), 0, R"("client_netns":18446744073709551615,)");
  text = StatusText(big);
  ASSERT_TRUE(text);
  EXPECT_NE(text->find("18446744073709551615->0"), std::string::npos) << *text;
}

// Found by fuzz/status_fuzz.cc (fuzz/corpus/status_fuzz/crash-type-error-null-pid): a reply
// with a field missing or of another type threw nlohmann::json::type_error out of
// slipstreamd --status (std::terminate).
TEST(StatusTextTest, UnreadableRepliesAreRefusedWithoutThrowing) {
  const char* bad[] = {
      "",
      "[]",
      "{}",
      R"({"pid":null,"supervisors":[],"connections_total":0,"pending":0,"pairs_total":0,)"
      R"("relays_total":0,"connections":[]})",
      R"({"pid":1e300,"supervisors":[],"connections_total":0,"pending":0,"pairs_total":0,)"
      R"("relays_total":0,"connections":[]})",
      R"({"pid":1,"supervisors":7,"connections_total":0,"pending":0,"pairs_total":0,)"
      R"("relays_total":0,"connections":[]})",
      R"({"pid":1,"supervisors":[],"connections_total":1,"pending":0,"pairs_total":0,)"
      R"("relays_total":0,"connections":[{"client_pid":"x"}]})",
      R"({"pid":1,"supervisors":[],"connections_total":1,"pending":0,"pairs_total":0,)"
      R"("relays_total":0,"connections":[7]})",
      R"({"pid":12,"supervisors":[{"pid":3}],"listeners_total":1,"connections_total":2,"pending":0,)"
      R"("pairs_total":2,"relays_total":0,"connections":[{"client_pid":4,"client":"127.0.0.1:40000",)"
      R"("server_pid":5,"server":"127.0.0.1:8080","client_rvisors":[{"pid":3}],"listeners_total":1,)"
      R"("connections_total":2,"ptns":1,"evidence":"tcp-sequence-numbers"}]})",
  };
  for (const char* text : bad) {
    EXPECT_FALSE(StatusText(text)) << text;
  }
}

}  // namespace
}  // namespace slipstream::matcher
