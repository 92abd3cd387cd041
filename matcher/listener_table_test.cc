#include "matcher/listener_table.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include "base/unique_fd.h"

namespace slipstream::matcher {
namespace {

class ListenerTableTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/slipstream-table-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/listeners.table";
  }
  void TearDown() override {
    unlink(path_.c_str());
    rmdir(dir_.c_str());
  }
  // What a program sees: a read-only mapping of the file.
  const slipstream_listener_table* MapReadOnly() {
    int fd = open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    EXPECT_GE(fd, 0);
    void* p = mmap(nullptr, sizeof(slipstream_listener_table), PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    EXPECT_NE(p, MAP_FAILED);
    return static_cast<const slipstream_listener_table*>(p);
  }
  std::string dir_, path_;
};

TEST_F(ListenerTableTest, PublishedPortsAreSeenThroughAnotherMapping) {
  auto table = ListenerTable::Open(path_);
  ASSERT_TRUE(table) << table.error().ToString();
  struct stat st;
  ASSERT_EQ(stat(path_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  const auto* view = MapReadOnly();
  EXPECT_EQ(view->magic, SLIPSTREAM_TABLE_MAGIC);
  uint64_t generation = view->generation;
  ListenerTable::Ports ports{};
  ListenerTable::Mark(ports, 0);
  ListenerTable::Mark(ports, 8080);
  ListenerTable::Mark(ports, 65535);
  table->Publish(ports);
  for (uint16_t p : {0, 8080, 65535}) EXPECT_TRUE(slipstream_port_supervised(view, p)) << p;
  for (uint16_t p : {1, 8079, 8081, 65534}) EXPECT_FALSE(slipstream_port_supervised(view, p)) << p;
  EXPECT_EQ(view->generation, generation + 1);
  table->Publish(ports);  // no change, no new generation
  EXPECT_EQ(view->generation, generation + 1);
  table->Publish(ListenerTable::Ports{});
  EXPECT_FALSE(slipstream_port_supervised(view, 8080));
  munmap(const_cast<slipstream_listener_table*>(view), sizeof(*view));
}

TEST_F(ListenerTableTest, ANewDaemonClearsTheSameFileAndOldMappingsSeeIt) {
  auto first = ListenerTable::Open(path_);
  ASSERT_TRUE(first);
  ListenerTable::Ports ports{};
  ListenerTable::Mark(ports, 443);
  first->Publish(ports);
  const auto* view = MapReadOnly();  // a program mapped it while the first daemon ran
  ASSERT_TRUE(slipstream_port_supervised(view, 443));
  struct stat before, after;
  ASSERT_EQ(stat(path_.c_str(), &before), 0);
  auto second = ListenerTable::Open(path_);  // a successor: stale bits go
  ASSERT_TRUE(second);
  ASSERT_EQ(stat(path_.c_str(), &after), 0);
  EXPECT_EQ(before.st_ino, after.st_ino) << "the file is reused, never replaced";
  EXPECT_FALSE(slipstream_port_supervised(view, 443));
  second->Publish(ports);
  EXPECT_TRUE(slipstream_port_supervised(view, 443));
  munmap(const_cast<slipstream_listener_table*>(view), sizeof(*view));
}

// slipstream-trace provides the file before its program starts, so the program can map it at
// once; until a daemon initialises it, its magic says "unknown". Providing it again, or while a
// daemon runs, changes nothing in it.
TEST_F(ListenerTableTest, AProvidedFileIsMappableAndUnknownUntilADaemonOpensIt) {
  ASSERT_TRUE(ListenerTable::Provide(path_));
  struct stat st;
  ASSERT_EQ(stat(path_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(st.st_size, static_cast<off_t>(sizeof(slipstream_listener_table)));
  const auto* view = MapReadOnly();  // the program, started before the daemon
  EXPECT_NE(view->magic, SLIPSTREAM_TABLE_MAGIC);
  auto table = ListenerTable::Open(path_);
  ASSERT_TRUE(table);
  EXPECT_EQ(view->magic, SLIPSTREAM_TABLE_MAGIC) << "the same file, seen through the early mapping";
  ListenerTable::Ports ports{};
  ListenerTable::Mark(ports, 8080);
  table->Publish(ports);
  ASSERT_TRUE(ListenerTable::Provide(path_));  // the next slipstream-trace
  EXPECT_EQ(view->magic, SLIPSTREAM_TABLE_MAGIC);
  EXPECT_TRUE(slipstream_port_supervised(view, 8080));
  munmap(const_cast<slipstream_listener_table*>(view), sizeof(*view));
}

TEST_F(ListenerTableTest, RefusesASymlink) {
  ASSERT_EQ(symlink("/etc/passwd", path_.c_str()), 0);
  auto table = ListenerTable::Open(path_);
  EXPECT_FALSE(table);
  EXPECT_FALSE(ListenerTable::Provide(path_));
}

TEST_F(ListenerTableTest, AcceptGateDoesNothingUntilTheDaemonCreatedTheFile) {
  AcceptGate gate(path_);
  auto count = gate.Raise(AcceptGate::Kind::kSwitching, 8080);
  EXPECT_FALSE(count.raised());
  EXPECT_EQ(gate.Read(AcceptGate::Kind::kSwitching, 8080), std::nullopt);  // unknown, not 0
}

TEST_F(ListenerTableTest, AcceptGateCountsAreSeenByProgramsAndOutliveADaemonRestart) {
  auto table = ListenerTable::Open(path_);
  ASSERT_TRUE(table);
  const auto* view = MapReadOnly();
  AcceptGate gate(path_);
  {
    auto a = gate.Raise(AcceptGate::Kind::kSwitching, 8080);
    auto b = gate.Raise(AcceptGate::Kind::kSwitching, 8080);
    auto parked = gate.Raise(AcceptGate::Kind::kParked, 8080);
    ASSERT_TRUE(a.raised() && b.raised() && parked.raised());
    EXPECT_EQ(view->switching[8080], 2u);
    EXPECT_EQ(view->parked[8080], 1u);
    EXPECT_EQ(gate.Read(AcceptGate::Kind::kSwitching, 8080), 2u);
    EXPECT_EQ(gate.Read(AcceptGate::Kind::kSwitching, 8081), 0u);
    EXPECT_EQ(view->switching[8081], 0u);
    // A new daemon clears the ports, never the supervisors' counts.
    auto second = ListenerTable::Open(path_);
    ASSERT_TRUE(second);
    EXPECT_EQ(view->switching[8080], 2u);
    AcceptGate::Count moved = std::move(a);
    EXPECT_FALSE(a.raised());  // NOLINT(bugprone-use-after-move): the point of the check
    EXPECT_EQ(view->switching[8080], 2u) << "a move keeps the raise";
    moved.Reset();
    EXPECT_EQ(view->switching[8080], 1u);
  }
  EXPECT_EQ(view->switching[8080], 0u);
  EXPECT_EQ(view->parked[8080], 0u);
  munmap(const_cast<slipstream_listener_table*>(view), sizeof(*view));
}

// The client's supervisor skips reading the daemon's messages for a port whose bit is clear: so
// "clear" must never be answered for a file it cannot read or one a daemon is (re)initialising.
TEST_F(ListenerTableTest, PortSupervisedIsUnknownUntilTheTableIsInitialised) {
  AcceptGate gate(path_);
  EXPECT_EQ(gate.PortSupervised(8080), std::nullopt);  // no file yet
  auto table = ListenerTable::Open(path_);
  ASSERT_TRUE(table);
  EXPECT_EQ(gate.PortSupervised(8080), false);
  ListenerTable::Ports ports{};
  ListenerTable::Mark(ports, 8080);
  table->Publish(ports);
  EXPECT_EQ(gate.PortSupervised(8080), true);
  EXPECT_EQ(gate.PortSupervised(8081), false);
  // A file without the magic (never initialised) cannot tell.
  auto* raw = static_cast<slipstream_listener_table*>(
      mmap(nullptr, sizeof(slipstream_listener_table), PROT_READ | PROT_WRITE, MAP_SHARED,
           UniqueFd(open(path_.c_str(), O_RDWR | O_CLOEXEC)).Get(), 0));
  ASSERT_NE(raw, MAP_FAILED);
  raw->magic = 0;
  EXPECT_EQ(gate.PortSupervised(8081), std::nullopt);
  munmap(raw, sizeof(*raw));
}

TEST_F(ListenerTableTest, AnIdleDaemonClearsTheGatesOfDeadSupervisors) {
  auto table = ListenerTable::Open(path_);
  ASSERT_TRUE(table);
  const auto* view = MapReadOnly();
  AcceptGate gate(path_);
  auto count = gate.Raise(AcceptGate::Kind::kSwitching, 80);
  EXPECT_EQ(view->switching[80], 1u);
  table->ClearAcceptGates();
  EXPECT_EQ(view->switching[80], 0u);
  munmap(const_cast<slipstream_listener_table*>(view), sizeof(*view));
}

TEST_F(ListenerTableTest, AcceptGateNeverLowersBelowZero) {
  auto table = ListenerTable::Open(path_);
  ASSERT_TRUE(table);
  AcceptGate gate(path_);
  auto count = gate.Raise(AcceptGate::Kind::kParked, 9);
  // Someone else (another program of the user) zeroed it meanwhile.
  int fd = open(path_.c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  void* p =
      mmap(nullptr, sizeof(slipstream_listener_table), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  ASSERT_NE(p, MAP_FAILED);
  auto* writable = static_cast<slipstream_listener_table*>(p);
  writable->parked[9] = 0;
  count.Reset();
  EXPECT_EQ(writable->parked[9], 0u) << "no wrap-around to 0xffffffff";
  munmap(p, sizeof(slipstream_listener_table));
}

// A supervisor killed mid-switch destroys none of its counts: the daemon lowers what its ledger
// holds when the session ends, and only that (another supervisor's raise stays).
TEST_F(ListenerTableTest, ALedgerDrainLowersOnlyTheDeadSupervisorsCounts) {
  auto table = ListenerTable::Open(path_);
  ASSERT_TRUE(table);
  const auto* view = MapReadOnly();
  AcceptGate other(path_, /*with_ledger=*/true);
  auto kept = other.Raise(AcceptGate::Kind::kSwitching, 8080);
  auto* dead = new AcceptGate(path_, /*with_ledger=*/true);
  ASSERT_GE(dead->ledger_fd(), 0);
  auto* leaked = new AcceptGate::Count[3]{dead->Raise(AcceptGate::Kind::kSwitching, 8080),
                                          dead->Raise(AcceptGate::Kind::kSwitching, 8080),
                                          dead->Raise(AcceptGate::Kind::kParked, 60000)};
  EXPECT_EQ(view->switching[8080], 3u);
  EXPECT_EQ(view->parked[60000], 1u);
  // What the daemon receives (kGateLedger): another descriptor of the same memfd.
  auto adopted = GateLedger::Adopt(UniqueFd(dup(dead->ledger_fd())));
  ASSERT_TRUE(adopted) << adopted.error().ToString();
  EXPECT_EQ(table->Drain(*adopted), 3u);
  EXPECT_EQ(view->switching[8080], 1u) << "the other supervisor's raise stays";
  EXPECT_EQ(view->parked[60000], 0u);
  EXPECT_EQ(table->Drain(*adopted), 0u) << "drained once";
  // Were the dead one alive after all (a session the daemon closed), lowering its counts later
  // must not take anyone else's raise.
  delete[] leaked;
  EXPECT_EQ(view->switching[8080], 1u);
  kept.Reset();
  EXPECT_EQ(view->switching[8080], 0u);
  delete dead;
  munmap(const_cast<slipstream_listener_table*>(view), sizeof(*view));
}

// At exit the supervisor lowers every count it holds, including those whose Count objects the
// exit never destroys.
TEST_F(ListenerTableTest, LowerAllLowersCountsNobodyDestroys) {
  auto table = ListenerTable::Open(path_);
  ASSERT_TRUE(table);
  const auto* view = MapReadOnly();
  AcceptGate gate(path_, /*with_ledger=*/true);
  auto* never_destroyed = new AcceptGate::Count(gate.Raise(AcceptGate::Kind::kSwitching, 443));
  auto destroyed_later = gate.Raise(AcceptGate::Kind::kParked, 443);
  gate.LowerAll();
  EXPECT_EQ(view->switching[443], 0u);
  EXPECT_EQ(view->parked[443], 0u);
  destroyed_later.Reset();
  EXPECT_EQ(view->parked[443], 0u);
  auto again = gate.Raise(AcceptGate::Kind::kParked, 443);
  EXPECT_EQ(view->parked[443], 1u) << "the gate works after LowerAll";
  again.Reset();
  EXPECT_EQ(view->parked[443], 0u);
  delete never_destroyed;  // its ledger entry is 0: lowers nothing
  munmap(const_cast<slipstream_listener_table*>(view), sizeof(*view));
}

// The daemon maps what a supervisor sends: only a sealed file of the ledger's size, which no one
// can shrink under the mapping.
TEST_F(ListenerTableTest, GateLedgerAdoptRefusesUnsealedOrWrongSizedFiles) {
  UniqueFd unsealed(memfd_create("t", MFD_CLOEXEC));
  ASSERT_TRUE(unsealed);
  ASSERT_EQ(ftruncate(unsealed.Get(), sizeof(GateLedger::Counts)), 0);
  auto a = GateLedger::Adopt(std::move(unsealed));
  ASSERT_FALSE(a);
  EXPECT_EQ(a.error().err, EINVAL);
  UniqueFd small(memfd_create("t", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  ASSERT_EQ(ftruncate(small.Get(), 4096), 0);
  ASSERT_EQ(fcntl(small.Get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW), 0);
  EXPECT_FALSE(GateLedger::Adopt(std::move(small)));
  int pipe_fds[2];
  ASSERT_EQ(pipe2(pipe_fds, O_CLOEXEC), 0);
  close(pipe_fds[1]);
  EXPECT_FALSE(GateLedger::Adopt(UniqueFd(pipe_fds[0])));
  auto made = GateLedger::Create();
  ASSERT_TRUE(made);
  EXPECT_TRUE(GateLedger::Adopt(UniqueFd(dup(made->fd()))));
}

}  // namespace
}  // namespace slipstream::matcher
