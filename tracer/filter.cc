#include "tracer/filter.h"

#include <linux/capability.h>
#include <linux/seccomp.h>
#include <seccomp.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <vector>

#include "base/credentials.h"
#include "base/unique_fd.h"
#include "preload-fallback/preload_abi.h"
#include "tracer/calls.h"

namespace slipstream::tracer {
namespace {

static_assert(static_cast<int>(Call::kSocket) == SLIPSTREAM_CALL_SOCKET &&
                  static_cast<int>(Call::kConnect) == SLIPSTREAM_CALL_CONNECT &&
                  static_cast<int>(Call::kAccept4) == SLIPSTREAM_CALL_ACCEPT4 &&
                  static_cast<int>(Call::kGetsockopt) == SLIPSTREAM_CALL_GETSOCKOPT &&
                  kCallCount == SLIPSTREAM_CALL_COUNT,
              "preload_abi.h numbers the calls like tracer::Call");

struct CtxDeleter {
  void operator()(scmp_filter_ctx ctx) const { seccomp_release(ctx); }
};
using Ctx = std::unique_ptr<void, CtxDeleter>;

// libseccomp returns -errno from every call.
Status Check(int rc, const char* op) {
  if (rc < 0) return Error(-rc, op);
  return {};
}

// Hybrid mode: the preload library's calls carry the run's cookie in the first argument register
// the call does not read (preload-fallback/preload_abi.h); the notify rule then requires "that
// register != cookie", and the filter's default (ALLOW) takes the rest. Appends the condition to
// `conds`, or nothing for calls without a bypass. A program that learns the cookie can only make
// its own calls unsupervised (docs/design.md, "Hybrid mode").
void AddBypassCondition(Call call, const FilterOptions& options, std::vector<scmp_arg_cmp>& conds) {
  if (options.bypass_cookie == 0) return;
  int arg = slipstream_cookie_arg(static_cast<int>(call));
  if (arg < 0) return;
  conds.push_back(scmp_arg_cmp{static_cast<unsigned>(arg), SCMP_CMP_NE,
                               static_cast<scmp_datum_t>(options.bypass_cookie), 0});
}

Status AddNotifyRule(scmp_filter_ctx ctx, Call call, std::vector<scmp_arg_cmp> conds,
                     const FilterOptions& options) {
  AddBypassCondition(call, options, conds);
  return Check(seccomp_rule_add_array(ctx, SCMP_ACT_NOTIFY, NrOf(call),
                                      static_cast<unsigned>(conds.size()), conds.data()),
               "seccomp_rule_add");
}

// The data-path calls notify only in the forms a switched socket (AF_UNIX) would answer unlike
// TCP, which the filter can see in a register argument; every other send/recv runs untrapped.
// (An argument-dependent rule keeps these syscalls out of the kernel's seccomp action cache
// (5.11): each call runs the BPF program, measured in docs/BENCHMARKS.md.)
//  - recv family: MSG_TRUNC (TCP discards without copying; AF_UNIX copies, EFAULT on NULL),
//    MSG_PEEK with MSG_WAITALL (AF_UNIX returns what is queued), MSG_ERRQUEUE (TCP: EAGAIN;
//    AF_UNIX reads the data). Each rule matches when all of its bits are set.
//  - send family: MSG_FASTOPEN (TCP: EISCONN on a connected socket; AF_UNIX sends), and sendto
//    with an address (TCP ignores it; AF_UNIX fails with EISCONN). sendmsg's msg_name is in
//    memory, out of the filter's sight (docs/differences.md).
Status AddDataRules(scmp_filter_ctx ctx) {
  const uint32_t notify = SCMP_ACT_NOTIFY;
  struct FlagRule {
    Call call;
    unsigned arg;  // which argument holds the flags
    scmp_datum_t bits;
  };
  constexpr unsigned kPeekWaitall = MSG_PEEK | MSG_WAITALL;
  const FlagRule rules[] = {
      {Call::kRecvfrom, 3, MSG_TRUNC},    {Call::kRecvfrom, 3, kPeekWaitall},
      {Call::kRecvfrom, 3, MSG_ERRQUEUE}, {Call::kRecvmsg, 2, MSG_TRUNC},
      {Call::kRecvmsg, 2, kPeekWaitall},  {Call::kRecvmsg, 2, MSG_ERRQUEUE},
      {Call::kRecvmmsg, 3, MSG_TRUNC},    {Call::kRecvmmsg, 3, kPeekWaitall},
      {Call::kRecvmmsg, 3, MSG_ERRQUEUE}, {Call::kSendto, 3, MSG_FASTOPEN},
      {Call::kSendmsg, 2, MSG_FASTOPEN},  {Call::kSendmmsg, 3, MSG_FASTOPEN},
  };
  for (const FlagRule& r : rules) {
    // The kernel takes flags as an unsigned int: only the low 32 bits of the register count, and
    // the mask has no high bits.
    scmp_arg_cmp cmp = SCMP_CMP(r.arg, SCMP_CMP_MASKED_EQ, r.bits, r.bits);
    auto st = Check(seccomp_rule_add_array(ctx, notify, NrOf(r.call), 1, &cmp),
                    "seccomp_rule_add(data flags)");
    if (!st) return st;
  }
  return Check(seccomp_rule_add(ctx, notify, SCMP_SYS(sendto), 1, SCMP_A4(SCMP_CMP_NE, 0)),
               "seccomp_rule_add(sendto address)");
}

Status AddRules(scmp_filter_ctx ctx, const FilterOptions& options) {
  // Only TCP-capable sockets: AF_INET/AF_INET6 with type SOCK_STREAM (the low 4 bits of `type`).
  for (int domain : {AF_INET, AF_INET6}) {
    if (!options.trap_socket) break;
    auto st = AddNotifyRule(ctx, Call::kSocket,
                            {SCMP_A0(SCMP_CMP_EQ, static_cast<scmp_datum_t>(domain)),
                             SCMP_A1(SCMP_CMP_MASKED_EQ, 0xf, SOCK_STREAM)},
                            options);
    if (!st) return st;
  }
  for (Call call : {Call::kConnect, Call::kAccept, Call::kAccept4, Call::kBind, Call::kListen,
                    Call::kGetsockname, Call::kGetpeername, Call::kGetsockopt, Call::kSetsockopt,
                    Call::kShutdown}) {
    if (call == Call::kBind && !options.trap_bind) continue;
    auto st = AddNotifyRule(ctx, call, {}, options);
    if (!st) return st;
  }
  if (options.trap_data_flags) {
    if (auto st = AddDataRules(ctx); !st) return st;
  }
  if (!options.allow_io_uring) {
    auto st = Check(seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(io_uring_setup), 0),
                    "seccomp_rule_add(io_uring_setup)");
    if (!st) return st;
  }
  return {};
}

}  // namespace

