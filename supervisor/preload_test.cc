#include "supervisor/preload.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace slipstream::supervisor {
namespace {

using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::Not;

std::vector<std::string> Build(std::vector<std::string> in, const PreloadEnv& p) {
  std::vector<char*> env;
  for (auto& e : in) env.push_back(e.data());
  env.push_back(nullptr);
  return PreloadEnvironment(env.data(), p);
}

PreloadEnv Sample() {
  PreloadEnv p;
  p.library = "/opt/lib/libslipstream-preload.so";
  p.cookie = 0x0123456789abcdefULL;
  p.table = "/run/user/1/slipstream/listeners.table";
  return p;
}

TEST(PreloadEnvironmentTest, LibraryFirstCookieAndTable) {
  auto env = Build({"HOME=/root", "PATH=/bin"}, Sample());
  EXPECT_THAT(env,
              ElementsAre("HOME=/root", "PATH=/bin", "LD_PRELOAD=/opt/lib/libslipstream-preload.so",
                          "SLIPSTREAM_COOKIE=0123456789abcdef",
                          "SLIPSTREAM_LISTENER_TABLE=/run/user/1/slipstream/listeners.table"));
}

TEST(PreloadEnvironmentTest, KeepsTheUsersPreloadBeforeTheLibrary) {
  auto env = Build({"LD_PRELOAD=/a.so /b.so"}, Sample());
  EXPECT_THAT(env, Contains("LD_PRELOAD=/a.so /b.so:/opt/lib/libslipstream-preload.so"));
}

TEST(PreloadEnvironmentTest, NestedRunListsTheLibraryOnceAndReplacesTheVariables) {
  PreloadEnv p = Sample();
  p.table.clear();  // --no-switch inside
  p.stats = "/tmp/s";
  auto env = Build(
      {"LD_PRELOAD=/opt/lib/libslipstream-preload.so:/a.so", "SLIPSTREAM_COOKIE=ffffffffffffffff",
       "SLIPSTREAM_LISTENER_TABLE=/old", "SLIPSTREAM_PRELOAD_STATS=/old"},
      p);
  EXPECT_THAT(env,
              ElementsAre("LD_PRELOAD=/opt/lib/libslipstream-preload.so:/a.so",
                          "SLIPSTREAM_COOKIE=0123456789abcdef", "SLIPSTREAM_PRELOAD_STATS=/tmp/s"));
  EXPECT_THAT(env, Not(Contains("SLIPSTREAM_LISTENER_TABLE=/old")));
}

TEST(PreloadEnvironmentTest, SimilarNamesAreNotTouched) {
  auto env = Build({"LD_PRELOAD_X=1", "SLIPSTREAM_COOKIES=2"}, Sample());
  EXPECT_THAT(env, Contains("LD_PRELOAD_X=1"));
  EXPECT_THAT(env, Contains("SLIPSTREAM_COOKIES=2"));
}

TEST(PreloadTest, CookiesAreNonZeroAndDiffer) {
  uint64_t a = NewCookie(), b = NewCookie();
  EXPECT_NE(a, 0u);
  EXPECT_NE(a, b);
}

}  // namespace
}  // namespace slipstream::supervisor
