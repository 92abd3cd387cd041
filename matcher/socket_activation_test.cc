#include "matcher/socket_activation.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

namespace slipstream::matcher {
namespace {

// These cases never reach fd 3 (the test process's own fd 3 is not a passed socket): the
// positive path and a wrong socket type are in tests/integration/test_install.py.
class SocketActivationTest : public ::testing::Test {
 protected:
  void TearDown() override {
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
  }
};

TEST_F(SocketActivationTest, NotActivatedWithoutListenPid) {
  unsetenv("LISTEN_PID");
  setenv("LISTEN_FDS", "1", 1);
  auto r = TakeActivatedSocket();
  ASSERT_TRUE(r.has_value());
  EXPECT_FALSE(r->has_value());
}

TEST_F(SocketActivationTest, SocketsMeantForAnotherProcessAreLeftAlone) {
  setenv("LISTEN_PID", std::to_string(getpid() + 1).c_str(), 1);
  setenv("LISTEN_FDS", "1", 1);
  auto r = TakeActivatedSocket();
  ASSERT_TRUE(r.has_value());
  EXPECT_FALSE(r->has_value());
  EXPECT_NE(getenv("LISTEN_PID"), nullptr) << "not ours: the environment stays";
}

TEST_F(SocketActivationTest, MoreThanOneSocketIsRefusedAndTheEnvironmentCleared) {
  setenv("LISTEN_PID", std::to_string(getpid()).c_str(), 1);
  setenv("LISTEN_FDS", "2", 1);
  setenv("LISTEN_FDNAMES", "a:b", 1);
  auto r = TakeActivatedSocket();
  EXPECT_FALSE(r.has_value());
  EXPECT_EQ(getenv("LISTEN_PID"), nullptr);
  EXPECT_EQ(getenv("LISTEN_FDS"), nullptr);
  EXPECT_EQ(getenv("LISTEN_FDNAMES"), nullptr);
}

TEST_F(SocketActivationTest, MalformedPidIsNotOurs) {
  setenv("LISTEN_PID", (std::to_string(getpid()) + "x").c_str(), 1);
  setenv("LISTEN_FDS", "1", 1);
  auto r = TakeActivatedSocket();
  ASSERT_TRUE(r.has_value());
  EXPECT_FALSE(r->has_value());
}

}  // namespace
}  // namespace slipstream::matcher