Result<BpfProgram> BuildFilter(const FilterOptions& options) {
  Ctx ctx(seccomp_init(SCMP_ACT_ALLOW));
  if (!ctx) return Error(ENOMEM, "seccomp_init");
  // The child sets NO_NEW_PRIVS itself, and only when it must (AllowFilterInstall).
  if (auto st = Check(seccomp_attr_set(ctx.get(), SCMP_FLTATR_CTL_NNP, 0), "seccomp_attr_set(NNP)");
      !st) {
    return tl::unexpected(st.error());
  }
  if (auto st = Check(seccomp_attr_set(ctx.get(), SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_ALLOW),
                      "seccomp_attr_set(BADARCH)");
      !st) {
    return tl::unexpected(st.error());
  }
  if (auto st = AddRules(ctx.get(), options); !st) return tl::unexpected(st.error());

  // libseccomp 2.5.4 cannot set SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (2.6 can), so export the
  // program and install it with seccomp(2) ourselves.
  UniqueFd mem(memfd_create("slipstream-bpf", MFD_CLOEXEC));
  if (!mem) return Errno("memfd_create");
  if (auto st = Check(seccomp_export_bpf(ctx.get(), mem.Get()), "seccomp_export_bpf"); !st) {
    return tl::unexpected(st.error());
  }
  off_t size = lseek(mem.Get(), 0, SEEK_END);
  if (size <= 0 || size % sizeof(sock_filter) != 0) return Error(EINVAL, "seccomp_export_bpf size");
  BpfProgram program(static_cast<size_t>(size) / sizeof(sock_filter));
  if (pread(mem.Get(), program.data(), static_cast<size_t>(size), 0) != size) return Errno("pread");
  return program;
}

int InstallFilter(const BpfProgram& program, unsigned extra_flags) {
  sock_fprog prog{static_cast<unsigned short>(program.size()),
                  const_cast<sock_filter*>(program.data())};
  long fd = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER,
                    SECCOMP_FILTER_FLAG_NEW_LISTENER | extra_flags, &prog);
  return fd < 0 ? -errno : static_cast<int>(fd);
}

bool AllowFilterInstall() {
  if (HasEffectiveCapability(CAP_SYS_ADMIN)) return true;
  return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0;
}

}  // namespace slipstream::tracer
