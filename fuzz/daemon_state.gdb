# gdb script: prints the in-process daemon's sessions and timers from a stalled daemon_fuzz
# (fuzz/daemon_fuzz.cc runs it on a stall; by hand: gdb -p PID -batch -x fuzz/daemon_state.gdb).
set print pretty off
python
import gdb
d = gdb.parse_and_eval("*('slipstream::matcher::(anonymous namespace)::Daemonized'*)&'LLVMFuzzerTestOneInput::d'")
T = gdb.lookup_type('slipstream::matcher::Daemon')
dm = d['daemon'].address.cast(T.pointer().pointer()).dereference().dereference()
ST = gdb.lookup_type('slipstream::matcher::Daemon::Session')
u64 = gdb.lookup_type('unsigned long')
def walk(m):
    impl = m['_M_t']['_M_impl']
    header = impl['_M_header']
    count = int(impl['_M_node_count'])
    nodes = []
    def rec(n):
        if int(n) == 0: return
        rec(n['_M_left'])
        nodes.append(int(n))
        rec(n['_M_right'])
    rec(header['_M_parent'])
    return count, nodes
count, nodes = walk(dm['sessions_'])
print("sessions", count)
for n in nodes:
    key = int(gdb.Value(n + 32).cast(u64.pointer()).dereference())
    sp = gdb.Value(n + 40).cast(ST.pointer().pointer()).dereference()
    s = sp.dereference()
    dq = s['outgoing']['_M_impl']
    start, finish = dq['_M_start'], dq['_M_finish']
    print("session", key, "closed", s['closed'], "flushing", s['flushing'], "outgoing-empty", start['_M_cur'] == finish['_M_cur'], "pid", s['pid'])
    try:
        impl = s['desc']['impl_']['implementation_']
        state = impl['reactor_data_'].dereference()
        queues = [str(state['op_queue_'][i]['front_']) for i in range(3)]
        print("  fd", impl['descriptor_'], "asio state", impl['state_'], "registered_events",
              hex(int(state['registered_events_'])), "op queues (read, write, except)", queues,
              "try_speculative", [bool(state['try_speculative_'][i]) for i in range(3)])
    except Exception as e:
        print("  (asio descriptor state not readable:", e, ")")
for name in ['draining_', 'sweep_scheduled_', 'live_sweep_scheduled_']:
    print(name, dm[name])
end
