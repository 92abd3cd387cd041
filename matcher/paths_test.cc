#include "matcher/paths.h"

#include <gtest/gtest.h>

namespace slipstream::matcher {
namespace {

constexpr uid_t kUser = 1000;
constexpr uid_t kOther = 1001;

struct stat Dir(uid_t owner, mode_t mode) {
  struct stat st {};
  st.st_uid = owner;
  st.st_mode = S_IFDIR | mode;
  return st;
}

TEST(ClassifyRuntimeDirTest, OwnPrivateDirectoryIsPrivate) {
  EXPECT_EQ(ClassifyRuntimeDir(Dir(kUser, 0700), kUser), DirTrust::kPrivate);
  EXPECT_EQ(ClassifyRuntimeDir(Dir(0, 0700), 0), DirTrust::kPrivate);
}

TEST(ClassifyRuntimeDirTest, RootsDirectoryClosedToWritersIsSystemWide) {
  EXPECT_EQ(ClassifyRuntimeDir(Dir(0, 0755), kUser), DirTrust::kSystemWide);
  EXPECT_EQ(ClassifyRuntimeDir(Dir(0, 0711), kUser), DirTrust::kSystemWide);
  // Root's own supervisors treat a 0755 directory as the system-wide daemon's too: they start
  // no daemon there.
  EXPECT_EQ(ClassifyRuntimeDir(Dir(0, 0755), 0), DirTrust::kSystemWide);
}

TEST(ClassifyRuntimeDirTest, WritableByOthersIsUntrusted) {
  for (mode_t mode : {0775, 0757, 0777, 01777}) {
    EXPECT_EQ(ClassifyRuntimeDir(Dir(0, mode), kUser), DirTrust::kUntrusted) << std::oct << mode;
    EXPECT_EQ(ClassifyRuntimeDir(Dir(kUser, mode), kUser), DirTrust::kUntrusted)
        << std::oct << mode;
  }
}

TEST(ClassifyRuntimeDirTest, AnotherUsersDirectoryIsUntrustedEvenIfClosed) {
  // Whoever owns it could have put a socket there that collects our connections.
  EXPECT_EQ(ClassifyRuntimeDir(Dir(kOther, 0700), kUser), DirTrust::kUntrusted);
  EXPECT_EQ(ClassifyRuntimeDir(Dir(kOther, 0755), kUser), DirTrust::kUntrusted);
}

TEST(ClassifyRuntimeDirTest, OwnDirectoryReadableByOthersIsUntrusted) {
  // Not private, and not root's: a user's daemon serves only that user.
  EXPECT_EQ(ClassifyRuntimeDir(Dir(kUser, 0755), kUser), DirTrust::kUntrusted);
}

TEST(ClassifyRuntimeDirTest, NotADirectoryIsUntrusted) {
  struct stat link = Dir(0, 0755);
  link.st_mode = S_IFLNK | 0777;
  EXPECT_EQ(ClassifyRuntimeDir(link, kUser), DirTrust::kUntrusted);
  link.st_mode = S_IFREG | 0700;
  EXPECT_EQ(ClassifyRuntimeDir(link, 0), DirTrust::kUntrusted);
}

TEST(DaemonMayUseDirTest, OwnUserOnlyWantsAPrivateDirectory) {
  EXPECT_TRUE(DaemonMayUseDir(Dir(kUser, 0700), kUser, /*all_users=*/false));
  EXPECT_FALSE(DaemonMayUseDir(Dir(kUser, 0755), kUser, /*all_users=*/false));
  EXPECT_FALSE(DaemonMayUseDir(Dir(0, 0755), 0, /*all_users=*/false));
  EXPECT_FALSE(DaemonMayUseDir(Dir(kOther, 0700), kUser, /*all_users=*/false));
}

TEST(DaemonMayUseDirTest, AllUsersWantsItsOwnDirectoryClosedToWriters) {
  EXPECT_TRUE(DaemonMayUseDir(Dir(0, 0755), 0, /*all_users=*/true));
  EXPECT_TRUE(DaemonMayUseDir(Dir(0, 0700), 0, /*all_users=*/true));
  EXPECT_FALSE(DaemonMayUseDir(Dir(0, 0775), 0, /*all_users=*/true));
  EXPECT_FALSE(DaemonMayUseDir(Dir(0, 0757), 0, /*all_users=*/true));
  EXPECT_FALSE(DaemonMayUseDir(Dir(kUser, 0755), 0, /*all_users=*/true));
  struct stat file = Dir(0, 0755);
  file.st_mode = S_IFREG | 0755;
  EXPECT_FALSE(DaemonMayUseDir(file, 0, /*all_users=*/true));
}

}  // namespace
}  // namespace slipstream::matcher
