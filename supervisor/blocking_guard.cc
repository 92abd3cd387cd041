#include "supervisor/blocking_guard.h"

#include <signal.h>
#include <sys/time.h>

namespace slipstream::supervisor {
namespace {

constexpr long kBoundMicros = 5000;

void OnAlarm(int) {}

}  // namespace

void BlockingGuard::InstallHandler() {
  struct sigaction sa {};
  sa.sa_handler = OnAlarm;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: the interrupted accept/connect must return EINTR
  sigaction(SIGALRM, &sa, nullptr);
}

BlockingGuard::BlockingGuard() {
  itimerval t{};
  t.it_value.tv_usec = kBoundMicros;
  setitimer(ITIMER_REAL, &t, nullptr);
}

BlockingGuard::~BlockingGuard() {
  itimerval t{};
  setitimer(ITIMER_REAL, &t, nullptr);
}

}  // namespace slipstream::supervisor
