#include "supervisor/pending_call.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <utility>

namespace slipstream::supervisor {
namespace {

using ::testing::_;
using ::testing::Return;
using tracer::Call;

class MockNotifier : public tracer::Notifier {
 public:
  MOCK_METHOD(Result<tracer::Notification>, Receive, (), (override));
  MOCK_METHOD(Status, Continue, (uint64_t id), (override));
  MOCK_METHOD(Status, Return, (uint64_t id, int64_t value), (override));
  MOCK_METHOD(Status, Fail, (uint64_t id, int err), (override));
  MOCK_METHOD(Status, IdValid, (uint64_t id), (override));
};

Status Ok() { return {}; }
Status Gone() { return Error(ENOENT, "ioctl(NOTIF_SEND)"); }

class PendingCallTest : public ::testing::Test {
 protected:
  PendingCallTest()
      : table_(std::move(*OutstandingTable::Create())),
        out_(open_memstream(&buf_, &size_)),
        trace_(out_),
        sinks_{notifier_, table_, trace_, stats_} {}
  ~PendingCallTest() override {
    fclose(out_);
    free(buf_);
  }

  static tracer::Notification Note(uint64_t id) {
    tracer::Notification n;
    n.id = id;
    n.tid = 321;
    n.nr = 42;
    n.args = {3, 0x1000, 16, 0, 0, 0};
    return n;
  }

  std::string Trace() {
    fflush(out_);
    return std::string(buf_, size_);
  }

