#include "base/sweep_timer.h"

#include <gtest/gtest.h>

#include <chrono>
#include <memory>

namespace slipstream {
namespace {

using std::chrono::milliseconds;

TEST(SweepTimerTest, ManyArmsMakeOneSweep) {
  boost::asio::io_context io;
  int sweeps = 0;
  SweepTimer timer(io, milliseconds(5), [&] {
    ++sweeps;
    return false;
  });
  EXPECT_FALSE(timer.armed());
  timer.Arm();
  timer.Arm();
  timer.Arm();
  EXPECT_TRUE(timer.armed());
  io.run();
  EXPECT_EQ(sweeps, 1);
  EXPECT_FALSE(timer.armed());
  timer.Arm();  // and it can be armed again
  io.restart();
  io.run();
  EXPECT_EQ(sweeps, 2);
}

TEST(SweepTimerTest, SweepsWhileThereIsSomethingToSweep) {
  boost::asio::io_context io;
  int left = 3, sweeps = 0;
  SweepTimer timer(io, milliseconds(1), [&] {
    ++sweeps;
    return --left > 0;
  });
  timer.Arm();
  io.run();  // returns once nothing is pending: the last sweep did not arm again
  EXPECT_EQ(sweeps, 3);
  EXPECT_FALSE(timer.armed());
}

TEST(SweepTimerTest, DestroyedWhileArmedNeverSweeps) {
  boost::asio::io_context io;
  int sweeps = 0;
  auto timer = std::make_unique<SweepTimer>(io, milliseconds(1), [&] {
    ++sweeps;
    return false;
  });
  timer->Arm();
  timer.reset();  // the handler runs below with operation_aborted, after the timer is gone
  io.run();
  EXPECT_EQ(sweeps, 0);
}

}  // namespace
}  // namespace slipstream