  ::testing::StrictMock<MockNotifier> notifier_;
  OutstandingTable table_;
  char* buf_ = nullptr;
  size_t size_ = 0;
  FILE* out_;
  TraceLog trace_;
  Stats stats_;
  CallSinks sinks_;
};

TEST_F(PendingCallTest, DestroyedUnansweredSendsContinue) {
  EXPECT_CALL(notifier_, Continue(7)).WillOnce(Return(Ok()));
  {
    PendingCall call(sinks_, Note(7), Call::kConnect);
    EXPECT_FALSE(call.answered());
    EXPECT_EQ(call.id(), 7u);
    EXPECT_EQ(call.tid(), 321);
    EXPECT_EQ(call.arg(1), 0x1000u);
    call.trace().args = "3, 127.0.0.1:80";
  }
  EXPECT_EQ(stats_.calls[static_cast<size_t>(Call::kConnect)], 1u);
  EXPECT_EQ(stats_.continued, 1u);
  EXPECT_EQ(stats_.interrupted, 0u);
  EXPECT_THAT(Trace(), ::testing::EndsWith("[321] connect(3, 127.0.0.1:80) = ? (kernel)\n"));
}

TEST_F(PendingCallTest, ReturnAnswersOnceAndSuppressesContinue) {
  EXPECT_CALL(notifier_, Return(7, 0)).WillOnce(Return(Ok()));
  {
    PendingCall call(sinks_, Note(7), Call::kListen);
    call.Return(0);
    EXPECT_TRUE(call.answered());
  }
  EXPECT_EQ(stats_.emulated, 1u);
  EXPECT_EQ(stats_.continued, 0u);
  EXPECT_THAT(Trace(), ::testing::EndsWith("listen() = 0\n"));
}

TEST_F(PendingCallTest, FailAnswersWithTheErrno) {
  EXPECT_CALL(notifier_, Fail(9, ECONNREFUSED)).WillOnce(Return(Ok()));
  {
    PendingCall call(sinks_, Note(9), Call::kConnect);
    call.Fail(ECONNREFUSED);
  }
  EXPECT_EQ(stats_.emulated, 1u);
  EXPECT_THAT(Trace(), ::testing::HasSubstr("= -1 ECONNREFUSED (Connection refused)"));
}

TEST_F(PendingCallTest, EnoentCountsAsInterrupted) {
  EXPECT_CALL(notifier_, Continue(11)).WillOnce(Return(Gone()));
  EXPECT_CALL(notifier_, Return(12, 5)).WillOnce(Return(Gone()));
  { PendingCall call(sinks_, Note(11), Call::kAccept); }
  {
    PendingCall call(sinks_, Note(12), Call::kAccept);
    call.Return(5);
  }
  EXPECT_EQ(stats_.interrupted, 2u);
  std::string trace = Trace();
  EXPECT_THAT(trace, ::testing::HasSubstr("accept() = ? (interrupted)\n"));
  EXPECT_THAT(trace, ::testing::Not(::testing::HasSubstr("= 5")));
}

// Regression (fixed in 08528f2): an interrupted answer was counted both as continued/emulated and
// as interrupted, so the --stats breakdown added up to more than the total.
TEST_F(PendingCallTest, OutcomesPartitionTheTotal) {
  // --stats prints "total N (kernel K, emulated E, interrupted I)": each call is counted in one of
  // the three, so an interrupted CONTINUE or emulation must not also count as kernel or emulated.
  EXPECT_CALL(notifier_, Continue(_)).WillOnce(Return(Ok())).WillOnce(Return(Gone()));
  EXPECT_CALL(notifier_, Return(_, _)).WillOnce(Return(Ok())).WillOnce(Return(Gone()));
  { PendingCall call(sinks_, Note(1), Call::kBind); }
  { PendingCall call(sinks_, Note(2), Call::kBind); }
  {
    PendingCall call(sinks_, Note(3), Call::kListen);
    call.Return(0);
  }
  {
    PendingCall call(sinks_, Note(4), Call::kListen);
    call.Return(0);
  }
  uint64_t total = 0;
  for (uint64_t n : stats_.calls) total += n;
  EXPECT_EQ(total, 4u);
  EXPECT_EQ(stats_.interrupted, 2u);
  EXPECT_EQ(stats_.continued + stats_.emulated + stats_.interrupted + stats_.unanswered, total)
      << "continued " << stats_.continued << ", emulated " << stats_.emulated;
}

// An answer the kernel refuses for another reason than the target leaving (EINVAL: malformed;
// EINPROGRESS: answered already) is a defect of ours: counted as unanswered, not as interrupted,
// and no second answer is tried (an emulation may have had its effect already).
TEST_F(PendingCallTest, RefusedAnswerCountsAsUnansweredNotInterrupted) {
  EXPECT_CALL(notifier_, Return(61, 3)).WillOnce(Return(Error(EINVAL, "ioctl(NOTIF_SEND)")));
  EXPECT_CALL(notifier_, Fail(62, EPIPE)).WillOnce(Return(Error(EINPROGRESS, "ioctl")));
  EXPECT_CALL(notifier_, Continue(63)).WillOnce(Return(Error(EINPROGRESS, "ioctl")));
  {
    PendingCall call(sinks_, Note(61), Call::kGetsockopt);
    EXPECT_FALSE(call.Return(3));
    EXPECT_TRUE(call.answered());
    EXPECT_FALSE(call.delivered());
  }
  {
    PendingCall call(sinks_, Note(62), Call::kSendmsg);
    EXPECT_FALSE(call.Fail(EPIPE));
  }
  { PendingCall call(sinks_, Note(63), Call::kBind); }  // StrictMock: no second answer is tried
  EXPECT_EQ(stats_.interrupted, 0u);
  EXPECT_EQ(stats_.emulated + stats_.continued, 0u);
  EXPECT_EQ(stats_.unanswered, 3u);
  std::string trace = Trace();
  EXPECT_THAT(trace,
              ::testing::HasSubstr("getsockopt() = ? (interrupted) (answer refused: EINVAL)\n"));
  EXPECT_THAT(trace,
              ::testing::HasSubstr("sendmsg() = ? (interrupted) (answer refused: EINPROGRESS)\n"));
  EXPECT_TRUE(table_.Snapshot().empty());
}

TEST_F(PendingCallTest, MovedFromCallDoesNotAnswer) {
  EXPECT_CALL(notifier_, Continue(13)).Times(1).WillOnce(Return(Ok()));
  PendingCall first(sinks_, Note(13), Call::kAccept4);
  {
    PendingCall second(std::move(first));
    EXPECT_FALSE(second.answered());
    EXPECT_EQ(second.id(), 13u);
  }
  EXPECT_EQ(stats_.calls[static_cast<size_t>(Call::kAccept4)], 1u);
}

TEST_F(PendingCallTest, OutstandingUntilAnswered) {
  EXPECT_CALL(notifier_, Return(21, 0)).WillOnce(Return(Ok()));
  EXPECT_CALL(notifier_, Continue(22)).WillOnce(Return(Ok()));
  {
    PendingCall a(sinks_, Note(21), Call::kGetsockname);
    PendingCall b(sinks_, Note(22), Call::kGetpeername);
    EXPECT_THAT(table_.Snapshot(), ::testing::UnorderedElementsAre(21u, 22u));
    EXPECT_EQ(table_.highest_id(), 22u);
    a.Return(0);
    EXPECT_THAT(table_.Snapshot(), ::testing::ElementsAre(22u));
    PendingCall moved(std::move(b));
    EXPECT_THAT(table_.Snapshot(), ::testing::ElementsAre(22u)) << "a move keeps one entry";
  }
  EXPECT_TRUE(table_.Snapshot().empty());
}

TEST_F(PendingCallTest, AnsweredWithFdSendsNothing) {
  {
    PendingCall call(sinks_, Note(31), Call::kAccept4);
    call.trace().note = "(peer 127.0.0.1:4000)";
    call.AnsweredWithFd(6);
  }
  EXPECT_EQ(stats_.emulated, 1u);
  EXPECT_THAT(Trace(), ::testing::EndsWith("accept4() = 6 (peer 127.0.0.1:4000)\n"));
  EXPECT_TRUE(table_.Snapshot().empty());
}

TEST_F(PendingCallTest, AbandonSendsNothingAndCountsInterrupted) {
  {
    PendingCall call(sinks_, Note(41), Call::kAccept);
    call.Abandon();
    EXPECT_TRUE(call.answered());
  }
  EXPECT_EQ(stats_.interrupted, 1u);
  EXPECT_THAT(Trace(), ::testing::EndsWith("accept() = ? (interrupted)\n"));
  EXPECT_TRUE(table_.Snapshot().empty());
}

TEST_F(PendingCallTest, NoTraceWhenDisabled) {
  TraceLog off(nullptr);
  CallSinks sinks{notifier_, table_, off, stats_};
  EXPECT_CALL(notifier_, Continue(51)).WillOnce(Return(Ok()));
  { PendingCall call(sinks, Note(51), Call::kShutdown); }
  EXPECT_EQ(Trace(), "");
  EXPECT_EQ(stats_.continued, 1u);
}

}  // namespace
}  // namespace slipstream::supervisor
