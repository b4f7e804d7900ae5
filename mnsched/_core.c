/* mnsched._core: the G driver in C (docs/design.md, "The C core").
 *
 * What runs per goroutine, and nothing else: spawning from a P (newproc's fast path),
 * readying on one's own P (runnext and the local queue), stepping (P.step: send into
 * the coroutine in the G's context, as the loop's current task, and act on what it
 * yielded), the inline join, the await of a G (GBase's am_await), and the finish
 * (goexit). Each is what mnsched's pure-Python driver does, in the same order, under the
 * same locks; that driver is the reference, the test suite runs on both (MNSCHED_PURE=1
 * selects it), and tests/test_driver.py runs seeded programs on both and compares. The
 * rare paths (a failure to explain, a retiring P, the queue overflowing to the global
 * queue, waking another P, a foreign awaiter) call the Python code, so that each of
 * those exists once.
 *
 * G and P stay Python classes with __slots__. This module reads and writes their slots
 * directly, at the offsets their member descriptors give (``bind``), so both drivers
 * share one G and one P, and a slot read costs a load instead of a descriptor call.
 * ``bind`` checks that every slot it needs is a plain object slot of exactly those
 * classes, and every entry point that it was given exactly a P and a G: any other layout
 * would make the offsets meaningless. The integers updated per goroutine (a P's
 * counters, a G's queue stamp) are C fields of their C bases, PBase and GBase, and a P's
 * run queues are this module's RunQ rings.
 *
 * Free-threaded builds: the state transitions here are the Python driver's, under the
 * same locks (the striped G locks and state locks of design.md, "Locks"); what the GIL
 * still covers is listed in design.md ("The C core: without the GIL"): the slot stores and
 * the counters' racy reads. Run-queue operations run in the queue's critical section.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <time.h>

#if PY_VERSION_HEX < 0x030C0000
/* 3.11 has no single-object exception API: the same, from fetch/restore. */
static PyObject *
PyErr_GetRaisedException(void)
{
    PyObject *t, *v, *tb;
    PyErr_Fetch(&t, &v, &tb);
    if (t == NULL)
        return NULL;
    PyErr_NormalizeException(&t, &v, &tb);
    if (tb != NULL)
        PyException_SetTraceback(v, tb);
    Py_XDECREF(t);
    Py_XDECREF(tb);
    return v;
}

static void
PyErr_SetRaisedException(PyObject *e)
{
    PyErr_Restore(Py_NewRef(Py_TYPE(e)), e, PyException_GetTraceback(e));
}
#endif

/* -- what bind() was given ------------------------------------------------------------ */

static PyTypeObject *G_type, *P_type;
static PyObject *Call, *Join, *CancelledError, *m;
static PyObject *S_RUNNABLE, *S_RUNNING, *S_PARKED, *S_SYSCALL, *S_DONE; /* statuses */
static PyObject *M_CANCEL, *M_DELIVERED, *M_DEFERRED;                    /* _pend marks */
static PyObject *NEVER_QUEUED, *WAIT_GOROUTINE;
static PyObject *current_tasks;   /* asyncio's {loop: task} */
static PyObject *locks, *state_locks; /* the striped G locks and state locks */
static PyObject *py_goexit, *py_cancelled_error, *py_casgstatus;
static PyObject *LOCK_MASK_o, *JOIN_WINDOW_o, *LOCAL_QUEUE_SIZE_o, *INLINE_JOIN_DEPTH_o,
    *GLOBAL_CHECK_TICKS_o, *CLOCK_EVERY_o;
static Py_ssize_t lock_mask, join_window, local_queue_size, inline_join_depth,
    global_check_ticks, clock_every;

/* What a bind function takes: objects by keyword, then the offsets of slots. */
typedef struct {
    const char *name;
    PyObject **var;
} BoundObject;

typedef struct {
    PyTypeObject **tp;
    const char *name;
    Py_ssize_t *off;
} BoundSlot;

static PyObject *ParkLockType; /* g.LockType: lockrank.RankedLock under MNSCHED_LOCKCHECK=1 */

static BoundObject bound_objects[] = {
    {"G", (PyObject **)&G_type},
    {"P", (PyObject **)&P_type},
    {"Call", &Call},
    {"Join", &Join},
    {"CancelledError", &CancelledError},
    {"m", &m},
    {"RUNNABLE", &S_RUNNABLE},
    {"RUNNING", &S_RUNNING},
    {"PARKED", &S_PARKED},
    {"SYSCALL", &S_SYSCALL},
    {"DONE", &S_DONE},
    {"CANCEL", &M_CANCEL},
    {"DELIVERED", &M_DELIVERED},
    {"DEFERRED", &M_DEFERRED},
    {"NEVER_QUEUED", &NEVER_QUEUED},
    {"WAIT_GOROUTINE", &WAIT_GOROUTINE},
    {"CURRENT_TASKS", &current_tasks},
    {"LOCKS", &locks},
    {"STATE_LOCKS", &state_locks},
    {"goexit", &py_goexit},
    {"cancelled_error", &py_cancelled_error},
    {"casgstatus", &py_casgstatus},
    {"LOCK_MASK", &LOCK_MASK_o},
    {"JOIN_WINDOW", &JOIN_WINDOW_o},
    {"LOCAL_QUEUE_SIZE", &LOCAL_QUEUE_SIZE_o},
    {"INLINE_JOIN_DEPTH", &INLINE_JOIN_DEPTH_o},
    {"GLOBAL_CHECK_TICKS", &GLOBAL_CHECK_TICKS_o},
    {"CLOCK_EVERY", &CLOCK_EVERY_o},
    {"LockType", &ParkLockType},
};

/* A P's counters and a G's queue stamp are C integers in their classes' C bases (PBase,
 * GBase; Python reads them as attributes): a Python int per update cost ~130
 * instructions, several per goroutine. Only the owning P's thread writes them, as in the
 * pure driver; sysmon and stats() read them from other threads. */
/* The metrics' histograms (Go's /sched/latencies:seconds): log2 buckets of microseconds,
 * bucket 0 below 1 us, bucket i in [2^(i-1), 2^i) us, the last one everything above
 * (2^24 us, about 17 s). p.py's METRICS_BUCKETS is the same number. */
#define HIST_BUCKETS 26
/* Go (proc.go, gTrackingPeriod = 8) measures a G's scheduling latency on every 8th
 * transition. A clock read costs ~25 ns here, and sampling 1 in 8 readyings and steps
 * cost skynet 2% of its time; 1 in 64 costs it a fraction of that and still fills a
 * histogram within a second of a busy P. A power of 2 (p.py and g.py use the same). */
#define METRICS_SAMPLE 64

typedef struct {
    PyObject_HEAD
    Py_ssize_t tick, qseq, nspawned, nfinished, npinned, njoin, njoined, njoinmiss, nparks;
    Py_ssize_t goidcache, goidend; /* goroutine ids taken from goidgen, not yet given */
    Py_ssize_t nready;             /* readyings on this P: every METRICS_SAMPLE-th is timed */
    char instrumented;             /* its runtime has instruments (Sched.reinstall sets it) */
    char long_steps; /* its last batch ran out within CLOCK_EVERY steps: read the clock after
                      * every step (a long step's start is then known to sysmon) */
    /* When it last read its clock (last_clock), its tick and its thread's CPU time then
     * (-1: not read): if the step running is the next one, it began then, and sysmon
     * knows exactly how much CPU it has used (it tells hogs by CPU time). An inline join
     * adds one: the joined step runs inside its joiner's. */
    Py_ssize_t clock_tick;
    double last_cpu;
    /* Its clocks (P.__init__ says what each is) and the counters Python updates: C
     * numbers, not attributes holding a float or int object. A long-lived object replaced
     * during a spawn storm lands in a pymalloc arena full of the storm's goroutines and
     * keeps it after they are gone: such objects left RSS climbing by about a MiB for each
     * storm (design.md, memory). */
    double last_clock, slice_start, batch_deadline, busy, tok_since, stuck_since;
    double sm_when, sm_cpu, sm_cpu0, sm_pre, sm_ran; /* sysmon's view (its thread writes) */
    Py_ssize_t sm_tick, nsteals, nstolen;
    Py_ssize_t lat[HIST_BUCKETS];      /* scheduling latency, sampled */
    Py_ssize_t steptime[HIST_BUCKETS]; /* step duration, sampled */
} PBase;

typedef struct {
    PyObject_HEAD
    Py_ssize_t qpos;    /* P.qseq when it was last pushed to a local queue (see join) */
    Py_ssize_t goid;    /* the goroutine id, in spawn order (newgoid) */
    Py_ssize_t golasti; /* where the spawner was in its code (_gocode), or -1 */
    Py_ssize_t goparent; /* the spawning goroutine's id, or 0 */
    long long readyts;   /* when it became runnable (ns), if sampled for latency; else 0 */
    double waitsince;    /* when it last parked or began to wait (its P's last_clock) */
} GBase;

#define PB(p) ((PBase *)(p))
#define GB(g) ((GBase *)(g))

static PyTypeObject PBase_type, GBase_type;
static Py_ssize_t never_queued; /* g.NEVER_QUEUED */

/* Slot offsets. */
static Py_ssize_t g_coro, g_ctx, g_status, g_pend, g_waitq, g_abandoned, g_sched,
    g_p, g_home, g_waiters, g_futw, g_name, g_result, g_exc, g_waitreason, g_gocode;
static Py_ssize_t p_curg, p_loop, p_sched, p_runq, p_runnext, p_retiring, p_active, p_spinning,
    p_id;

static BoundSlot bound_slots[] = {
    {&G_type, "_coro", &g_coro},
    {&G_type, "_ctx", &g_ctx},
    {&G_type, "_status", &g_status},
    {&G_type, "_pend", &g_pend},
    {&G_type, "_waitq", &g_waitq},
    {&G_type, "_abandoned", &g_abandoned},
    {&G_type, "_sched", &g_sched},
    {&G_type, "_p", &g_p},
    {&G_type, "_home", &g_home},
    {&G_type, "_waiters", &g_waiters},
    {&G_type, "_futw", &g_futw},
    {&G_type, "_name", &g_name},
    {&G_type, "_result", &g_result},
    {&G_type, "_exc", &g_exc},
    {&G_type, "_waitreason", &g_waitreason},
    {&G_type, "_gocode", &g_gocode},
    {&P_type, "curg", &p_curg},
    {&P_type, "loop", &p_loop},
    {&P_type, "sched", &p_sched},
    {&P_type, "runq", &p_runq},
    {&P_type, "runnext", &p_runnext},
    {&P_type, "retiring", &p_retiring},
    {&P_type, "active", &p_active},
    {&P_type, "spinning", &p_spinning},
    {&P_type, "id", &p_id},
};

/* Sched's slots (sched.py binds it: p is below sched). Until then, and for anything but
 * a Sched, the attributes are looked up by name. */
static PyTypeObject *Sched_type;
static Py_ssize_t sc_allg, sc_closing, sc_idle, sc_nspinning, sc_all_done, sc_runq, sc_lock,
    sc_instr, sc_token;

/* Set at import. */
static PyObject *deque_append, *deque_popleft; /* method descriptors of collections.deque */
static PyObject *str_trap, *str_fatal_error, *str_acquire, *str_release, *str_throw,
    *str_close, *str_cancel_wait, *str_value, *str_runqput, *str_ready_here, *str_wake,
    *str_wakep, *str_idle, *str_nspinning, *str_allg, *str_closing, *str_all_done, *str_set,
    *str_ready_remote, *str_newproc, *str_retrieved, *str_await_foreign, *str_p,
    *str_cr_frame, *str_cr_running, *str_cr_suspended, *str_runq, *str_globrunqget,
    *str_reset_spinning, *str_findrunnable, *str_stop_if_drained, *str_spawned,
    *str_before_step, *str_after_step, *str_parked, *str_readied, *str_exited, *str_take_token,
    *str_yield_token;

/* The P whose G this thread is stepping (borrowed; NULL outside a step): what m.p and
 * p.curg say together, without the thread-local lookup. */
static _Thread_local PyObject *running_p;

/* -- helpers -------------------------------------------------------------------------- */

#define SLOT(obj, off) (*(PyObject **)((char *)(obj) + (off)))

/* Replace a slot's value (v borrowed; NULL unsets it). */
static inline void
slot_set(PyObject *obj, Py_ssize_t off, PyObject *v)
{
    PyObject *old = SLOT(obj, off);
    Py_XINCREF(v);
    SLOT(obj, off) = v;
    Py_XDECREF(old);
}

static PyObject *
internal_error(const char *what)
{
    /* mnsched.errors.InternalError, imported when needed: only on a broken invariant. */
    PyObject *mod = PyImport_ImportModule("mnsched.errors");
    if (mod == NULL)
        return NULL;
    PyObject *cls = PyObject_GetAttrString(mod, "InternalError");
    Py_DECREF(mod);
    if (cls == NULL)
        return NULL;
    PyErr_SetString(cls, what);
    Py_DECREF(cls);
    return NULL;
}

static int
check_bound(PyObject *p, PyObject *g, const char *who)
{
    if (P_type == NULL) {
        internal_error("the C driver was used before _core.bind");
        return -1;
    }
    if ((p != NULL && !Py_IS_TYPE(p, P_type)) || (g != NULL && !Py_IS_TYPE(g, G_type))) {
        PyErr_Format(PyExc_TypeError, "_core.%s takes mnsched's P and G", who);
        return -1;
    }
    return 0;
}

static double
monotonic(void)
{
    /* time.monotonic() on Linux: the same clock, so the two drivers' readings compare. */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* casgstatus(g, old, new): the check inline, the report (an InternalError naming the
 * statuses) from the Python one. */
/* The calling thread's CPU time in seconds (time.thread_time()): a system call here,
 * ~0.4 us, so read per batch, and per step only when steps are long. */
static double
thread_cpu_now(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0)
        return -1.0;
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline long long
now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t); /* time.perf_counter_ns's clock */
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static inline int
hist_bucket(long long ns)
{
    unsigned long long us = ns > 0 ? (unsigned long long)ns / 1000 : 0;
    int b = us == 0 ? 0 : 64 - __builtin_clzll(us);
    return b < HIST_BUCKETS ? b : HIST_BUCKETS - 1;
}

/* g became runnable: time its wait for a P on every METRICS_SAMPLE-th readying, counted
 * on the readying P (its thread only: no atomic on the hot path), or, off any P, on one
 * shared counter. */
static unsigned long ready_ctr;

static inline void
sample_ready(PyObject *p, PyObject *g)
{
    unsigned long n = p != NULL && P_type != NULL && Py_IS_TYPE(p, P_type)
                          ? (unsigned long)++PB(p)->nready
                          : __atomic_add_fetch(&ready_ctr, 1, __ATOMIC_RELAXED);
    if ((n & (METRICS_SAMPLE - 1)) == 0)
        GB(g)->readyts = now_ns();
}

static int
casgstatus(PyObject *g, PyObject *old, PyObject *new)
{
    PyObject *cur = SLOT(g, g_status);
    if (cur != old && (cur == NULL || PyObject_RichCompareBool(cur, old, Py_EQ) != 1)) {
        PyObject *r = PyObject_CallFunctionObjArgs(py_casgstatus, g, old, new, NULL);
        if (r == NULL)
            return -1;
        Py_DECREF(r); /* it found the status right after all: go on */
    }
    slot_set(g, g_status, new);
    return 0;
}

static inline int
status_is(PyObject *g, PyObject *st)
{
    PyObject *cur = SLOT(g, g_status);
    return cur == st || (cur != NULL && PyObject_RichCompareBool(cur, st, Py_EQ) == 1);
}

static int
call_method0(PyObject *obj, PyObject *name)
{
    PyObject *r = PyObject_CallMethodNoArgs(obj, name);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

static int
call_method1(PyObject *obj, PyObject *name, PyObject *arg)
{
    PyObject *r = PyObject_CallMethodOneArg(obj, name, arg);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* A deque method called through its descriptor: no bound method to make. */
static PyObject *
deque_call(PyObject *meth, PyObject *q, PyObject *arg)
{
    PyObject *args[2] = {q, arg};
    return PyObject_Vectorcall(meth, args, arg == NULL ? 1 : 2, NULL);
}

/* -- the local run queue (runq.RunQ) ----------------------------------------------------- */

/* A P's local run queue and its runnext slot: a ring of references (Go: runtime2.go's
 * ``runq [256]guintptr``) that grows, because pinned Gs may exceed LOCAL_QUEUE_SIZE,
 * with the deque methods the Python code uses and the thieves' steal_half. The driver
 * works on it directly (a deque method call cost ~280 instructions, a removal in the
 * middle a rotation); join takes a G from anywhere in it by shifting the shorter side.
 * The owner pushes; the owner, a thief and sysmon may pop at once: every operation runs
 * whole inside the queue's critical section (the GIL on default builds; the object's
 * lock, Py_BEGIN_CRITICAL_SECTION, on free-threaded ones), so every G leaves once. */
typedef struct {
    PyObject_HEAD
    PyObject **ring; /* cap slots; items at head, head+1, ... (mod cap) */
    Py_ssize_t cap;  /* a power of two, or 0 before the first push */
    Py_ssize_t head;
    Py_ssize_t len;
} RunQ;

static PyTypeObject RunQ_type;

#if PY_VERSION_HEX >= 0x030D0000
#define RQ_BEGIN(q) Py_BEGIN_CRITICAL_SECTION(q)
#define RQ_END() Py_END_CRITICAL_SECTION()
#else
#define RQ_BEGIN(q) {
#define RQ_END() }
#endif

#define RQ_AT(q, i) ((q)->ring[((q)->head + (i)) & ((q)->cap - 1)])
#define RUNQ_FIRST_CAP 16 /* grows by doubling: 16, 32, ... LOCAL_QUEUE_SIZE and beyond */

static int
rq_grow(RunQ *q)
{
    Py_ssize_t cap = q->cap ? q->cap * 2 : RUNQ_FIRST_CAP;
    PyObject **ring = PyMem_New(PyObject *, cap);
    if (ring == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < q->len; i++)
        ring[i] = RQ_AT(q, i);
    PyMem_Free(q->ring);
    q->ring = ring;
    q->cap = cap;
    q->head = 0;
    return 0;
}

/* Append (at the tail) or prepend x, a new reference taken. */
static int
rq_push(RunQ *q, PyObject *x, int front)
{
    if (q->len == q->cap && rq_grow(q) < 0)
        return -1;
    if (front)
        q->head = (q->head - 1) & (q->cap - 1);
    RQ_AT(q, front ? 0 : q->len) = Py_NewRef(x);
    q->len++;
    return 0;
}

/* The head (a new reference), or NULL, without an error, when empty. */
static PyObject *
rq_pop(RunQ *q)
{
    if (q->len == 0)
        return NULL;
    PyObject *x = RQ_AT(q, 0);
    q->head = (q->head + 1) & (q->cap - 1);
    q->len--;
    return x;
}

/* Take item i out (a new reference), moving the shorter side of the ring over it. */
static PyObject *
rq_take(RunQ *q, Py_ssize_t i)
{
    PyObject *x = RQ_AT(q, i);
    if (i < q->len / 2) {
        for (Py_ssize_t k = i; k > 0; k--)
            RQ_AT(q, k) = RQ_AT(q, k - 1);
        q->head = (q->head + 1) & (q->cap - 1);
    }
    else {
        for (Py_ssize_t k = i; k < q->len - 1; k++)
            RQ_AT(q, k) = RQ_AT(q, k + 1);
    }
    q->len--;
    return x;
}

/* What the driver holds as a run queue must be one (P.__init__ makes them). */
static RunQ *
as_runq(PyObject *o)
{
    if (!Py_IS_TYPE(o, &RunQ_type)) {
        internal_error("a P's runq or runnext is not a runq.RunQ");
        return NULL;
    }
    return (RunQ *)o;
}

/* rq_pop in the queue's critical section: the head, or NULL without an error. */
static PyObject *
rq_pop_locked(RunQ *q)
{
    PyObject *x;
    RQ_BEGIN(q);
    x = rq_pop(q);
    RQ_END();
    return x;
}

/* The driver's pop from a P's runq or runnext slot (NULL with an error if it is not a
 * RunQ). */
static PyObject *
runq_pop(PyObject *o)
{
    RunQ *q = as_runq(o);
    return q == NULL ? NULL : rq_pop_locked(q);
}

static PyObject *
runq_new(PyTypeObject *tp, PyObject *args, PyObject *kw)
{
    if (PyTuple_GET_SIZE(args) != 0 || (kw != NULL && PyDict_GET_SIZE(kw) != 0)) {
        PyErr_SetString(PyExc_TypeError, "RunQ() takes no arguments");
        return NULL;
    }
    return tp->tp_alloc(tp, 0); /* empty: no ring until the first push */
}

static int
runq_traverse(RunQ *q, visitproc visit, void *arg)
{
    for (Py_ssize_t i = 0; i < q->len; i++)
        Py_VISIT(RQ_AT(q, i));
    return 0;
}

static void
rq_drain(RunQ *q)
{
    PyObject *x;
    while ((x = rq_pop(q)) != NULL)
        Py_DECREF(x);
}

static int
runq_clear(RunQ *q)
{
    RQ_BEGIN(q);
    rq_drain(q);
    RQ_END();
    return 0;
}

static void
runq_dealloc(RunQ *q)
{
    PyObject_GC_UnTrack(q);
    rq_drain(q);
    PyMem_Free(q->ring);
    Py_TYPE(q)->tp_free((PyObject *)q);
}

static Py_ssize_t
runq_len(RunQ *q)
{
    Py_ssize_t n;
    RQ_BEGIN(q);
    n = q->len;
    RQ_END();
    return n;
}

static PyObject *
runq_item(RunQ *q, Py_ssize_t i)
{
    PyObject *x = NULL;
    RQ_BEGIN(q);
    if (i >= 0 && i < q->len)
        x = Py_NewRef(RQ_AT(q, i));
    RQ_END();
    if (x == NULL)
        PyErr_SetString(PyExc_IndexError, "run queue index out of range");
    return x;
}

static int
runq_ass_item(RunQ *q, Py_ssize_t i, PyObject *v)
{
    if (v != NULL) {
        PyErr_SetString(PyExc_TypeError, "a run queue's items are only pushed and taken");
        return -1;
    }
    PyObject *x = NULL;
    RQ_BEGIN(q);
    if (i >= 0 && i < q->len)
        x = rq_take(q, i);
    RQ_END();
    if (x == NULL) {
        PyErr_SetString(PyExc_IndexError, "run queue index out of range");
        return -1;
    }
    Py_DECREF(x);
    return 0;
}

/* The items, oldest first, as a list taken at once. */
static PyObject *
runq_list(RunQ *q, Py_ssize_t n)
{
    PyObject *out = NULL;
    RQ_BEGIN(q);
    if (n > q->len)
        n = q->len;
    out = PyList_New(n);
    for (Py_ssize_t i = 0; out != NULL && i < n; i++)
        PyList_SET_ITEM(out, i, Py_NewRef(RQ_AT(q, i)));
    RQ_END();
    return out;
}

static PyObject *
runq_iter(RunQ *q)
{
    PyObject *items = runq_list(q, PY_SSIZE_T_MAX);
    PyObject *it = items == NULL ? NULL : PyObject_GetIter(items);
    Py_XDECREF(items);
    return it;
}

/* append and appendleft: rq_push in the critical section, None or NULL. */
static PyObject *
rq_push_method(RunQ *q, PyObject *x, int front)
{
    int rc;
    RQ_BEGIN(q);
    rc = rq_push(q, x, front);
    RQ_END();
    return rc < 0 ? NULL : Py_NewRef(Py_None);
}

static PyObject *
runq_append(RunQ *q, PyObject *x)
{
    return rq_push_method(q, x, 0);
}

static PyObject *
runq_appendleft(RunQ *q, PyObject *x)
{
    return rq_push_method(q, x, 1);
}

static PyObject *
runq_extend(RunQ *q, PyObject *items)
{
    PyObject *seq = PySequence_Fast(items, "RunQ.extend takes an iterable");
    if (seq == NULL)
        return NULL;
    int rc = 0;
    RQ_BEGIN(q);
    for (Py_ssize_t i = 0; rc == 0 && i < PySequence_Fast_GET_SIZE(seq); i++)
        rc = rq_push(q, PySequence_Fast_GET_ITEM(seq, i), 0);
    RQ_END();
    Py_DECREF(seq);
    return rc < 0 ? NULL : Py_NewRef(Py_None);
}

static PyObject *
runq_popleft(RunQ *q, PyObject *Py_UNUSED(ignored))
{
    PyObject *x = rq_pop_locked(q);
    if (x == NULL)
        PyErr_SetString(PyExc_IndexError, "pop from an empty run queue");
    return x;
}

static PyObject *
runq_clear_method(RunQ *q, PyObject *Py_UNUSED(ignored))
{
    runq_clear(q);
    Py_RETURN_NONE;
}

/* index(x, start=0): where x is, by identity (Gs compare by identity anyway). */
static PyObject *
runq_index(RunQ *q, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t start = 0, found = -1;
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "RunQ.index takes an item and an optional start");
        return NULL;
    }
    if (nargs == 2 && (start = PyLong_AsSsize_t(args[1])) == -1 && PyErr_Occurred())
        return NULL;
    RQ_BEGIN(q);
    for (Py_ssize_t i = start < 0 ? 0 : start; found < 0 && i < q->len; i++)
        if (RQ_AT(q, i) == args[0])
            found = i;
    RQ_END();
    if (found < 0) {
        PyErr_SetString(PyExc_ValueError, "not in the run queue");
        return NULL;
    }
    return PyLong_FromSsize_t(found);
}

/* Pop n items from the head at once into a list: what a thief (steal_half, Go's
 * runqgrab) or an overflow (take_half_for_global, Go's runqputslow) takes. */
static PyObject *
rq_take_head(RunQ *q, int half_of_full)
{
    PyObject *out = NULL;
    RQ_BEGIN(q);
    Py_ssize_t n = half_of_full ? q->len / 2 : q->len - q->len / 2;
    out = PyList_New(n);
    for (Py_ssize_t i = 0; out != NULL && i < n; i++)
        PyList_SET_ITEM(out, i, rq_pop(q));
    RQ_END();
    return out;
}

static PyObject *
runq_steal_half(RunQ *q, PyObject *Py_UNUSED(ignored))
{
    return rq_take_head(q, 0);
}

static PyObject *
runq_take_half_for_global(RunQ *q, PyObject *Py_UNUSED(ignored))
{
    return rq_take_head(q, 1);
}

static PyObject *
runq_repr(RunQ *q)
{
    PyObject *items = runq_list(q, PY_SSIZE_T_MAX);
    PyObject *r = items == NULL ? NULL : PyUnicode_FromFormat("RunQ(%R)", items);
    Py_XDECREF(items);
    return r;
}

static PyMethodDef runq_methods[] = {
    {"append", (PyCFunction)runq_append, METH_O, "Push at the tail."},
    {"appendleft", (PyCFunction)runq_appendleft, METH_O, "Push at the head."},
    {"extend", (PyCFunction)runq_extend, METH_O, "Push each, at the tail."},
    {"popleft", (PyCFunction)runq_popleft, METH_NOARGS, "Take the head (IndexError if empty)."},
    {"clear", (PyCFunction)runq_clear_method, METH_NOARGS, "Drop every item."},
    {"index", (PyCFunction)(void (*)(void))runq_index, METH_FASTCALL,
     "Where an item is, by identity (ValueError if absent)."},
    {"steal_half", (PyCFunction)runq_steal_half, METH_NOARGS,
     "Take half of the queue, rounded up, from the head (Go: runqgrab)."},
    {"take_half_for_global", (PyCFunction)runq_take_half_for_global, METH_NOARGS,
     "Take half of a full queue from the head (Go: runqputslow)."},
    {NULL},
};

static PySequenceMethods runq_as_sequence = {
    .sq_length = (lenfunc)runq_len,
    .sq_item = (ssizeargfunc)runq_item,
    .sq_ass_item = (ssizeobjargproc)runq_ass_item,
};

static PyTypeObject RunQ_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "mnsched._core.RunQ",
    .tp_basicsize = sizeof(RunQ),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "A P's local run queue (or runnext): a growing ring, FIFO, stealable by half",
    .tp_new = runq_new,
    .tp_dealloc = (destructor)runq_dealloc,
    .tp_traverse = (traverseproc)runq_traverse,
    .tp_clear = (inquiry)runq_clear,
    .tp_repr = (reprfunc)runq_repr,
    .tp_iter = (getiterfunc)runq_iter,
    .tp_as_sequence = &runq_as_sequence,
    .tp_methods = runq_methods,
};

/* The striped lock of g (lock_of/state_lock_of), borrowed. */
static PyObject *
stripe(PyObject *tuple, PyObject *g)
{
    Py_hash_t h = PyObject_Hash(g);
    if (h == -1)
        return NULL;
    return PyTuple_GET_ITEM(tuple, h & lock_mask);
}

/* The CancelledError a cancelled G raises (a new reference). */
static PyObject *
cancelled_error(PyObject *g)
{
    return PyObject_CallOneArg(py_cancelled_error, g);
}

/* -- locks (mnsched._core.Lock) --------------------------------------------------------- */

/* threading.Lock's semantics (any thread may release; not reentrant), made for the
 * driver: the striped G locks, the state locks and every lock a park point yields are
 * these in the C driver (g.new_lock), so that taking and dropping one costs a call into
 * the OS lock, not a method call that parses its arguments (a third of a channel
 * round trip's instructions went to those). Python code uses them as threading.Lock.
 * The driver's own waits are short (a lock is held for a queue operation) and not
 * interruptible; a Python caller's acquire is, as threading's, so that a signal handler
 * runs while the main thread waits. */
typedef struct {
    PyObject_HEAD
    PyThread_type_lock lock;
    char locked; /* written by the holder only; read racily by locked(), as threading's */
    PyObject *weakreflist;
} Lock;

static PyTypeObject Lock_type;
static PyObject *ThreadLockType; /* _thread.LockType: a park point may yield one too */

static inline void
lock_take(Lock *l)
{
    if (PyThread_acquire_lock_timed(l->lock, 0, 0) != PY_LOCK_ACQUIRED) {
        Py_BEGIN_ALLOW_THREADS
        PyThread_acquire_lock_timed(l->lock, -1, 0);
        Py_END_ALLOW_THREADS
    }
    l->locked = 1;
}

static inline int
lock_drop(Lock *l)
{
    if (!l->locked) {
        PyErr_SetString(PyExc_RuntimeError, "release unlocked lock");
        return -1;
    }
    l->locked = 0;
    PyThread_release_lock(l->lock);
    return 0;
}

/* Acquire or release a lock the driver holds: ours directly, any other by its methods. */
static int
lock_acquire(PyObject *lock)
{
    if (Py_IS_TYPE(lock, &Lock_type)) {
        lock_take((Lock *)lock);
        return 0;
    }
    return call_method0(lock, str_acquire);
}

static int
lock_release(PyObject *lock)
{
    if (Py_IS_TYPE(lock, &Lock_type))
        return lock_drop((Lock *)lock);
    return call_method0(lock, str_release);
}

/* Something failed with lock held: release it, keep the error; -1 (PYGEN_ERROR). */
static int
unlock_failed(PyObject *lock)
{
    PyObject *e = PyErr_GetRaisedException();
    lock_release(lock);
    PyErr_SetRaisedException(e);
    return -1;
}

static inline int
is_park_lock(PyObject *y)
{
    PyObject *t = (PyObject *)Py_TYPE(y);
    return Py_IS_TYPE(y, &Lock_type) || t == ThreadLockType || t == ParkLockType;
}

static PyObject *
lock_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    if (PyTuple_GET_SIZE(args) != 0 || (kw != NULL && PyDict_GET_SIZE(kw) != 0))
        return PyErr_Format(PyExc_TypeError, "Lock() takes no arguments");
    Lock *l = (Lock *)type->tp_alloc(type, 0);
    if (l == NULL)
        return NULL;
    l->lock = PyThread_allocate_lock();
    if (l->lock == NULL) {
        Py_DECREF(l);
        return PyErr_NoMemory();
    }
    return (PyObject *)l;
}

static void
lock_dealloc(Lock *l)
{
    if (l->weakreflist != NULL)
        PyObject_ClearWeakRefs((PyObject *)l);
    if (l->lock != NULL) {
        if (l->locked)
            PyThread_release_lock(l->lock);
        PyThread_free_lock(l->lock);
    }
    PyTypeObject *tp = Py_TYPE(l);
    tp->tp_free(l);
}

/* acquire(blocking=True, timeout=-1), as threading.Lock's. */
static PyObject *
lock_acquire_method(Lock *l, PyObject *args, PyObject *kw)
{
    if (PyTuple_GET_SIZE(args) == 0 && kw == NULL &&
        PyThread_acquire_lock_timed(l->lock, 0, 0) == PY_LOCK_ACQUIRED) {
        l->locked = 1; /* the common case: free */
        Py_RETURN_TRUE;
    }
    static char *kwlist[] = {"blocking", "timeout", NULL};
    int blocking = 1;
    double timeout = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|pd:acquire", kwlist, &blocking, &timeout))
        return NULL;
    if (!blocking && timeout != -1)
        return PyErr_Format(PyExc_ValueError, "can't specify a timeout for a non-blocking call");
    if (timeout < 0 && timeout != -1)
        return PyErr_Format(PyExc_ValueError, "timeout value must be a non-negative number");
    if (timeout > (double)PY_TIMEOUT_MAX / 1e6)
        return PyErr_Format(PyExc_OverflowError, "timeout value is too large");
    double deadline = timeout > 0 ? monotonic() + timeout : 0;
    PY_TIMEOUT_T us = !blocking ? 0 : timeout < 0 ? -1 : (PY_TIMEOUT_T)(timeout * 1e6);
    PyLockStatus r = PyThread_acquire_lock_timed(l->lock, 0, 0);
    while (r != PY_LOCK_ACQUIRED && us != 0) {
        Py_BEGIN_ALLOW_THREADS
        r = PyThread_acquire_lock_timed(l->lock, us, 1);
        Py_END_ALLOW_THREADS
        if (r != PY_LOCK_INTR)
            break;
        if (Py_MakePendingCalls() < 0) /* a signal handler raised */
            return NULL;
        if (us > 0) {
            double left = deadline - monotonic();
            us = left <= 0 ? 0 : (PY_TIMEOUT_T)(left * 1e6);
            r = us == 0 ? PyThread_acquire_lock_timed(l->lock, 0, 0) : PY_LOCK_FAILURE;
        }
    }
    if (r != PY_LOCK_ACQUIRED)
        Py_RETURN_FALSE;
    l->locked = 1;
    Py_RETURN_TRUE;
}

static PyObject *
lock_release_method(Lock *l, PyObject *Py_UNUSED(arg))
{
    if (lock_drop(l) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
lock_locked(Lock *l, PyObject *Py_UNUSED(arg))
{
    return PyBool_FromLong(l->locked);
}

/* _at_fork_reinit(): in a forked child, a fresh unlocked lock, as threading.Lock's: the
 * parent's other threads may have held it, and are gone. The old OS lock may be in an
 * inconsistent state, so it is not freed (CPython's _PyThread_at_fork_reinit leaks it
 * too). */
static PyObject *
lock_at_fork_reinit(Lock *l, PyObject *Py_UNUSED(arg))
{
    PyThread_type_lock fresh = PyThread_allocate_lock();
    if (fresh == NULL)
        return PyErr_NoMemory();
    l->lock = fresh;
    l->locked = 0;
    Py_RETURN_NONE;
}

static PyObject *
lock_repr(Lock *l)
{
    return PyUnicode_FromFormat("<%s mnsched._core.Lock object at %p>",
                                l->locked ? "locked" : "unlocked", l);
}

static PyMethodDef lock_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))lock_acquire_method, METH_VARARGS | METH_KEYWORDS,
     "acquire(blocking=True, timeout=-1): as threading.Lock's."},
    {"release", (PyCFunction)lock_release_method, METH_NOARGS, "release(): as threading.Lock's."},
    {"locked", (PyCFunction)lock_locked, METH_NOARGS, "locked(): as threading.Lock's."},
    {"_at_fork_reinit", (PyCFunction)lock_at_fork_reinit, METH_NOARGS,
     "_at_fork_reinit(): unlocked again, in a forked child (as threading.Lock's)."},
    {"__enter__", (PyCFunction)(void (*)(void))lock_acquire_method, METH_VARARGS | METH_KEYWORDS,
     NULL},
    {"__exit__", (PyCFunction)lock_release_method, METH_VARARGS, NULL}, /* args unused */
    {NULL, NULL, 0, NULL},
};

static PyTypeObject Lock_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "mnsched._core.Lock",
    .tp_basicsize = sizeof(Lock),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Lock(): threading.Lock, for the driver (taken and dropped without a call)",
    .tp_new = lock_new,
    .tp_dealloc = (destructor)lock_dealloc,
    .tp_repr = (reprfunc)lock_repr,
    .tp_methods = lock_methods,
    .tp_weaklistoffset = offsetof(Lock, weakreflist),
};

/* -- the step token (mnsched/steptoken.py's StepToken) ------------------------------------
 *
 * At most one goroutine step of a runtime runs at a time (serial steps): a P holds the
 * token while it steps goroutines. The pure-Python StepToken is the reference; this is the
 * same state machine, so that run_batch can read the owner after every step with a load.
 * Every change is made under ``mutex``. A waiting P waits on a gate of its own (an OS
 * lock, held until the token is handed to it), recorded on its C stack: waits are FIFO,
 * and whoever passes the token on releases the next waiter's gate. */
typedef struct Waiter {
    struct Waiter *next;
    PyObject *p; /* borrowed: the P waits in acquire while it is listed */
    PyThread_type_lock gate;
} Waiter;

typedef struct {
    PyObject_HEAD
    PyThread_type_lock mutex;
    PyObject *owner; /* the P holding it (a strong reference), or NULL */
    char stepping;   /* the owner is running steps now (acquire to idle or release) */
    Waiter *head, *tail;
    Py_ssize_t nwaiting, nhandoffs, nrevokes;
} StepToken;

static PyTypeObject StepToken_type;

/* Who holds it, read without the mutex (by its would-be holder, to skip the mutex when
 * it holds it already: only that P's thread makes it the owner). */
static inline PyObject *
token_owner(StepToken *t)
{
    return __atomic_load_n(&t->owner, __ATOMIC_ACQUIRE);
}

/* Under mutex: the next waiter gets the token, or nobody. Returns the old owner (the
 * caller drops it once the mutex is released). */
static PyObject *
token_pass_on(StepToken *t)
{
    PyObject *old = t->owner;
    Waiter *w = t->head;
    if (w == NULL) {
        t->owner = NULL;
        t->stepping = 0;
        return old;
    }
    t->head = w->next;
    if (t->head == NULL)
        t->tail = NULL;
    t->nwaiting--;
    t->nhandoffs++;
    t->stepping = 1;
    t->owner = Py_NewRef(w->p);
    PyThread_release_lock(w->gate); /* w is on the waiter's stack: last touch */
    return old;
}

static inline void
token_lock(StepToken *t)
{
    if (PyThread_acquire_lock_timed(t->mutex, 0, 0) != PY_LOCK_ACQUIRED) {
        Py_BEGIN_ALLOW_THREADS
        PyThread_acquire_lock_timed(t->mutex, -1, 0);
        Py_END_ALLOW_THREADS
    }
}

/* p is about to step: make it the owner, waiting for its turn, and mark it stepping:
 * 1, or 0 if p held it already, -1 with an exception if a signal handler raised while p
 * waited (its turn is then given up). */
static int
token_acquire(StepToken *t, PyObject *p)
{
    token_lock(t);
    if (t->owner == p) {
        t->stepping = 1;
        PyThread_release_lock(t->mutex);
        return 0;
    }
    if (t->owner == NULL) {
        t->owner = Py_NewRef(p);
        t->stepping = 1;
        PyThread_release_lock(t->mutex);
        return 1;
    }
    Waiter w = {NULL, p, PyThread_allocate_lock()};
    if (w.gate == NULL) {
        PyThread_release_lock(t->mutex);
        PyErr_NoMemory();
        return -1;
    }
    PyThread_acquire_lock(w.gate, WAIT_LOCK);
    if (t->tail == NULL)
        t->head = &w;
    else
        t->tail->next = &w;
    t->tail = &w;
    t->nwaiting++;
    PyThread_release_lock(t->mutex);
    int rc = 1;
    for (;;) {
        PyLockStatus r;
        Py_BEGIN_ALLOW_THREADS
        r = PyThread_acquire_lock_timed(w.gate, -1, 1);
        Py_END_ALLOW_THREADS
        if (r == PY_LOCK_ACQUIRED)
            break;
        if (Py_MakePendingCalls() < 0) { /* a signal handler raised: give up the turn */
            PyObject *old = NULL;
            token_lock(t);
            if (t->owner == p) {
                old = token_pass_on(t); /* it was handed to p meanwhile: pass it on */
            }
            else {
                Waiter **pp = &t->head, *prev = NULL;
                while (*pp != &w) {
                    prev = *pp;
                    pp = &(*pp)->next;
                }
                *pp = w.next;
                if (t->tail == &w)
                    t->tail = prev;
                t->nwaiting--;
            }
            PyThread_release_lock(t->mutex);
            Py_XDECREF(old);
            rc = -1;
            break;
        }
    }
    PyThread_free_lock(w.gate);
    return rc;
}

/* Pass the token on from p, if p holds it and (when given) is still in step number
 * tick (sysmon's revoke: the hog's step may have ended since sysmon looked), or (idle_only:
 * sysmon's reclaim) is not stepping: 1 if passed on. */
enum { PASS_ANY = -1, PASS_IF_IDLE = -2 };

static int
token_pass_from(StepToken *t, PyObject *p, Py_ssize_t tick)
{
    token_lock(t);
    int mine = t->owner == p && (tick == PASS_ANY || (tick == PASS_IF_IDLE && !t->stepping) ||
                                 (tick >= 0 && PB(p)->tick == tick));
    if (!mine) {
        PyThread_release_lock(t->mutex);
        return 0;
    }
    t->nrevokes += tick >= 0;
    PyObject *old = token_pass_on(t);
    PyThread_release_lock(t->mutex);
    Py_XDECREF(old);
    return 1;
}

/* p stepped and keeps the token between steps (P.take_token): sysmon may reclaim it. */
static void
token_idle(StepToken *t, PyObject *p)
{
    token_lock(t);
    if (t->owner == p)
        t->stepping = 0;
    PyThread_release_lock(t->mutex);
}

static PyObject *
steptoken_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    if (PyTuple_GET_SIZE(args) != 0 || (kw != NULL && PyDict_GET_SIZE(kw) != 0))
        return PyErr_Format(PyExc_TypeError, "StepToken() takes no arguments");
    StepToken *t = (StepToken *)type->tp_alloc(type, 0);
    if (t == NULL)
        return NULL;
    t->mutex = PyThread_allocate_lock();
    if (t->mutex == NULL) {
        Py_DECREF(t);
        return PyErr_NoMemory();
    }
    return (PyObject *)t;
}

static int
steptoken_traverse(StepToken *t, visitproc visit, void *arg)
{
    Py_VISIT(t->owner);
    return 0;
}

static void
steptoken_dealloc(StepToken *t)
{
    PyObject_GC_UnTrack(t);
    Py_CLEAR(t->owner);
    if (t->mutex != NULL)
        PyThread_free_lock(t->mutex);
    Py_TYPE(t)->tp_free(t);
}

static PyObject *
steptoken_acquire(StepToken *t, PyObject *p)
{
    int rc = token_acquire(t, p);
    return rc < 0 ? NULL : PyBool_FromLong(rc);
}

static PyObject *
steptoken_release(StepToken *t, PyObject *p)
{
    token_pass_from(t, p, PASS_ANY);
    Py_RETURN_NONE;
}

static PyObject *
steptoken_idle(StepToken *t, PyObject *p)
{
    token_idle(t, p);
    Py_RETURN_NONE;
}

static PyObject *
steptoken_revoke(StepToken *t, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyObject_TypeCheck(args[0], &PBase_type))
        return PyErr_Format(PyExc_TypeError, "revoke(p, tick): p a P");
    Py_ssize_t tick = PyLong_AsSsize_t(args[1]);
    if (tick < 0)
        return PyErr_Occurred() ? NULL : PyErr_Format(PyExc_ValueError, "tick must be >= 0");
    return PyBool_FromLong(token_pass_from(t, args[0], tick));
}

static PyObject *
steptoken_reclaim(StepToken *t, PyObject *p)
{
    return PyBool_FromLong(token_pass_from(t, p, PASS_IF_IDLE));
}

static PyObject *
steptoken_get_owner(StepToken *t, void *Py_UNUSED(closure))
{
    token_lock(t);
    PyObject *o = Py_NewRef(t->owner != NULL ? t->owner : Py_None);
    PyThread_release_lock(t->mutex);
    return o;
}

static PyMethodDef steptoken_methods[] = {
    {"acquire", (PyCFunction)steptoken_acquire, METH_O,
     "acquire(p): p is about to step: the token for it, waiting its turn; False if held."},
    {"idle", (PyCFunction)steptoken_idle, METH_O,
     "idle(p): p keeps it between steps (not stepping): sysmon may reclaim it."},
    {"release", (PyCFunction)steptoken_release, METH_O,
     "release(p): the next waiting P gets it (a no-op unless p holds it)."},
    {"revoke", (PyCFunction)(void (*)(void))steptoken_revoke, METH_FASTCALL,
     "revoke(p, tick): sysmon takes it from p's hogging step number tick, if still in it."},
    {"reclaim", (PyCFunction)steptoken_reclaim, METH_O,
     "reclaim(p): sysmon takes it from p holding it between steps; False if stepping."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef steptoken_members[] = {
    {"stepping", T_BOOL, offsetof(StepToken, stepping), READONLY, "the owner is stepping"},
    {"waiting", T_PYSSIZET, offsetof(StepToken, nwaiting), READONLY, "Ps waiting for it"},
    {"nhandoffs", T_PYSSIZET, offsetof(StepToken, nhandoffs), READONLY,
     "times it was given to a waiting P"},
    {"nrevokes", T_PYSSIZET, offsetof(StepToken, nrevokes), READONLY,
     "times sysmon took it from a hogging step"},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef steptoken_getset[] = {
    {"owner", (getter)steptoken_get_owner, NULL, "the P holding it, or None", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject StepToken_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "mnsched._core.StepToken",
    .tp_basicsize = sizeof(StepToken),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "StepToken(): one goroutine step of a runtime at a time (steptoken.py)",
    .tp_new = steptoken_new,
    .tp_dealloc = (destructor)steptoken_dealloc,
    .tp_traverse = (traverseproc)steptoken_traverse,
    .tp_methods = steptoken_methods,
    .tp_members = steptoken_members,
    .tp_getset = steptoken_getset,
};

/* sched.<name> (a new reference): its slot once Sched is bound, else by name. */
static PyObject *
sched_get(PyObject *sched, Py_ssize_t off, PyObject *name)
{
    if (Sched_type != NULL && Py_IS_TYPE(sched, Sched_type)) {
        PyObject *v = SLOT(sched, off);
        if (v != NULL)
            return Py_NewRef(v);
    }
    return PyObject_GetAttr(sched, name);
}

/* -- instruments (mnsched/instrument.py) and the trace buffer (mnsched/trace.py) ------- */

/* The driver's own events, as the trace records them (trace.py's kinds: the same
 * numbers, checked there against TRACE_KINDS). */
enum { TR_BEGIN, TR_END, TR_SPAWN, TR_PARK, TR_READY, TR_EXIT, TR_NKINDS };

/* One event: 48 bytes, no Python object made while tracing but the reason's reference. */
typedef struct {
    long long ts;         /* CLOCK_MONOTONIC ns: time.perf_counter_ns's and monotonic's clock */
    void *sched;          /* the runtime (its id() when drained) */
    Py_ssize_t tid;       /* the P's id, or -1 (then thread says where) */
    unsigned long thread; /* the thread's ident */
    Py_ssize_t a, b;      /* the goroutine id; the spawner's id (spawn) */
    PyObject *obj;        /* the wait reason (park) or the given name (spawn), or NULL */
    int kind;
} TraceEv;

/* The Tracer's base in the C driver: the driver's events go straight into this array
 * (an event costs a clock read and a few stores, where a Python hook call cost ~1 us and
 * multiplied skynet's time by eight); the Python side drains it when the trace stops.
 * Appends run in the buffer's critical section (the GIL, or the object's lock on
 * free-threaded builds). */
typedef struct {
    PyObject_HEAD
    TraceEv *ev;
    Py_ssize_t len, cap;
} TraceBuf;

static PyTypeObject TraceBuf_type;

/* Record an event of g's where p is (NULL, or not a P: on no P). obj is a park's
 * reason; a spawn's name and spawner are g's own. */
static int
tb_add(PyObject *self, int kind, PyObject *p, PyObject *g, PyObject *obj)
{
    TraceBuf *tb = (TraceBuf *)self;
    Py_ssize_t b = 0;
    if (kind == TR_SPAWN) {
        obj = SLOT(g, g_name); /* NULL unless it was given one */
        b = GB(g)->goparent;
    }
    long long ts = now_ns();
    Py_ssize_t tid = -1;
    if (p != NULL && P_type != NULL && Py_IS_TYPE(p, P_type)) {
        tid = PyLong_AsSsize_t(SLOT(p, p_id));
        if (tid == -1 && PyErr_Occurred())
            return -1;
    }
    int rc = 0;
    RQ_BEGIN(self);
    if (tb->len == tb->cap) {
        Py_ssize_t cap = tb->cap ? tb->cap * 2 : 4096;
        TraceEv *ev = PyMem_Realloc(tb->ev, (size_t)cap * sizeof(TraceEv));
        if (ev == NULL)
            rc = -1;
        else {
            tb->ev = ev;
            tb->cap = cap;
        }
    }
    if (rc == 0) {
        TraceEv *e = &tb->ev[tb->len++];
        e->ts = ts;
        e->sched = SLOT(g, g_sched);
        e->tid = tid;
        e->thread = PyThread_get_thread_ident();
        e->a = GB(g)->goid;
        e->b = b;
        e->obj = Py_XNewRef(obj);
        e->kind = kind;
    }
    RQ_END();
    if (rc < 0)
        PyErr_NoMemory();
    return rc;
}

/* The runtime's instruments (Sched.instr, a new reference), or NULL with no error when
 * it has none: the one check the hot path pays for them. */
static inline PyObject *
instr_of(PyObject *sched)
{
    if (__builtin_expect(Sched_type == NULL || !Py_IS_TYPE(sched, Sched_type), 0))
        return NULL;
    PyObject *h = SLOT(sched, sc_instr);
    if (__builtin_expect(h == Py_None || h == NULL, 1))
        return NULL;
    return Py_NewRef(h);
}

/* The instruments of p's runtime, from p's thread: the hot path reads p's flag only (one
 * load: reading the runtime's slot at every hook point cost skynet 2-3% of its time). */
static inline PyObject *
instr_here(PyObject *p)
{
    if (__builtin_expect(!PB(p)->instrumented, 1))
        return NULL;
    return instr_of(SLOT(p, p_sched));
}

/* Tell ins of an event (consumes ins): into the trace buffer if ins is the tracer,
 * else ins.<name>(g[, p or reason]). An instrument's failure is handled in Instruments
 * (logged, the instrument removed): an error here is the scheduler's. p is where it
 * happens, if known; arg is the hook's second argument, if it has one. */
static int
fire(PyObject *ins, int kind, PyObject *name, PyObject *p, PyObject *g, PyObject *arg)
{
    int rc;
    if (PyObject_TypeCheck(ins, &TraceBuf_type)) {
        rc = tb_add(ins, kind, p, g, kind == TR_PARK ? arg : NULL);
    }
    else {
        PyObject *args[3] = {ins, g, arg};
        PyObject *r = PyObject_VectorcallMethod(name, args, arg == NULL ? 2 : 3, NULL);
        rc = r == NULL ? -1 : 0;
        Py_XDECREF(r);
    }
    Py_DECREF(ins);
    return rc;
}

/* TraceBuf's hooks, for calls from Python (the Python paths of the driver, or the
 * Instruments fan-out when other instruments run beside the tracer): hook(g), or
 * before_step/after_step(g, p), or parked(g, reason). Where it happens is the P given,
 * else this thread's. */
static PyObject *
tb_hook(PyObject *self, PyObject *const *args, Py_ssize_t nargs, int kind)
{
    int with_p = kind == TR_BEGIN || kind == TR_END;
    if (nargs != 1 + (with_p || kind == TR_PARK) || G_type == NULL || !Py_IS_TYPE(args[0], G_type))
        return PyErr_Format(PyExc_TypeError, "TraceBuf: a hook takes a G, and a P or a reason");
    PyObject *p = with_p ? Py_NewRef(args[1]) : PyObject_GetAttr(m, str_p);
    if (p == NULL)
        return NULL;
    int rc = tb_add(self, kind, p, args[0], kind == TR_PARK ? args[1] : NULL);
    Py_DECREF(p);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

#define TB_HOOK(fn, kind)                                                                   \
    static PyObject *fn(PyObject *self, PyObject *const *args, Py_ssize_t nargs)            \
    {                                                                                       \
        return tb_hook(self, args, nargs, kind);                                            \
    }
TB_HOOK(tb_spawned, TR_SPAWN)
TB_HOOK(tb_before_step, TR_BEGIN)
TB_HOOK(tb_after_step, TR_END)
TB_HOOK(tb_parked, TR_PARK)
TB_HOOK(tb_readied, TR_READY)
TB_HOOK(tb_exited, TR_EXIT)

static void
tb_clear(TraceBuf *tb)
{
    for (Py_ssize_t i = 0; i < tb->len; i++)
        Py_CLEAR(tb->ev[i].obj);
    tb->len = 0;
}

/* _drain(): the events so far as (kind, ts, id(sched), where, goid, b, obj) tuples, and
 * empty the buffer. where is the P's id, or (thread ident,) for an event on no P. */
static PyObject *
tb_drain(PyObject *self, PyObject *Py_UNUSED(arg))
{
    TraceBuf *tb = (TraceBuf *)self;
    PyObject *out = NULL;
    RQ_BEGIN(self);
    out = PyList_New(tb->len);
    for (Py_ssize_t i = 0; out != NULL && i < tb->len; i++) {
        TraceEv *e = &tb->ev[i];
        PyObject *where = e->tid >= 0 ? PyLong_FromSsize_t(e->tid)
                                      : Py_BuildValue("(k)", e->thread); /* (ident,) */
        PyObject *t = where == NULL ? NULL
                                    : Py_BuildValue("(iLnNnnO)", e->kind, e->ts,
                                                    (Py_ssize_t)(intptr_t)e->sched, where, e->a,
                                                    e->b, e->obj ? e->obj : Py_None);
        if (t == NULL)
            Py_CLEAR(out);
        else
            PyList_SET_ITEM(out, i, t);
    }
    if (out != NULL)
        tb_clear(tb);
    RQ_END();
    return out;
}

static void
tb_dealloc(PyObject *self)
{
    TraceBuf *tb = (TraceBuf *)self;
    tb_clear(tb);
    PyMem_Free(tb->ev);
    Py_TYPE(self)->tp_free(self);
}

static PyMethodDef tb_methods[] = {
    {"spawned", (PyCFunction)(void (*)(void))tb_spawned, METH_FASTCALL, NULL},
    {"before_step", (PyCFunction)(void (*)(void))tb_before_step, METH_FASTCALL, NULL},
    {"after_step", (PyCFunction)(void (*)(void))tb_after_step, METH_FASTCALL, NULL},
    {"parked", (PyCFunction)(void (*)(void))tb_parked, METH_FASTCALL, NULL},
    {"readied", (PyCFunction)(void (*)(void))tb_readied, METH_FASTCALL, NULL},
    {"exited", (PyCFunction)(void (*)(void))tb_exited, METH_FASTCALL, NULL},
    {"_drain", (PyCFunction)tb_drain, METH_NOARGS,
     "_drain(): the driver's events so far, as tuples; empties the buffer."},
    {NULL},
};

static PyTypeObject TraceBuf_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "mnsched._core.TraceBuf",
    .tp_basicsize = sizeof(TraceBuf),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "The tracer's base in the C driver: the driver's events, recorded in C",
    .tp_methods = tb_methods,
    .tp_new = PyType_GenericNew,
    .tp_dealloc = tb_dealloc,
};

/* Goroutine ids: process-wide, as Go's goid. A P takes GOID_BATCH at a time from the
 * shared counter and gives them out itself (Go: proc.go's goidcache, _GoidCacheBatch =
 * 16): one atomic add per 16 spawns, and ids in spawn order on each P. A spawn from no
 * P draws from the counter directly. */
#define GOID_BATCH 16
static Py_ssize_t goidgen;

static inline Py_ssize_t
newgoid(PyObject *p)
{
    if (p == NULL || P_type == NULL || !Py_IS_TYPE(p, P_type))
        return __atomic_add_fetch(&goidgen, 1, __ATOMIC_RELAXED);
    PBase *pb = PB(p);
    if (pb->goidcache == pb->goidend) {
        pb->goidend = __atomic_add_fetch(&goidgen, GOID_BATCH, __ATOMIC_RELAXED) + 1;
        pb->goidcache = pb->goidend - GOID_BATCH;
    }
    return pb->goidcache++;
}

/* newgoid(p): the next goroutine id for a G spawned on p (its thread), or on no P (None). */
static PyObject *
core_newgoid(PyObject *Py_UNUSED(mod), PyObject *p)
{
    return PyLong_FromSsize_t(newgoid(p == Py_None ? NULL : p));
}

static PyObject *
core_sample_ready(PyObject *Py_UNUSED(mod), PyObject *g)
{
    if (!PyObject_TypeCheck(g, &GBase_type))
        return PyErr_Format(PyExc_TypeError, "sample_ready takes a G");
    sample_ready(NULL, g);
    Py_RETURN_NONE;
}

/* -- making work runnable (P.runqput, P.ready_here, goready) ------------------------ */

static int
maybe_wakep(PyObject *sched)
{
    /* Sched.maybe_wakep's unlocked test, then its wakep (parallel steps only). */
    if (Sched_type != NULL && Py_IS_TYPE(sched, Sched_type) && SLOT(sched, sc_token) != Py_None)
        return 0;
    PyObject *idle = sched_get(sched, sc_idle, str_idle);
    if (idle == NULL)
        return -1;
    int any = PyObject_IsTrue(idle);
    Py_DECREF(idle);
    if (any <= 0)
        return any;
    PyObject *ns = sched_get(sched, sc_nspinning, str_nspinning);
    if (ns == NULL)
        return -1;
    int spinning = PyObject_IsTrue(ns);
    Py_DECREF(ns);
    if (spinning != 0)
        return spinning < 0 ? -1 : 0;
    return call_method0(sched, str_wakep);
}

static int
runqput(PyObject *p, PyObject *g)
{
    RunQ *q = as_runq(SLOT(p, p_runq));
    if (q == NULL)
        return -1;
    int rc = 1;
    RQ_BEGIN(q);
    if (q->len < local_queue_size || SLOT(g, g_home) != Py_None) {
        GB(g)->qpos = PB(p)->qseq++;
        rc = rq_push(q, g, 0);
    }
    RQ_END();
    if (rc > 0)
        return call_method1(p, str_runqput, g); /* full: half of it to the global queue */
    return rc;
}

static int
ready_here(PyObject *p, PyObject *g)
{
    if (SLOT(p, p_retiring) == Py_True && SLOT(g, g_home) == Py_None)
        return call_method1(p, str_ready_here, g); /* to the global queue */
    slot_set(g, g_p, p);
    RunQ *rn = as_runq(SLOT(p, p_runnext));
    if (rn == NULL)
        return -1;
    PyObject *prev = NULL;
    int rc;
    RQ_BEGIN(rn);
    rc = rq_push(rn, g, 0);
    if (rc == 0 && rn->len > 1)
        prev = rq_pop(rn); /* NULL if sysmon took it meanwhile */
    RQ_END();
    if (rc < 0)
        return -1;
    if (prev != NULL) {
        rc = runqput(p, prev);
        Py_DECREF(prev);
        if (rc < 0 || maybe_wakep(SLOT(p, p_sched)) < 0)
            return -1;
    }
    if (SLOT(p, p_active) != Py_True)
        return call_method0(p, str_wake);
    return 0;
}

/* goready(w, old, p): p is the caller's P if it knows it, else NULL (this thread's). */
static int
goready(PyObject *p, PyObject *w, PyObject *old)
{
    if (casgstatus(w, old, S_RUNNABLE) < 0)
        return -1;
    slot_set(w, g_waitq, Py_None);
    PyObject *mp = NULL;
    if (p == NULL) {
        mp = PyObject_GetAttr(m, str_p);
        if (mp == NULL)
            return -1;
        p = mp;
    }
    sample_ready(p, w);
    PyObject *ins = Py_IS_TYPE(p, P_type) && SLOT(p, p_sched) == SLOT(w, g_sched)
                        ? instr_here(p)
                        : instr_of(SLOT(w, g_sched));
    if (ins != NULL && fire(ins, TR_READY, str_readied, p, w, NULL) < 0) {
        Py_XDECREF(mp);
        return -1;
    }
    PyObject *home = SLOT(w, g_home);
    int rc;
    if (Py_IS_TYPE(p, P_type) && SLOT(p, p_sched) == SLOT(w, g_sched) &&
        (home == Py_None || home == p))
        rc = ready_here(p, w);
    else
        rc = call_method1(SLOT(w, g_sched), str_ready_remote, w);
    Py_XDECREF(mp);
    return rc;
}

/* -- finishing (goexit) ---------------------------------------------------------------- */

static int
goexit(PyObject *p, PyObject *g, PyObject *result, PyObject *exc)
{
    if (exc != Py_None && !PyObject_TypeCheck(exc, (PyTypeObject *)CancelledError)) {
        /* It failed: explain a loop mismatch, keep it for the unretrieved report. */
        PyObject *r = PyObject_CallFunctionObjArgs(py_goexit, g, result, exc, p, NULL);
        if (r == NULL)
            return -1;
        Py_DECREF(r);
        return 0;
    }
    /* Out of the counts before it is seen DONE (a waiter on another P's thread that
     * finds it done must not then count it live). */
    PB(p)->nfinished++;
    PyObject *sched = SLOT(g, g_sched);
    PyObject *allg = sched_get(sched, sc_allg, str_allg);
    if (allg == NULL)
        return -1;
    if (PySet_Discard(allg, g) < 0) {
        Py_DECREF(allg);
        return -1;
    }
    PyObject *lock = stripe(locks, g);
    if (lock == NULL || lock_acquire(lock) < 0) {
        Py_DECREF(allg);
        return -1;
    }
    if (casgstatus(g, S_RUNNING, S_DONE) < 0) {
        Py_DECREF(allg);
        return unlock_failed(lock);
    }
    slot_set(g, g_result, result);
    slot_set(g, g_exc, exc);
    PyObject *waiters = SLOT(g, g_waiters); /* taken: the slot gets None */
    SLOT(g, g_waiters) = Py_NewRef(Py_None);
    int rc = lock_release(lock);
    PyObject *ins = instr_here(p);
    if (ins != NULL && rc == 0)
        rc = fire(ins, TR_EXIT, str_exited, p, g, NULL);
    else
        Py_XDECREF(ins);
    PyObject *home = SLOT(g, g_home);
    if (rc == 0 && home != Py_None)
        PB(home)->npinned--;
    if (rc == 0) {
        PyObject *closing = sched_get(sched, sc_closing, str_closing);
        rc = closing == NULL ? -1 : 0;
        if (closing == Py_True && PySet_GET_SIZE(allg) == 0) {
            PyObject *ev = sched_get(sched, sc_all_done, str_all_done);
            rc = ev == NULL ? -1 : call_method0(ev, str_set); /* shutdown waits for it */
            Py_XDECREF(ev);
        }
        Py_XDECREF(closing);
    }
    Py_DECREF(allg);
    if (rc == 0 && waiters != NULL && waiters != Py_None) {
        PyObject *one[1] = {waiters};
        PyObject **ws = one;
        Py_ssize_t n = 1;
        if (PyList_CheckExact(waiters)) {
            ws = PySequence_Fast_ITEMS(waiters); /* nobody else holds the list now */
            n = PyList_GET_SIZE(waiters);
        }
        for (Py_ssize_t i = 0; rc == 0 && i < n; i++) {
            PyObject *w = ws[i];
            if (Py_IS_TYPE(w, G_type)) {
                rc = goready(p, w, S_PARKED);
            }
            else {
                PyObject *r = PyObject_CallOneArg(w, g);
                rc = r == NULL ? -1 : 0;
                Py_XDECREF(r);
            }
        }
    }
    Py_XDECREF(waiters);
    return rc;
}

/* -- stepping (P.step) ------------------------------------------------------------------ */

/* Resume g's coroutine in its context: send None, or throw what is pending (P's
 * _throw_pending). Returns PYGEN_NEXT/PYGEN_RETURN with *res set, or PYGEN_ERROR. */
static PySendResult
resume(PyObject *g, PyObject **res)
{
    PyObject *coro = SLOT(g, g_coro), *ctx = SLOT(g, g_ctx), *pend = SLOT(g, g_pend);
    if (coro == NULL || ctx == NULL || pend == NULL) {
        internal_error("stepping a G without a coroutine, context or pend slot");
        return PYGEN_ERROR;
    }
    if (PyContext_Enter(ctx) < 0)
        return PYGEN_ERROR;
    PySendResult r;
    if (pend == Py_None) {
        r = PyIter_Send(coro, Py_None, res);
    }
    else {
        Py_INCREF(pend);
        slot_set(g, g_pend, Py_None);
        PyObject *exc, *y = NULL;
        if (pend == M_CANCEL || pend == M_DELIVERED || pend == M_DEFERRED) {
            PyObject *ab = SLOT(g, g_abandoned);
            if (ab == Py_True) {
                /* Shutdown gave up on it: close the coroutine (its finally blocks run,
                 * through GeneratorExit), and it ends cancelled. */
                if (call_method0(coro, str_close) == 0) {
                    PyObject *ce = cancelled_error(g);
                    if (ce != NULL)
                        PyErr_SetRaisedException(ce);
                }
                Py_DECREF(pend);
                PyContext_Exit(ctx);
                return PYGEN_ERROR;
            }
            exc = cancelled_error(g);
        }
        else {
            exc = Py_NewRef(pend);
        }
        Py_DECREF(pend);
        if (exc != NULL) {
            y = PyObject_CallMethodOneArg(coro, str_throw, exc);
            Py_DECREF(exc);
        }
        if (y != NULL) {
            *res = y;
            r = PYGEN_NEXT;
        }
        else if (PyErr_ExceptionMatches(PyExc_StopIteration)) {
            /* It returned: the value rides on StopIteration (throw has no send API). */
            PyObject *e = PyErr_GetRaisedException();
            PyObject *v = PyObject_GetAttr(e, str_value);
            Py_DECREF(e);
            r = v == NULL ? PYGEN_ERROR : PYGEN_RETURN;
            *res = v;
        }
        else {
            r = PYGEN_ERROR;
        }
    }
    if (PyContext_Exit(ctx) < 0) {
        if (r != PYGEN_ERROR)
            Py_CLEAR(*res);
        return PYGEN_ERROR;
    }
    return r;
}

/* g yielded a park lock: mark it parked (in SYSCALL, for a blocking call) before the
 * lock is released, so whoever finds g in its wait queue finds it parked; the state lock
 * orders this against a concurrent cancel() (docs/design.md, "Parking"). */
static int
park(PyObject *p, PyObject *g, PyObject *lock)
{
    PyObject *sl = stripe(state_locks, g);
    if (sl == NULL || lock_acquire(sl) < 0)
        return -1;
    PyObject *waitq = SLOT(g, g_waitq);
    PyObject *to = (waitq != NULL && (PyObject *)Py_TYPE(waitq) == Call) ? S_SYSCALL : S_PARKED;
    if (casgstatus(g, S_RUNNING, to) < 0) {
        unlock_failed(sl);
        return unlock_failed(lock);
    }
    GB(g)->waitsince = PB(p)->last_clock;
    PB(p)->nparks++;
    PyObject *ins = instr_here(p);
    if (ins != NULL && fire(ins, TR_PARK, str_parked, p, g, SLOT(g, g_waitreason)) < 0) {
        unlock_failed(sl);
        return unlock_failed(lock);
    }
    PyObject *pend = SLOT(g, g_pend);
    if (pend == M_CANCEL || pend == M_DEFERRED) {
        /* cancel() came first: we deliver it. The queue is read under its lock: once it
         * is released a waker may ready g and clear _waitq. */
        slot_set(g, g_pend, M_DELIVERED);
        waitq = SLOT(g, g_waitq);
        Py_XINCREF(waitq);
        int rc = lock_release(sl);
        if (rc == 0)
            rc = lock_release(lock);
        if (rc == 0 && waitq != NULL && waitq != Py_None)
            rc = call_method1(waitq, str_cancel_wait, g);
        Py_XDECREF(waitq);
        return rc;
    }
    if (lock_release(sl) < 0)
        return -1;
    return lock_release(lock);
}

/* Step g on p; prev (borrowed, or NULL) is the current task to restore after it. */
static int
step(PyObject *p, PyObject *g, PyObject *prev)
{
    PyObject *loop = SLOT(p, p_loop);
    if (loop == NULL) {
        internal_error("stepping on a P without a loop");
        return -1;
    }
    if (casgstatus(g, S_RUNNABLE, S_RUNNING) < 0)
        return -1;
    slot_set(p, p_curg, g);
    Py_ssize_t tick = ++PB(p)->tick;
    long long t0 = 0, rts = GB(g)->readyts;
    if (rts != 0 || (tick & (METRICS_SAMPLE - 1)) == 0) {
        t0 = now_ns();
        if (rts != 0) {
            GB(g)->readyts = 0;
            PB(p)->lat[hist_bucket(t0 - rts)]++;
        }
        if ((tick & (METRICS_SAMPLE - 1)) != 0)
            t0 = 0; /* only the latency was sampled */
    }
    PyObject *ins = instr_here(p);
    if (ins != NULL && fire(Py_NewRef(ins), TR_BEGIN, str_before_step, p, g, p) < 0) {
        Py_DECREF(ins);
        return -1;
    }
    Py_INCREF(loop);
    if (PyDict_SetItem(current_tasks, loop, g) < 0) {
        Py_DECREF(loop);
        return -1;
    }
    PyObject *y = NULL, *outer = running_p;
    running_p = p;
    PySendResult r = resume(g, &y);
    running_p = outer;
    if (t0 != 0)
        PB(p)->steptime[hist_bucket(now_ns() - t0)]++;
    PyObject *exc = r == PYGEN_ERROR ? PyErr_GetRaisedException() : NULL;
    /* Back to what ran before: nothing (from the scheduling loop or a callback), or the
     * task or G that stepped aside for this one (step_eagerly). */
    int bad = prev == NULL ? PyDict_DelItem(current_tasks, loop)
                           : PyDict_SetItem(current_tasks, loop, prev);
    Py_DECREF(loop);
    slot_set(p, p_curg, Py_None);
    if (ins != NULL && bad == 0)
        bad = fire(ins, TR_END, str_after_step, p, g, p);
    else
        Py_XDECREF(ins);
    if (bad < 0) {
        Py_XDECREF(y);
        Py_XDECREF(exc);
        return -1;
    }
    int rc = 0;
    if (r == PYGEN_RETURN) {
        PyObject *pend = SLOT(g, g_pend);
        if (pend == M_CANCEL) {
            /* Cancelled during its last step (a Ctrl-C while main computes): it ends
             * cancelled, as a Task whose coroutine returns with _must_cancel set. */
            slot_set(g, g_pend, Py_None);
            PyObject *ce = cancelled_error(g);
            rc = ce == NULL ? -1 : goexit(p, g, Py_None, ce);
            Py_XDECREF(ce);
        }
        else {
            if (pend != Py_None)
                slot_set(g, g_pend, Py_None); /* DEFERRED: no wait came; it keeps it */
            rc = goexit(p, g, y, Py_None);
        }
        Py_DECREF(y);
    }
    else if (r == PYGEN_ERROR) {
        if (exc == NULL) {
            internal_error("a step failed without an exception");
            return -1;
        }
        rc = goexit(p, g, Py_None, exc);
        if (rc == 0 && (PyErr_GivenExceptionMatches(exc, PyExc_KeyboardInterrupt) ||
                        PyErr_GivenExceptionMatches(exc, PyExc_SystemExit)))
            rc = call_method1(SLOT(p, p_sched), str_fatal_error, exc);
        Py_DECREF(exc);
    }
    else if (is_park_lock(y)) {
        rc = park(p, g, y);
        Py_DECREF(y);
    }
    else {
        PyObject *v = PyObject_CallMethodObjArgs(p, str_trap, g, y, NULL);
        Py_DECREF(y);
        rc = v == NULL ? -1 : 0;
        Py_XDECREF(v);
    }
    return rc;
}

/* P.step_eagerly: step g inside whatever runs now, which steps aside meanwhile. */
static int
step_eagerly(PyObject *p, PyObject *g)
{
    PyObject *loop = SLOT(p, p_loop);
    PyObject *prev = PyDict_GetItemWithError(current_tasks, loop);
    if (prev == NULL && PyErr_Occurred())
        return -1;
    Py_XINCREF(prev);
    PyObject *curg = Py_XNewRef(SLOT(p, p_curg));
    int rc = step(p, g, prev); /* which puts prev back as the current task */
    slot_set(p, p_curg, curg);
    Py_XDECREF(curg);
    Py_XDECREF(prev);
    return rc;
}

/* -- the scheduling loop (P._schedule's) ------------------------------------------------ */

/* The G to run next, as steps 2-8 of P._schedule's priority list take it (a new
 * reference), or NULL with no error: the P has parked. *now is the batch's clock. */
static PyObject *
next_g(PyObject *p, PyObject *glob, PyObject *now)
{
    /* 2. Every GLOBAL_CHECK_TICKS ticks, the global queue first. */
    Py_ssize_t nglob = PyObject_Size(glob);
    if (nglob < 0)
        return NULL;
    if (nglob > 0 && PB(p)->tick % global_check_ticks == 0) {
        PyObject *one = PyLong_FromLong(1);
        PyObject *a[3] = {SLOT(p, p_sched), p, one};
        PyObject *g = one == NULL ? NULL : PyObject_VectorcallMethod(str_globrunqget, a, 3, NULL);
        Py_XDECREF(one);
        if (g == NULL)
            return NULL;
        if (g != Py_None) {
            if (SLOT(p, p_spinning) == Py_True &&
                call_method1(SLOT(p, p_sched), str_reset_spinning, p) < 0) {
                Py_DECREF(g);
                return NULL;
            }
            PB(p)->slice_start = PyFloat_AS_DOUBLE(now);
            return g;
        }
        Py_DECREF(g);
    }
    /* 3. runnext, in the current time slice. */
    PyObject *g = runq_pop(SLOT(p, p_runnext));
    if (g != NULL || PyErr_Occurred())
        return g;
    PB(p)->slice_start = PyFloat_AS_DOUBLE(now);
    /* 4. The local queue. */
    g = runq_pop(SLOT(p, p_runq));
    if (g != NULL || PyErr_Occurred())
        return g;
    /* 5-8. Elsewhere, or park. */
    g = PyObject_CallMethodNoArgs(p, str_findrunnable);
    if (g == Py_None) {
        Py_DECREF(g);
        return NULL;
    }
    return g;
}

/* run_batch(p, now, deadline, time_slice, token): P._schedule's loop, from step 2 on;
 * True if the batch ran out (the caller posts the next one), False if the P parked. The
 * times are the caller's: tests and the instruction count change BATCH_TIME and
 * TIME_SLICE. token: the runtime's StepToken (None: parallel steps). It is taken before
 * a step, when p does not hold it (the first step of the batch, as a P that finds no
 * work has nothing to wait for); a batch whose token sysmon took (a hog) ends after
 * that step, so the P lets its loop run and queues for the token again. The caller
 * releases it. */
static PyObject *
core_run_batch(PyObject *Py_UNUSED(mod), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5)
        return PyErr_Format(PyExc_TypeError,
                            "_core.run_batch(p, now, deadline, time_slice, token)");
    PyObject *p = args[0];
    double deadline = PyFloat_AsDouble(args[2]), time_slice = PyFloat_AsDouble(args[3]);
    if (check_bound(p, NULL, "run_batch") < 0 || PyErr_Occurred())
        return NULL;
    StepToken *tok = NULL;
    if (Py_IS_TYPE(args[4], &StepToken_type))
        tok = (StepToken *)args[4];
    else if (args[4] != Py_None)
        return PyErr_Format(PyExc_TypeError, "run_batch: token must be a StepToken or None");
    PyObject *glob = sched_get(SLOT(p, p_sched), sc_runq, str_runq);
    if (glob == NULL)
        return NULL;
    PyObject *now = Py_NewRef(args[1]), *result = NULL;
    Py_ssize_t every = PB(p)->long_steps ? 1 : clock_every;
    for (Py_ssize_t n = 1;; n++) {
        PyObject *g = next_g(p, glob, now);
        if (g == NULL) {
            if (!PyErr_Occurred())
                result = Py_NewRef(Py_False); /* parked */
            break;
        }
        int rc = 0;
        /* The first step marks p stepping (it may hold the token from a loop turn). */
        if (tok != NULL && (n == 1 || token_owner(tok) != p) && token_acquire(tok, p) < 0) {
            if (ready_here(p, g) < 0) /* a signal handler raised while p waited: keep g */
                PyErr_Clear();        /* (the first error is the one to report) */
            rc = -1;
        }
        if (rc == 0)
            rc = Py_IS_TYPE(g, G_type) ? step(p, g, NULL) : (check_bound(NULL, g, "run_batch"), -1);
        Py_DECREF(g);
        if (rc < 0)
            break;
        if (tok != NULL && token_owner(tok) != p) {
            result = Py_NewRef(Py_True); /* sysmon took it from that step: let others run */
            break;
        }
        if (n % every == 0) {
            double t = monotonic();
            PyObject *clock = PyFloat_FromDouble(t);
            if (clock == NULL)
                break;
            Py_SETREF(now, clock);
            PB(p)->last_clock = t;
            PB(p)->clock_tick = PB(p)->tick;
            PB(p)->last_cpu = every == 1 ? thread_cpu_now() : -1.0; /* long steps only */
            if (t - PB(p)->slice_start >= time_slice) {
                /* The runnext chain used up its slice: to the back of the queue. */
                PyObject *x = runq_pop(SLOT(p, p_runnext));
                rc = x == NULL ? (PyErr_Occurred() ? -1 : 0) : runqput(p, x);
                Py_XDECREF(x);
                if (rc < 0)
                    break;
            }
            if (t >= deadline) {
                PB(p)->long_steps = n <= clock_every; /* (the pure loop's rule) */
                result = Py_NewRef(Py_True);
                break;
            }
        }
    }
    Py_DECREF(now);
    Py_DECREF(glob);
    return result;
}

/* -- the inline join (P.join) ------------------------------------------------------------ */

/* Where join finds g in q, or -1: at the head; in the last JOIN_WINDOW slots if g was
 * pushed recently (*from_tail is then set); in the first ones. As P.join does. */
static Py_ssize_t
join_find(RunQ *q, PyObject *g, Py_ssize_t dist, int *from_tail)
{
    Py_ssize_t n = q->len, w = join_window;
    if (n == 0)
        return -1;
    if (RQ_AT(q, 0) == g)
        return 0;
    if (dist < w)
        for (Py_ssize_t i = n - 1; i >= (n > w ? n - w : 0); i--)
            if (RQ_AT(q, i) == g) {
                *from_tail = 1;
                return i;
            }
    for (Py_ssize_t i = 1; i < (n < w ? n : w); i++)
        if (RQ_AT(q, i) == g)
            return i;
    return -1;
}

static int
join(PyObject *p, PyObject *g)
{
    RunQ *rn = as_runq(SLOT(p, p_runnext)), *q = rn == NULL ? NULL : as_runq(SLOT(p, p_runq));
    if (q == NULL)
        return -1;
    PyObject *x = NULL;
    RQ_BEGIN(rn);
    if (rn->len > 0 && RQ_AT(rn, 0) == g)
        x = rq_pop(rn);
    RQ_END();
    if (x == NULL) {
        int from_tail = 0;
        RQ_BEGIN(q);
        Py_ssize_t i = join_find(q, g, PB(p)->qseq - GB(g)->qpos, &from_tail);
        if (i >= 0)
            x = rq_take(q, i);
        RQ_END();
        if (from_tail)
            PB(p)->qseq--; /* those before it are now one nearer the tail (P.join) */
    }
    if (x == NULL) {
        PB(p)->njoinmiss++; /* in the middle of the queue, or elsewhere */
        return 0;
    }
    Py_DECREF(x);
    Py_ssize_t depth = PB(p)->njoin;
    double now;
    if (depth >= inline_join_depth || (now = monotonic()) >= PB(p)->batch_deadline)
        return ready_here(p, g); /* too deep, or the batch is over: g runs next */
    PB(p)->last_clock = now; /* for sysmon: this P makes progress */
    /* g takes runnext's turn: what sits there goes where a thief can take it. */
    PyObject *nxt = rq_pop_locked(rn);
    if (nxt != NULL) {
        int rc = runqput(p, nxt);
        Py_DECREF(nxt);
        if (rc < 0 || maybe_wakep(SLOT(p, p_sched)) < 0)
            return -1;
    }
    PB(p)->njoin++;
    PB(p)->njoined++;
    /* g's step continues the P's run without a return to the scheduler: for sysmon, it
     * began when its joiner did (if that start is known, g's is). */
    PB(p)->clock_tick++;
    int rc = step_eagerly(p, g);
    PB(p)->njoin--;
    return rc;
}

/* -- spawning (Sched.newproc's fast path) --------------------------------------------- */

/* A coroutine that has not started: the check newproc makes inline. Its frame state
 * says so without making a frame object (which cr_frame would, for the collector to
 * track); the state's value is CPython's FRAME_CREATED (internal/pycore_frame.h), which
 * 3.13 renumbered. Other versions ask the attributes. */
#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030D0000
#define FRAME_CREATED_STATE (-2)
#elif PY_VERSION_HEX >= 0x030D0000 && PY_VERSION_HEX < 0x030E0000
#define FRAME_CREATED_STATE (-3)
#endif

static int
fresh(PyObject *coro)
{
    if (!PyCoro_CheckExact(coro))
        return 0;
#ifdef FRAME_CREATED_STATE
    return ((PyCoroObject *)coro)->cr_frame_state == FRAME_CREATED_STATE;
#else
    PyObject *running = PyObject_GetAttr(coro, str_cr_running);
    PyObject *suspended = running == NULL ? NULL : PyObject_GetAttr(coro, str_cr_suspended);
    PyObject *frame = suspended == NULL ? NULL : PyObject_GetAttr(coro, str_cr_frame);
    int ok = frame != NULL && running == Py_False && suspended == Py_False && frame != Py_None;
    Py_XDECREF(running);
    Py_XDECREF(suspended);
    Py_XDECREF(frame);
    return frame == NULL ? -1 : ok;
#endif
}

/* Where a spawn happens: the running Python frame's code and instruction offset (in bytes,
 * as f_lasti and co_lines() count), read from CPython's interpreter frame. The API
 * (PyEval_GetFrame) makes a frame object for the calling frame, which the collector then
 * tracks: 3-4% of skynet's time. So on the versions whose layout this mirrors (the prefix
 * of internal/pycore_frame.h's _PyInterpreterFrame), the frame is read in place; other
 * versions take the API. Returns a new reference to the code, or NULL (unknown). */
#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030C0000
typedef struct {
    PyObject *f_func, *f_globals, *f_builtins, *f_locals;
    PyCodeObject *f_code;
    PyObject *frame_obj;
    void *previous;
    _Py_CODEUNIT *prev_instr;
} IFrame;
#define IFRAME_CURRENT(ts) ((IFrame *)(ts)->cframe->current_frame)
#define IFRAME_CODE(f) ((PyObject *)(f)->f_code)
#define IFRAME_INSTR(f) ((f)->prev_instr)
#elif PY_VERSION_HEX >= 0x030C0000 && PY_VERSION_HEX < 0x030D0000
typedef struct {
    PyCodeObject *f_code;
    void *previous;
    PyObject *f_funcobj, *f_globals, *f_builtins, *f_locals, *frame_obj;
    _Py_CODEUNIT *prev_instr;
} IFrame;
#define IFRAME_CURRENT(ts) ((IFrame *)(ts)->cframe->current_frame)
#define IFRAME_CODE(f) ((PyObject *)(f)->f_code)
#define IFRAME_INSTR(f) ((f)->prev_instr)
#elif PY_VERSION_HEX >= 0x030D0000 && PY_VERSION_HEX < 0x030E0000
typedef struct {
    PyObject *f_executable;
    void *previous;
    PyObject *f_funcobj, *f_globals, *f_builtins, *f_locals, *frame_obj;
    void *instr_ptr; /* _Py_CODEUNIT *, internal in 3.13 */
} IFrame;
#define IFRAME_CURRENT(ts) ((IFrame *)(ts)->current_frame)
#define IFRAME_CODE(f) ((f)->f_executable)
#define IFRAME_INSTR(f) ((f)->instr_ptr)
#endif

static PyObject *
spawn_site(Py_ssize_t *lasti)
{
#ifdef IFRAME_CURRENT
    IFrame *f = IFRAME_CURRENT(PyThreadState_Get());
    PyObject *code = f == NULL ? NULL : IFRAME_CODE(f);
    if (code == NULL || !PyCode_Check(code))
        return NULL;
    *lasti = (char *)IFRAME_INSTR(f) - ((PyCodeObject *)code)->co_code_adaptive;
    return Py_NewRef(code);
#else
    PyFrameObject *f = PyEval_GetFrame();
    if (f == NULL)
        return NULL;
    *lasti = PyFrame_GetLasti(f);
    return (PyObject *)PyFrame_GetCode(f);
#endif
}

/* G.__init__(coro, sched, p, name), slot by slot, in a copy of the current context. */
static PyObject *
new_g(PyObject *p, PyObject *coro, PyObject *name)
{
    PyObject *g = G_type->tp_alloc(G_type, 0);
    PyObject *ctx = g == NULL ? NULL : PyContext_CopyCurrent();
    if (ctx == NULL) {
        Py_XDECREF(g);
        return NULL;
    }
    SLOT(g, g_coro) = Py_NewRef(coro);
    SLOT(g, g_ctx) = ctx;
    SLOT(g, g_sched) = Py_NewRef(SLOT(p, p_sched));
    SLOT(g, g_p) = Py_NewRef(p);
    SLOT(g, g_status) = Py_NewRef(S_RUNNABLE);
    SLOT(g, g_home) = Py_NewRef(Py_None);
    SLOT(g, g_waiters) = Py_NewRef(Py_None);
    SLOT(g, g_waitq) = Py_NewRef(Py_None);
    SLOT(g, g_pend) = Py_NewRef(Py_None);
    SLOT(g, g_futw) = Py_NewRef(Py_None);
    GB(g)->qpos = never_queued;
    GB(g)->goid = newgoid(p);
    sample_ready(p, g);
    /* Where it was created (Go's "created by"): the spawner's code and offset; the
     * line is worked out only when a dump asks. */
    Py_ssize_t lasti = -1;
    PyObject *code = spawn_site(&lasti);
    SLOT(g, g_gocode) = code == NULL ? Py_NewRef(Py_None) : code;
    GB(g)->golasti = code == NULL ? -1 : lasti;
    PyObject *parent = SLOT(p, p_curg);
    GB(g)->goparent = Py_IS_TYPE(parent, G_type) ? GB(parent)->goid : 0;
    if (name != Py_None)
        SLOT(g, g_name) = Py_NewRef(name);
    return g;
}

/* After a spawn: the runtime's instruments hear of it. */
static inline int
spawned(PyObject *p, PyObject *g)
{
    PyObject *ins = instr_here(p);
    return ins == NULL ? 0 : fire(ins, TR_SPAWN, str_spawned, p, g, NULL);
}

/* go_here(coro, name): go(coro) from a goroutine's step (on running_p), or None if
 * this is not one, or coro is not a coroutine object (the caller then takes api.go's
 * path). A coroutine that is not fresh, or a runtime closing, goes to Sched.newproc,
 * which says what is wrong. */
static PyObject *
go_here(PyObject *coro, PyObject *name)
{
    PyObject *p = running_p;
    if (p == NULL || !PyCoro_CheckExact(coro))
        Py_RETURN_NONE;
    PyObject *sched = SLOT(p, p_sched), *allg = NULL;
    int ok = fresh(coro);
    if (ok < 0)
        return NULL;
    if (ok) {
        /* Sched.newproc's check; allp needs none here: a P is stepping a G, so only
         * closing can empty it. */
        PyObject *closing = sched_get(sched, sc_closing, str_closing);
        if (closing == NULL)
            return NULL;
        ok = closing == Py_False;
        Py_DECREF(closing);
        if (ok && (allg = sched_get(sched, sc_allg, str_allg)) == NULL)
            return NULL;
        ok = ok && PySet_CheckExact(allg);
    }
    if (!ok) {
        Py_XDECREF(allg);
        PyObject *a[3] = {sched, coro, name};
        return PyObject_VectorcallMethod(str_newproc, a, 3, NULL);
    }
    PyObject *g = new_g(p, coro, name);
    if (g == NULL) {
        Py_DECREF(allg);
        return NULL;
    }
    /* The spawner is a live G: shutdown cannot find allg empty before this add
     * (runtime.py, step 2). */
    int rc = PySet_Add(allg, g);
    Py_DECREF(allg);
    if (rc == 0)
        PB(p)->nspawned++;
    if (rc < 0 || spawned(p, g) < 0 || ready_here(p, g) < 0) {
        Py_DECREF(g);
        return NULL;
    }
    return g;
}

static PyObject *
core_go_here(PyObject *Py_UNUSED(mod), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2)
        return PyErr_Format(PyExc_TypeError, "_core.go_here(coro, name)");
    return go_here(args[0], args[1]);
}

/* spawn_here(coro, name): serve.spawn_here's fast path, Sched.newproc(coro, name,
 * pin=True, eager=True) from a task or callback on a P's thread (aiohttp's task for a
 * request): a G pinned to this P, stepped at once (P.step_from_callback). None when this
 * is not that case (no P here, a step running, not a fresh coroutine, the runtime
 * closing): the caller then takes newproc, which says what is wrong. */
static PyObject *
core_spawn_here(PyObject *Py_UNUSED(mod), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2)
        return PyErr_Format(PyExc_TypeError, "_core.spawn_here(coro, name)");
    PyObject *coro = args[0], *name = args[1];
    if (P_type == NULL || Sched_type == NULL || running_p != NULL || !PyCoro_CheckExact(coro))
        Py_RETURN_NONE;
    PyObject *p = PyObject_GetAttr(m, str_p); /* m.p: this thread's P, or None */
    if (p == NULL)
        return NULL;
    PyObject *sched = Py_IS_TYPE(p, P_type) ? SLOT(p, p_sched) : NULL;
    int ok = sched != NULL && Py_IS_TYPE(sched, Sched_type) && SLOT(p, p_curg) == Py_None;
    if (ok && (ok = fresh(coro)) < 0) {
        Py_DECREF(p);
        return NULL;
    }
    PyObject *g = ok ? new_g(p, coro, name) : NULL;
    if (g == NULL) {
        Py_DECREF(p);
        if (ok)
            return NULL;
        Py_RETURN_NONE;
    }
    /* Sched._add_outside: the closing check and the add under sched.lock, which shutdown
     * takes to set closing and look at allg (runtime.py, step 1). */
    PyObject *lock = SLOT(sched, sc_lock), *allg = SLOT(sched, sc_allg);
    int rc = lock_acquire(lock);
    if (rc == 0) {
        ok = SLOT(sched, sc_closing) == Py_False && PySet_CheckExact(allg);
        rc = ok ? PySet_Add(allg, g) : 0;
        rc = rc < 0 ? unlock_failed(lock) : lock_release(lock);
    }
    if (rc < 0 || !ok) {
        Py_DECREF(g);
        Py_DECREF(p);
        if (rc < 0)
            return NULL;
        Py_RETURN_NONE;
    }
    PB(p)->nspawned++;
    slot_set(g, g_home, p); /* P.pin */
    PB(p)->npinned++;
    /* The step token, as P.step_from_callback takes and yields it. */
    PyObject *tok = SLOT(sched, sc_token);
    int serial = Py_IS_TYPE(tok, &StepToken_type);
    int started = spawned(p, g) == 0;
    double clock = monotonic();
    if (started && serial) {
        if (token_owner((StepToken *)tok) == p)
            token_acquire((StepToken *)tok, p); /* held this turn: stepping again */
        else if (call_method0(p, str_take_token) < 0)
            started = 0;
    }
    if (started) { /* for sysmon: a step starts now */
        PB(p)->last_clock = clock;
        PB(p)->last_cpu = -1.0; /* (not read: P.step_from_callback) */
        rc = step_eagerly(p, g);
        if (rc == 0 && serial && ((StepToken *)tok)->nwaiting > 0) {
            PyObject *now = PyFloat_FromDouble(monotonic());
            rc = now == NULL ? -1 : call_method1(p, str_yield_token, now);
            Py_XDECREF(now);
        }
        else if (serial) {
            token_idle((StepToken *)tok, p); /* P.yield_token, with nobody waiting */
        }
    }
    if (!started || rc < 0) {
        /* It never ran: queue it rather than lose it. */
        PyObject *e = PyErr_GetRaisedException();
        if (status_is(g, S_RUNNABLE) && ready_here(p, g) < 0)
            PyErr_Clear(); /* the first error is the one to report */
        PyErr_SetRaisedException(e);
        Py_DECREF(g);
        Py_DECREF(p);
        return NULL;
    }
    if (SLOT(p, p_active) != Py_True) {
        /* g queued work (gosched, a retry) while the P was idle, or a retiring P may be
         * drained (P.step_from_callback). */
        RunQ *q = as_runq(SLOT(p, p_runq)), *rn = q == NULL ? NULL : as_runq(SLOT(p, p_runnext));
        Py_ssize_t nglob = rn == NULL ? -1 : PyObject_Size(SLOT(sched, sc_runq));
        if (nglob < 0)
            rc = -1;
        else if (nglob || runq_len(q) || runq_len(rn))
            rc = call_method0(p, str_wake);
        else if (SLOT(p, p_retiring) == Py_True)
            rc = call_method0(p, str_stop_if_drained);
    }
    Py_DECREF(p);
    if (rc < 0) {
        Py_DECREF(g);
        return NULL;
    }
    return g;
}

/* -- go() (api.go) -------------------------------------------------------------------- */

/* ``mnsched.go`` in the C driver: ``go(coro)`` or ``go(coro, name=...)`` from a goroutine
 * spawns through go_here without a Python frame; anything else (pin, context, a
 * decorator use, a caller that is not a goroutine, a coroutine that is not fresh) calls
 * api.go, the Python function it wraps (whose name, doc and signature it carries:
 * functools.update_wrapper fills its __dict__). */
typedef struct {
    PyObject_HEAD
    PyObject *fallback;
    PyObject *dict;
    vectorcallfunc vectorcall;
} Go;

static PyObject *
go_vectorcall(Go *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs == 1 && running_p != NULL) {
        Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
        int plain = nkw == 0, named = nkw == 1 && PyUnicode_Check(PyTuple_GET_ITEM(kwnames, 0)) &&
                                      PyUnicode_CompareWithASCIIString(
                                          PyTuple_GET_ITEM(kwnames, 0), "name") == 0;
        if (plain || named) {
            PyObject *g = go_here(args[0], named ? args[1] : Py_None);
            if (g != Py_None)
                return g; /* the G, or NULL with the error */
            Py_DECREF(g);
        }
    }
    return PyObject_Vectorcall(self->fallback, args, nargsf, kwnames);
}

static PyObject *
go_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    PyObject *fallback;
    if (kw != NULL && PyDict_GET_SIZE(kw) != 0)
        return PyErr_Format(PyExc_TypeError, "Go(fallback) takes no keyword arguments");
    if (!PyArg_UnpackTuple(args, "Go", 1, 1, &fallback))
        return NULL;
    if (!PyCallable_Check(fallback))
        return PyErr_Format(PyExc_TypeError, "Go(fallback) needs a callable");
    Go *self = (Go *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->fallback = Py_NewRef(fallback);
    self->vectorcall = (vectorcallfunc)go_vectorcall;
    return (PyObject *)self;
}

static int
go_traverse(Go *self, visitproc visit, void *arg)
{
    Py_VISIT(self->fallback);
    Py_VISIT(self->dict);
    return 0;
}

static int
go_clear(Go *self)
{
    Py_CLEAR(self->fallback);
    Py_CLEAR(self->dict);
    return 0;
}

static void
go_dealloc(Go *self)
{
    PyObject_GC_UnTrack(self);
    go_clear(self);
    Py_TYPE(self)->tp_free(self);
}

static PyObject *
go_get(PyObject *self, PyObject *obj, PyObject *Py_UNUSED(type))
{
    return Py_NewRef(self); /* not a method: a class attribute stays the function */
}

static PyObject *
go_repr(Go *self)
{
    return PyUnicode_FromFormat("<mnsched go() in C, over %R>", self->fallback);
}

static PyGetSetDef go_getset[] = {
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject Go_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "mnsched._core.Go",
    .tp_basicsize = sizeof(Go),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "Go(fallback): go() with its goroutine fast path in C",
    .tp_new = go_new,
    .tp_dealloc = (destructor)go_dealloc,
    .tp_traverse = (traverseproc)go_traverse,
    .tp_clear = (inquiry)go_clear,
    .tp_repr = (reprfunc)go_repr,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Go, vectorcall),
    .tp_dictoffset = offsetof(Go, dict),
    .tp_getset = go_getset,
    .tp_descr_get = go_get,
};

/* -- awaiting a G (GBase.__await__) ------------------------------------------------------ */

/* What ``await g`` iterates, from a goroutine: G.__await__ of the pure driver, as an
 * object. Its first send joins g (runs it inline) if it is runnable here, else parks the
 * awaiting G until g finishes (yielding the lock it parks under); the last one returns
 * g's result or raises its exception. It has no throw(): a cancellation thrown into the
 * awaiting coroutine is raised at its ``await``, as it was from gopark. */
typedef struct {
    PyObject_HEAD
    PyObject *g;
    int state; /* 0: not started, 1: parked, 2: over */
} Awaiter;

static PyTypeObject Awaiter_type;

static PySendResult
outcome(PyObject *g, PyObject **res)
{
    PyObject *exc = SLOT(g, g_exc);
    if (exc != NULL && exc != Py_None) {
        if (call_method0(g, str_retrieved) < 0)
            return PYGEN_ERROR;
        PyErr_SetRaisedException(Py_NewRef(exc));
        return PYGEN_ERROR;
    }
    PyObject *r = SLOT(g, g_result);
    if (r == NULL) {
        internal_error("a finished G without a result");
        return PYGEN_ERROR;
    }
    *res = Py_NewRef(r);
    return PYGEN_RETURN;
}

static PySendResult
awaiter_send(Awaiter *self, PyObject *Py_UNUSED(arg), PyObject **res)
{
    PyObject *g = self->g;
    if (self->state == 1) {
        self->state = 2;
        return outcome(g, res);
    }
    if (self->state == 2) {
        PyErr_SetString(PyExc_RuntimeError, "cannot reuse an await of a goroutine");
        return PYGEN_ERROR;
    }
    self->state = 2;
    if (!status_is(g, S_DONE)) {
        PyObject *p = running_p;
        PyObject *curg = p == NULL ? NULL : SLOT(p, p_curg);
        if (curg == NULL || curg == Py_None) {
            internal_error("a goroutine's await of a G went on off its P");
            return PYGEN_ERROR;
        }
        if (SLOT(g, g_p) == p && status_is(g, S_RUNNABLE) && join(p, g) < 0)
            return PYGEN_ERROR; /* may run it to completion right here */
        if (!status_is(g, S_DONE)) {
            PyObject *lock = stripe(locks, g);
            if (lock == NULL || lock_acquire(lock) < 0)
                return PYGEN_ERROR;
            if (!status_is(g, S_DONE)) {
                /* g._push_waiter(curg), then gopark(curg, lock, _Join(g, curg), ...) */
                PyObject *ws = SLOT(g, g_waiters), *jq = NULL;
                int rc = 0;
                if (ws == NULL || ws == Py_None) {
                    slot_set(g, g_waiters, curg);
                }
                else if (PyList_CheckExact(ws)) {
                    rc = PyList_Append(ws, curg);
                }
                else {
                    PyObject *l = PyList_New(2);
                    if (l == NULL) {
                        rc = -1;
                    }
                    else {
                        PyList_SET_ITEM(l, 0, Py_NewRef(ws));
                        PyList_SET_ITEM(l, 1, Py_NewRef(curg));
                        slot_set(g, g_waiters, l);
                        Py_DECREF(l);
                    }
                }
                if (rc == 0) {
                    jq = PyObject_CallFunctionObjArgs(Join, g, curg, NULL);
                    rc = jq == NULL ? -1 : 0;
                }
                if (rc < 0)
                    return unlock_failed(lock);
                slot_set(curg, g_waitq, jq);
                Py_DECREF(jq);
                slot_set(curg, g_waitreason, WAIT_GOROUTINE);
                self->state = 1;
                *res = Py_NewRef(lock); /* the driver parks curg, then releases it */
                return PYGEN_NEXT;
            }
            if (lock_release(lock) < 0)
                return PYGEN_ERROR;
        }
    }
    return outcome(g, res);
}

/* The iterator protocol's form of a send's result: StopIteration(value) for a return,
 * made explicitly (a tuple value stays one value). */
static PyObject *
send_result(PySendResult r, PyObject *res)
{
    if (r == PYGEN_RETURN) {
        PyObject *e = PyObject_CallOneArg(PyExc_StopIteration, res);
        Py_DECREF(res);
        if (e != NULL)
            PyErr_SetRaisedException(e);
        return NULL;
    }
    return r == PYGEN_NEXT ? res : NULL;
}

static PyObject *
awaiter_iternext(Awaiter *self)
{
    PyObject *res = NULL;
    PySendResult r = awaiter_send(self, Py_None, &res);
    return send_result(r, res);
}

static PyObject *
awaiter_send_method(Awaiter *self, PyObject *Py_UNUSED(arg))
{
    return awaiter_iternext(self); /* what is sent in is not used, as in G.__await__ */
}

static int
awaiter_traverse(Awaiter *self, visitproc visit, void *arg)
{
    Py_VISIT(self->g);
    return 0;
}

static void
awaiter_dealloc(Awaiter *self)
{
    PyObject_GC_UnTrack(self);
    Py_CLEAR(self->g);
    PyObject_GC_Del(self);
}

static PyMethodDef awaiter_methods[] = {
    {"send", (PyCFunction)awaiter_send_method, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

static PyAsyncMethods awaiter_async = {.am_send = (sendfunc)awaiter_send};

static PyTypeObject Awaiter_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "mnsched._core.Await",
    .tp_basicsize = sizeof(Awaiter),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "await of a goroutine from a goroutine",
    .tp_dealloc = (destructor)awaiter_dealloc,
    .tp_traverse = (traverseproc)awaiter_traverse,
    .tp_as_async = &awaiter_async,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)awaiter_iternext,
    .tp_methods = awaiter_methods,
};

/* GBase.__await__: from a goroutine, an Await; from anything else (an asyncio task on
 * a P's loop or a foreign loop), G._await_foreign, the pure driver's. */
static PyObject *
g_await(PyObject *g)
{
    if (check_bound(NULL, g, "GBase.__await__") < 0)
        return NULL;
    if (!status_is(g, S_DONE)) {
        PyObject *curg = running_p == NULL ? NULL : SLOT(running_p, p_curg);
        if (curg == NULL || curg == Py_None)
            return PyObject_CallMethodNoArgs(g, str_await_foreign);
        if (curg == g)
            return PyErr_Format(PyExc_RuntimeError, "%R cannot await itself", g);
    }
    Awaiter *a = PyObject_GC_New(Awaiter, &Awaiter_type);
    if (a == NULL)
        return NULL;
    a->g = Py_NewRef(g);
    a->state = 0;
    PyObject_GC_Track(a);
    return (PyObject *)a;
}

static PyAsyncMethods gbase_async = {.am_await = (unaryfunc)g_await};

static PyMemberDef gbase_members[] = {
    {"_qpos", T_PYSSIZET, offsetof(GBase, qpos), 0, NULL},
    {"_goid", T_PYSSIZET, offsetof(GBase, goid), 0, NULL},
    {"_golasti", T_PYSSIZET, offsetof(GBase, golasti), 0, NULL},
    {"_goparent", T_PYSSIZET, offsetof(GBase, goparent), 0, NULL},
    {"_readyts", T_LONGLONG, offsetof(GBase, readyts), 0, NULL},
    {"_waitsince", T_DOUBLE, offsetof(GBase, waitsince), 0, NULL},
    {NULL},
};

static PyTypeObject GBase_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "mnsched._core.GBase",
    .tp_basicsize = sizeof(GBase),
    .tp_members = gbase_members,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "G's base in the C driver: its await (mnsched.g.G holds the rest)",
    .tp_as_async = &gbase_async,
    .tp_new = PyType_GenericNew,
};

#define PBASE_COUNTER(name) {#name, T_PYSSIZET, offsetof(PBase, name), 0, NULL}
#define PBASE_DOUBLE(name) {#name, T_DOUBLE, offsetof(PBase, name), 0, NULL}

static PyMemberDef pbase_members[] = {
    PBASE_COUNTER(tick),     PBASE_COUNTER(qseq),   PBASE_COUNTER(nspawned),
    PBASE_COUNTER(nfinished), PBASE_COUNTER(npinned), PBASE_COUNTER(njoin),
    PBASE_COUNTER(njoined),  PBASE_COUNTER(njoinmiss), PBASE_COUNTER(nparks),
    {"_instrumented", T_BOOL, offsetof(PBase, instrumented), 0, NULL},
    {"_long_steps", T_BOOL, offsetof(PBase, long_steps), 0, NULL},
    {"_clock_tick", T_PYSSIZET, offsetof(PBase, clock_tick), 0, NULL},
    {"_last_cpu", T_DOUBLE, offsetof(PBase, last_cpu), 0, NULL},
    PBASE_DOUBLE(last_clock), PBASE_DOUBLE(slice_start), PBASE_DOUBLE(batch_deadline),
    PBASE_DOUBLE(busy),       PBASE_DOUBLE(tok_since),   PBASE_DOUBLE(stuck_since),
    PBASE_DOUBLE(sm_when),    PBASE_DOUBLE(sm_cpu),      PBASE_DOUBLE(sm_cpu0),
    PBASE_DOUBLE(sm_pre),     PBASE_DOUBLE(sm_ran),      PBASE_COUNTER(sm_tick),
    PBASE_COUNTER(nsteals),   PBASE_COUNTER(nstolen),    {NULL},
};

static PyObject *
hist_tuple(const Py_ssize_t *h)
{
    PyObject *t = PyTuple_New(HIST_BUCKETS);
    for (Py_ssize_t i = 0; t != NULL && i < HIST_BUCKETS; i++) {
        PyObject *n = PyLong_FromSsize_t(h[i]); /* a racy read: a counter, not a state */
        if (n == NULL)
            Py_CLEAR(t);
        else
            PyTuple_SET_ITEM(t, i, n);
    }
    return t;
}

/* _histograms(): (scheduling latency, step duration) bucket counts (HIST_BUCKETS each). */
static PyObject *
pbase_histograms(PyObject *self, PyObject *Py_UNUSED(arg))
{
    PyObject *lat = hist_tuple(PB(self)->lat);
    PyObject *st = lat == NULL ? NULL : hist_tuple(PB(self)->steptime);
    if (st == NULL) {
        Py_XDECREF(lat);
        return NULL;
    }
    return Py_BuildValue("(NN)", lat, st);
}

static PyMethodDef pbase_methods[] = {
    {"_histograms", (PyCFunction)pbase_histograms, METH_NOARGS,
     "_histograms(): (scheduling latency, step duration) counts per log2-us bucket."},
    {NULL},
};

static PyTypeObject PBase_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "mnsched._core.PBase",
    .tp_basicsize = sizeof(PBase),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "P's base in the C driver: its counters as C integers (mnsched.p.P holds the rest)",
    .tp_members = pbase_members,
    .tp_methods = pbase_methods,
    .tp_new = PyType_GenericNew,
};

/* -- channels: the fast path of send and receive (Chan.send, Chan.recv) ------------------ */

/* ``ch.send(v)`` and ``ch.recv()`` in the C driver return a ChanOp: an awaitable that does
 * the operation when first resumed (lazily, as a coroutine would: ``go(ch.recv())`` and a
 * ChanOp wrapped in a Task do it in their own goroutine or task). From a goroutine it
 * does the common cases itself, under the channel's lock, exactly as chan.py's inline
 * cases do: straight to the first waiting partner that is not a select; into or out of
 * the buffer when no one waits on the other side; or park in the channel's queue with a
 * Sudog (the lock is yielded, and the driver releases it once the G is parked, as for
 * gopark_op). Anything else (a closed channel, a select's sudog at the head, a full
 * buffer with senders waiting, a caller that is not a goroutine) releases the lock and
 * delegates to chan.py's coroutine (Chan._send/_recv), which does it all. */

static PyTypeObject *Chan_type, *Sudog_type, *WaitQ_type;
static PyObject *ChannelClosed, *WAIT_CHAN_SEND, *WAIT_CHAN_RECEIVE, *OP_SEND, *OP_RECV;
static Py_ssize_t c_buf, c_cap, c_closed, c_lock, c_recvq, c_sendq;
static Py_ssize_t s_case, s_done, s_elem, s_fut, s_g, s_next, s_ok, s_op, s_owner, s_prev, s_q,
    s_sel, s_sem;
static Py_ssize_t w_first, w_last;
static PyObject *str__send, *str__recv, *minus_one;

enum { OP_NEW, OP_PARKED, OP_OVER, OP_DELEGATED };

typedef struct {
    PyObject_HEAD
    PyObject *ch;
    PyObject *v;   /* what a send sends (NULL for a receive) */
    PyObject *sg;  /* the Sudog it parked with */
    PyObject *sub; /* chan.py's coroutine, once delegated to */
    int is_send;
    int state;
} ChanOp;

static PyTypeObject ChanOp_type;

/* -- wait queues: sudog.WaitQ, a doubly linked list of sudogs (first, last; a sudog's
 * prev, next and q). Each function does what its WaitQ method does, slot by slot. -- */

/* The first sudog waiting in q, borrowed: None if none is (q is None until someone has
 * waited on the channel). */
static PyObject *
waitq_first(PyObject *q)
{
    return q == Py_None ? Py_None : SLOT(q, w_first);
}

/* WaitQ.pop, of sg = q.first (the caller holds a reference to sg). */
static void
waitq_pop_first(PyObject *q, PyObject *sg)
{
    PyObject *nxt = SLOT(sg, s_next);
    slot_set(q, w_first, nxt);
    if (nxt == Py_None)
        slot_set(q, w_last, Py_None);
    else
        slot_set(nxt, s_prev, Py_None);
    slot_set(sg, s_q, Py_None);
    slot_set(sg, s_next, Py_None);
}

/* WaitQ.push. */
static void
waitq_push(PyObject *q, PyObject *sg)
{
    PyObject *last = SLOT(q, w_last);
    slot_set(sg, s_q, q);
    slot_set(sg, s_prev, last);
    if (last == Py_None)
        slot_set(q, w_first, sg);
    else
        slot_set(last, s_next, sg);
    slot_set(q, w_last, sg);
}

/* The channel's queue at offset off, made if no one has waited there yet (Chan._waitq);
 * borrowed. */
static PyObject *
chan_waitq(PyObject *ch, Py_ssize_t off)
{
    PyObject *q = SLOT(ch, off);
    if (q != Py_None)
        return q;
    q = PyObject_CallNoArgs((PyObject *)WaitQ_type);
    if (q == NULL)
        return NULL;
    slot_set(ch, off, q);
    Py_DECREF(q);
    return q;
}

/* Wake the partner whose operation this one completed (Sudog.wake, a G inline). */
static int
wake_partner(PyObject *p, PyObject *sg)
{
    PyObject *w = SLOT(sg, s_g);
    if (w != NULL && w != Py_None)
        return goready(p, w, S_PARKED);
    return call_method1(sg, str_wake, p);
}

/* A new Sudog(ch, op, elem) for g (Sudog.__init__ and sudog.wait, slot by slot). */
static PyObject *
new_sudog(PyObject *ch, PyObject *op, PyObject *elem, PyObject *g)
{
    PyObject *sg = Sudog_type->tp_alloc(Sudog_type, 0);
    if (sg == NULL)
        return NULL;
    SLOT(sg, s_owner) = Py_NewRef(ch);
    SLOT(sg, s_op) = Py_NewRef(op);
    SLOT(sg, s_elem) = Py_NewRef(elem);
    SLOT(sg, s_ok) = Py_NewRef(Py_False);
    SLOT(sg, s_done) = Py_NewRef(Py_False);
    SLOT(sg, s_q) = Py_NewRef(Py_None);
    SLOT(sg, s_prev) = Py_NewRef(Py_None);
    SLOT(sg, s_next) = Py_NewRef(Py_None);
    SLOT(sg, s_g) = Py_NewRef(g);
    SLOT(sg, s_sel) = Py_NewRef(Py_None);
    SLOT(sg, s_case) = Py_NewRef(minus_one);
    SLOT(sg, s_fut) = Py_NewRef(Py_None);
    SLOT(sg, s_sem) = Py_NewRef(Py_None);
    return sg;
}

/* Queue a new Sudog for g in the channel's queue at offset off and yield the lock: the
 * driver parks g, then releases it (sudog.wait and gopark_op). */
static int
chan_park(ChanOp *self, PyObject *g, PyObject *lock, Py_ssize_t off, PyObject *op,
          PyObject *elem, PyObject *reason, PyObject **res)
{
    PyObject *q = chan_waitq(self->ch, off);
    PyObject *sg = q == NULL ? NULL : new_sudog(self->ch, op, elem, g);
    if (sg == NULL)
        return unlock_failed(lock);
    waitq_push(q, sg);
    self->sg = sg;
    slot_set(g, g_waitq, sg);
    slot_set(g, g_waitreason, reason);
    *res = Py_NewRef(lock);
    return PYGEN_NEXT;
}

/* Take sg, the first of q and no select's, to complete its operation (q.pop()). */
static PyObject *
take_first(PyObject *q)
{
    PyObject *sg = Py_NewRef(SLOT(q, w_first));
    waitq_pop_first(q, sg);
    slot_set(sg, s_done, Py_True);
    return sg;
}

/* Outcomes: PYGEN_RETURN with *res, PYGEN_NEXT (parked: *res is the lock), PYGEN_ERROR,
 * or -2: not a case for the fast path (the lock released, nothing done). */
#define NOT_FAST -2

static int
fast_recv(ChanOp *self, PyObject *p, PyObject *g, PyObject *lock, PyObject **res)
{
    PyObject *ch = self->ch, *buf = SLOT(ch, c_buf), *sendq = SLOT(ch, c_sendq);
    Py_ssize_t nbuf = buf == Py_None ? 0 : PyObject_Size(buf);
    PyObject *first = waitq_first(sendq);
    if (nbuf > 0 && first == Py_None) { /* the common buffered case */
        PyObject *v = deque_call(deque_popleft, buf, NULL);
        if (v == NULL)
            return unlock_failed(lock);
        if (lock_release(lock) < 0) {
            Py_DECREF(v);
            return PYGEN_ERROR;
        }
        *res = v;
        return PYGEN_RETURN;
    }
    if (first != Py_None && nbuf == 0) { /* unbuffered: from the first sender, unless a select */
        if (SLOT(first, s_sel) == Py_None) {
            PyObject *sg = take_first(sendq);
            if (lock_release(lock) < 0 || wake_partner(p, sg) < 0) {
                Py_DECREF(sg);
                return PYGEN_ERROR;
            }
            *res = Py_NewRef(SLOT(sg, s_elem));
            Py_DECREF(sg);
            return PYGEN_RETURN;
        }
    }
    else if (nbuf == 0 && first == Py_None && SLOT(ch, c_closed) == Py_False) { /* wait */
        return chan_park(self, g, lock, c_recvq, OP_RECV, Py_None, WAIT_CHAN_RECEIVE, res);
    }
    if (lock_release(lock) < 0)
        return PYGEN_ERROR;
    return NOT_FAST;
}

static int
fast_send(ChanOp *self, PyObject *p, PyObject *g, PyObject *lock, PyObject **res)
{
    PyObject *ch = self->ch, *recvq = SLOT(ch, c_recvq);
    if (SLOT(ch, c_closed) == Py_False) {
        PyObject *first = waitq_first(recvq);
        if (first != Py_None) { /* straight to the first waiting receiver, unless a select */
            if (SLOT(first, s_sel) == Py_None) {
                PyObject *sg = take_first(recvq);
                slot_set(sg, s_elem, self->v);
                slot_set(sg, s_ok, Py_True);
                int rc = lock_release(lock) < 0 || wake_partner(p, sg) < 0;
                Py_DECREF(sg);
                if (rc)
                    return PYGEN_ERROR;
                *res = Py_NewRef(Py_None);
                return PYGEN_RETURN;
            }
        }
        else {
            PyObject *buf = SLOT(ch, c_buf);
            Py_ssize_t cap = PyLong_AsSsize_t(SLOT(ch, c_cap));
            if (cap < 0)
                return unlock_failed(lock);
            if (cap == 0 || (buf != Py_None && PyObject_Size(buf) >= cap)) /* wait */
                return chan_park(self, g, lock, c_sendq, OP_SEND, self->v, WAIT_CHAN_SEND, res);
            if (buf != Py_None) { /* room in the buffer, no receiver waiting */
                PyObject *r = deque_call(deque_append, buf, self->v);
                Py_XDECREF(r);
                if (r == NULL)
                    return unlock_failed(lock);
                if (lock_release(lock) < 0)
                    return PYGEN_ERROR;
                *res = Py_NewRef(Py_None);
                return PYGEN_RETURN;
            }
            /* the first buffered send makes the buffer: chan.py's */
        }
    }
    if (lock_release(lock) < 0)
        return PYGEN_ERROR;
    return NOT_FAST;
}

/* Back from the park: a partner completed the operation, or the channel closed. */
static PySendResult
chanop_outcome(ChanOp *self, PyObject **res)
{
    PyObject *sg = self->sg;
    self->sg = NULL;
    self->state = OP_OVER;
    PySendResult r = PYGEN_RETURN;
    if (self->is_send) {
        if (SLOT(sg, s_done) == Py_True)
            *res = Py_NewRef(Py_None);
        else {
            PyErr_SetString(ChannelClosed, "send on closed channel");
            r = PYGEN_ERROR;
        }
    }
    else if (SLOT(sg, s_ok) == Py_True) {
        *res = Py_NewRef(SLOT(sg, s_elem));
    }
    else {
        PyErr_SetString(ChannelClosed, "receive from closed channel");
        r = PYGEN_ERROR;
    }
    Py_DECREF(sg);
    return r;
}

static PySendResult
chanop_send(ChanOp *self, PyObject *arg, PyObject **res)
{
    switch (self->state) {
    case OP_DELEGATED:
        return PyIter_Send(self->sub, arg, res);
    case OP_PARKED:
        return chanop_outcome(self, res);
    case OP_OVER:
        PyErr_SetString(PyExc_RuntimeError, "cannot reuse already awaited coroutine");
        return PYGEN_ERROR;
    }
    PyObject *p = running_p;
    PyObject *g = p == NULL ? NULL : SLOT(p, p_curg);
    if (g != NULL && g != Py_None) {
        PyObject *lock = SLOT(self->ch, c_lock);
        if (lock_acquire(lock) < 0)
            return PYGEN_ERROR;
        int r = self->is_send ? fast_send(self, p, g, lock, res) : fast_recv(self, p, g, lock, res);
        if (r != NOT_FAST) {
            self->state = r == PYGEN_NEXT ? OP_PARKED : OP_OVER;
            return (PySendResult)r;
        }
    }
    self->sub = self->is_send ? PyObject_CallMethodOneArg(self->ch, str__send, self->v)
                              : PyObject_CallMethodNoArgs(self->ch, str__recv);
    if (self->sub == NULL) {
        self->state = OP_OVER;
        return PYGEN_ERROR;
    }
    self->state = OP_DELEGATED;
    return PyIter_Send(self->sub, arg, res);
}

static PyObject *
chanop_iternext(ChanOp *self)
{
    PyObject *res = NULL;
    PySendResult r = chanop_send(self, Py_None, &res);
    return send_result(r, res);
}

static PyObject *
chanop_send_method(ChanOp *self, PyObject *arg)
{
    PyObject *res = NULL;
    PySendResult r = chanop_send(self, arg, &res);
    return send_result(r, res);
}

/* throw(exc): delegated, chan.py's coroutine takes it. Parked: a CancelledError after a
 * partner completed the operation is taken at the G's next wait instead (gopark_op's
 * rule: no value is lost); anything else ends the operation with it. */
static PyObject *
chanop_throw(ChanOp *self, PyObject *args)
{
    if (self->state == OP_DELEGATED)
        return PyObject_CallMethodObjArgs(self->sub, str_throw, PyTuple_GET_ITEM(args, 0),
                                          PyTuple_GET_SIZE(args) > 1 ? PyTuple_GET_ITEM(args, 1)
                                                                     : NULL,
                                          NULL);
    PyObject *typ, *val = NULL, *tb = NULL;
    if (!PyArg_UnpackTuple(args, "throw", 1, 3, &typ, &val, &tb))
        return NULL;
    if (PyExceptionInstance_Check(typ))
        PyErr_SetObject((PyObject *)Py_TYPE(typ), typ);
    else if (PyExceptionClass_Check(typ))
        PyErr_SetObject(typ, val);
    else
        return PyErr_Format(PyExc_TypeError,
                            "exceptions must be classes or instances deriving from BaseException");
    PyObject *exc = PyErr_GetRaisedException();
    if (self->state == OP_PARKED && PyObject_TypeCheck(exc, (PyTypeObject *)CancelledError) &&
        SLOT(self->sg, s_done) == Py_True) {
        Py_DECREF(exc);
        slot_set(SLOT(self->sg, s_g), g_pend, M_DEFERRED);
        PyObject *res = NULL;
        PySendResult r = chanop_outcome(self, &res);
        return send_result(r, res);
    }
    Py_CLEAR(self->sg);
    self->state = OP_OVER;
    PyErr_SetRaisedException(exc);
    return NULL;
}

static PyObject *
chanop_close(ChanOp *self, PyObject *Py_UNUSED(arg))
{
    if (self->state == OP_DELEGATED)
        return PyObject_CallMethodNoArgs(self->sub, str_close);
    Py_CLEAR(self->sg); /* a parked G's sudog is the G's wait queue's to take out */
    self->state = OP_OVER;
    Py_RETURN_NONE;
}

static PyObject *
chanop_await(PyObject *self)
{
    return Py_NewRef(self);
}

static PyObject *
chanop_repr(ChanOp *self)
{
    return PyUnicode_FromFormat("<Chan.%s of %R>", self->is_send ? "send" : "recv", self->ch);
}

static int
chanop_traverse(ChanOp *self, visitproc visit, void *arg)
{
    Py_VISIT(self->ch);
    Py_VISIT(self->v);
    Py_VISIT(self->sg);
    Py_VISIT(self->sub);
    return 0;
}

static int
chanop_clear(ChanOp *self)
{
    Py_CLEAR(self->ch);
    Py_CLEAR(self->v);
    Py_CLEAR(self->sg);
    Py_CLEAR(self->sub);
    return 0;
}

static void
chanop_dealloc(ChanOp *self)
{
    PyObject_GC_UnTrack(self);
    chanop_clear(self);
    PyObject_GC_Del(self);
}

static PyMethodDef chanop_methods[] = {
    {"send", (PyCFunction)chanop_send_method, METH_O, NULL},
    {"throw", (PyCFunction)chanop_throw, METH_VARARGS, NULL},
    {"close", (PyCFunction)chanop_close, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

/* What inspect.getcoroutinestate and check_coroutine ask of a coroutine that has
 * started: a ChanOp is never running when anyone can ask; it is suspended while parked
 * or delegating (go() of it then refuses: its next step is its awaiter's). */
static PyObject *
chanop_get_running(ChanOp *Py_UNUSED(self), void *Py_UNUSED(closure))
{
    Py_RETURN_FALSE;
}

static PyObject *
chanop_get_suspended(ChanOp *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->state == OP_PARKED || self->state == OP_DELEGATED);
}

static PyObject *
chanop_get_await(ChanOp *self, void *Py_UNUSED(closure))
{
    return Py_NewRef(self->state == OP_DELEGATED ? self->sub : Py_None);
}

static PyGetSetDef chanop_getset[] = {
    {"cr_running", (getter)chanop_get_running, NULL, NULL, NULL},
    {"cr_suspended", (getter)chanop_get_suspended, NULL, NULL, NULL},
    {"cr_await", (getter)chanop_get_await, NULL, "chan.py's coroutine, once delegated to",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyAsyncMethods chanop_async = {.am_await = chanop_await, .am_send = (sendfunc)chanop_send};

static PyTypeObject ChanOp_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "mnsched._core.ChanOp",
    .tp_basicsize = sizeof(ChanOp),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "ch.send(v) or ch.recv(), awaitable (a coroutine to asyncio)",
    .tp_dealloc = (destructor)chanop_dealloc,
    .tp_traverse = (traverseproc)chanop_traverse,
    .tp_clear = (inquiry)chanop_clear,
    .tp_repr = (reprfunc)chanop_repr,
    .tp_as_async = &chanop_async,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)chanop_iternext,
    .tp_methods = chanop_methods,
    .tp_getset = chanop_getset,
};

static PyObject *
new_chanop(PyObject *ch, PyObject *v)
{
    if (Chan_type == NULL)
        return internal_error("the C channels were used before _core.bind_chan");
    if (!PyObject_TypeCheck(ch, Chan_type))
        return PyErr_Format(PyExc_TypeError, "ChanBase's methods take a Chan");
    ChanOp *op = PyObject_GC_New(ChanOp, &ChanOp_type);
    if (op == NULL)
        return NULL;
    op->ch = Py_NewRef(ch);
    op->v = Py_XNewRef(v);
    op->sg = op->sub = NULL;
    op->is_send = v != NULL;
    op->state = OP_NEW;
    PyObject_GC_Track(op);
    return (PyObject *)op;
}

static PyObject *
chanbase_send(PyObject *ch, PyObject *v)
{
    return new_chanop(ch, v);
}

static PyObject *
chanbase_recv(PyObject *ch, PyObject *Py_UNUSED(arg))
{
    return new_chanop(ch, NULL);
}

static PyMethodDef chanbase_methods[] = {
    {"send", (PyCFunction)chanbase_send, METH_O,
     "send(v): send v, waiting for room (or, unbuffered, for a receiver to take it)."},
    {"recv", (PyCFunction)chanbase_recv, METH_NOARGS,
     "recv(): receive a value, waiting for one. Raises ChannelClosed once the channel is "
     "closed and drained."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ChanBase_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "mnsched._core.ChanBase",
    .tp_basicsize = sizeof(PyObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Chan's base in the C driver: send and recv (mnsched.chan.Chan holds the rest)",
    .tp_methods = chanbase_methods,
    .tp_new = PyType_GenericNew,
};

/* -- entry points ------------------------------------------------------------------------ */

static PyObject *
core_step(PyObject *Py_UNUSED(mod), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2)
        return PyErr_Format(PyExc_TypeError, "_core.step(p, g)");
    if (check_bound(args[0], args[1], "step") < 0 || step(args[0], args[1], NULL) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
core_goready(PyObject *Py_UNUSED(mod), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 3)
        return PyErr_Format(PyExc_TypeError, "_core.goready(g, old=PARKED, p=None)");
    PyObject *p = nargs == 3 && args[2] != Py_None ? args[2] : NULL;
    if (check_bound(p, args[0], "goready") < 0 ||
        goready(p, args[0], nargs >= 2 ? args[1] : S_PARKED) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static int
slot_offset(PyTypeObject *tp, const char *name, Py_ssize_t *out)
{
    PyObject *d = PyObject_GetAttrString((PyObject *)tp, name);
    if (d == NULL)
        return -1;
    int ok = Py_IS_TYPE(d, &PyMemberDescr_Type) &&
             PyDescr_TYPE(d) == tp &&
             ((PyMemberDescrObject *)d)->d_member->type == T_OBJECT_EX;
    if (ok)
        *out = ((PyMemberDescrObject *)d)->d_member->offset;
    Py_DECREF(d);
    if (!ok)
        PyErr_Format(PyExc_TypeError, "_core.bind: %s.%s is not an object slot of %s",
                     tp->tp_name, name, tp->tp_name);
    return ok ? 0 : -1;
}

static int
as_size(PyObject *o, Py_ssize_t *out)
{
    *out = PyLong_AsSsize_t(o);
    return *out == -1 && PyErr_Occurred() ? -1 : 0;
}

/* Take a bind function's keyword arguments into the table's variables: exactly its names. */
static int
take_objects(const char *who, PyObject *args, PyObject *kw, BoundObject *objs, size_t n)
{
    if (PyTuple_GET_SIZE(args) != 0 || kw == NULL) {
        PyErr_Format(PyExc_TypeError, "_core.%s takes keyword arguments only", who);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        PyObject *v = PyDict_GetItemString(kw, objs[i].name); /* borrowed */
        if (v == NULL) {
            PyErr_Format(PyExc_TypeError, "_core.%s: missing %s", who, objs[i].name);
            return -1;
        }
        Py_XSETREF(*objs[i].var, Py_NewRef(v));
    }
    if ((size_t)PyDict_GET_SIZE(kw) != n) {
        PyErr_Format(PyExc_TypeError, "_core.%s: unexpected names", who);
        return -1;
    }
    return 0;
}

static int
take_offsets(BoundSlot *slots, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!PyType_Check(*slots[i].tp)) {
            PyErr_Format(PyExc_TypeError, "_core: %s's class is not a class", slots[i].name);
            return -1;
        }
        if (slot_offset(*slots[i].tp, slots[i].name, slots[i].off) < 0)
            return -1;
    }
    return 0;
}

#define COUNT(table) (sizeof(table) / sizeof((table)[0]))

static PyObject *
core_bind(PyObject *Py_UNUSED(mod), PyObject *args, PyObject *kw)
{
    PyTypeObject *old_p = P_type;
    P_type = NULL; /* unbound (every entry point refuses) until all is checked */
    Py_XDECREF(old_p);
    if (take_objects("bind", args, kw, bound_objects, COUNT(bound_objects)) < 0)
        return NULL;
    if (!PyType_Check(G_type) || !PyType_Check(P_type) ||
        !PyType_IsSubtype(G_type, &GBase_type) || !PyType_IsSubtype(P_type, &PBase_type) ||
        as_size(NEVER_QUEUED, &never_queued) < 0 || !PyType_Check(Join) ||
        !PyType_Check(CancelledError) || !PyDict_CheckExact(current_tasks) ||
        !PyTuple_CheckExact(locks) || !PyTuple_CheckExact(state_locks) ||
        as_size(LOCK_MASK_o, &lock_mask) < 0 || as_size(JOIN_WINDOW_o, &join_window) < 0 ||
        as_size(LOCAL_QUEUE_SIZE_o, &local_queue_size) < 0 ||
        as_size(INLINE_JOIN_DEPTH_o, &inline_join_depth) < 0 ||
        as_size(GLOBAL_CHECK_TICKS_o, &global_check_ticks) < 0 ||
        as_size(CLOCK_EVERY_o, &clock_every) < 0 || global_check_ticks < 1 || clock_every < 1 ||
        PyTuple_GET_SIZE(locks) != lock_mask + 1 ||
        PyTuple_GET_SIZE(state_locks) != lock_mask + 1 || (lock_mask & (lock_mask + 1))) {
        Py_CLEAR(P_type);
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "_core.bind: wrong kinds of arguments");
        return NULL;
    }
    if (take_offsets(bound_slots, COUNT(bound_slots)) < 0) {
        Py_CLEAR(P_type);
        return NULL;
    }
    Py_RETURN_NONE;
}


static BoundObject chan_objects[] = {
    {"Chan", (PyObject **)&Chan_type},
    {"Sudog", (PyObject **)&Sudog_type},
    {"WaitQ", (PyObject **)&WaitQ_type},
    {"ChannelClosed", &ChannelClosed},
    {"OP_SEND", &OP_SEND},
    {"OP_RECV", &OP_RECV},
    {"WAIT_CHAN_SEND", &WAIT_CHAN_SEND},
    {"WAIT_CHAN_RECEIVE", &WAIT_CHAN_RECEIVE},
};

static BoundSlot chan_slots[] = {
    {&Chan_type, "_buf", &c_buf},     {&Chan_type, "_cap", &c_cap},
    {&Chan_type, "_closed", &c_closed}, {&Chan_type, "_lock", &c_lock},
    {&Chan_type, "_recvq", &c_recvq}, {&Chan_type, "_sendq", &c_sendq},
    {&Sudog_type, "case", &s_case},   {&Sudog_type, "done", &s_done},
    {&Sudog_type, "elem", &s_elem},   {&Sudog_type, "fut", &s_fut},
    {&Sudog_type, "g", &s_g},         {&Sudog_type, "ok", &s_ok},
    {&Sudog_type, "op", &s_op},       {&Sudog_type, "owner", &s_owner},
    {&Sudog_type, "q", &s_q},         {&Sudog_type, "sel", &s_sel},
    {&Sudog_type, "sem", &s_sem},     {&Sudog_type, "next", &s_next},
    {&Sudog_type, "prev", &s_prev},   {&WaitQ_type, "first", &w_first},
    {&WaitQ_type, "last", &w_last},
};

static PyObject *
core_bind_chan(PyObject *Py_UNUSED(mod), PyObject *args, PyObject *kw)
{
    PyTypeObject *old = Chan_type;
    Chan_type = NULL; /* unbound (ChanBase refuses) until all is checked */
    Py_XDECREF(old);
    if (take_objects("bind_chan", args, kw, chan_objects, COUNT(chan_objects)) < 0 ||
        !PyExceptionClass_Check(ChannelClosed) || take_offsets(chan_slots, COUNT(chan_slots)) < 0) {
        Py_CLEAR(Chan_type);
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "_core.bind_chan: wrong kinds of arguments");
        return NULL;
    }
    Py_RETURN_NONE;
}

static BoundObject sched_objects[] = {{"Sched", (PyObject **)&Sched_type}};
static BoundSlot sched_slots[] = {
    {&Sched_type, "allg", &sc_allg},         {&Sched_type, "closing", &sc_closing},
    {&Sched_type, "idle", &sc_idle},         {&Sched_type, "nspinning", &sc_nspinning},
    {&Sched_type, "all_done", &sc_all_done}, {&Sched_type, "runq", &sc_runq},
    {&Sched_type, "lock", &sc_lock},         {&Sched_type, "instr", &sc_instr},
    {&Sched_type, "token", &sc_token},
};

static PyObject *
core_bind_sched(PyObject *Py_UNUSED(mod), PyObject *args, PyObject *kw)
{
    PyTypeObject *old = Sched_type;
    Sched_type = NULL;
    Py_XDECREF(old);
    if (take_objects("bind_sched", args, kw, sched_objects, COUNT(sched_objects)) < 0 ||
        take_offsets(sched_slots, COUNT(sched_slots)) < 0) {
        Py_CLEAR(Sched_type);
        return NULL;
    }
    Py_RETURN_NONE;
}

/* after_fork(): in a forked child, this thread steps no goroutine (the fork may have
 * come from inside a step of the parent's, whose P is gone). */
static PyObject *
core_after_fork(PyObject *Py_UNUSED(mod), PyObject *Py_UNUSED(arg))
{
    running_p = NULL;
    Py_RETURN_NONE;
}

static PyMethodDef core_methods[] = {
    {"after_fork", (PyCFunction)core_after_fork, METH_NOARGS,
     "after_fork(): in a forked child, this thread runs no P's goroutine."},
    {"step", (PyCFunction)(void (*)(void))core_step, METH_FASTCALL,
     "step(p, g): step g once on p and act on what it yielded (P.step)."},
    {"run_batch", (PyCFunction)(void (*)(void))core_run_batch, METH_FASTCALL,
     "run_batch(p, now, deadline, time_slice): P._schedule's loop; False if p parked."},
    {"goready", (PyCFunction)(void (*)(void))core_goready, METH_FASTCALL,
     "goready(g, old=PARKED, p=None): make a waiting g runnable (g.goready)."},
    {"spawn_here", (PyCFunction)(void (*)(void))core_spawn_here, METH_FASTCALL,
     "spawn_here(coro, name): a pinned G stepped at once, from a P's loop (serve.spawn_here), "
     "else None."},
    {"sample_ready", (PyCFunction)core_sample_ready, METH_O,
     "sample_ready(g): g became runnable (from Python): maybe time its latency."},
    {"newgoid", (PyCFunction)core_newgoid, METH_O,
     "newgoid(p): the next goroutine id for a G spawned on P p's thread, or on none (None)."},
    {"go_here", (PyCFunction)(void (*)(void))core_go_here, METH_FASTCALL,
     "go_here(coro, name): spawn from a goroutine (Sched.newproc), else None."},
    {"bind", (PyCFunction)(void (*)(void))core_bind, METH_VARARGS | METH_KEYWORDS,
     "bind(**names): give the driver mnsched's classes, constants and helpers."},
    {"bind_chan", (PyCFunction)(void (*)(void))core_bind_chan, METH_VARARGS | METH_KEYWORDS,
     "bind_chan(**names): give the channel fast path Chan, Sudog and their constants."},
    {"bind_sched", (PyCFunction)(void (*)(void))core_bind_sched, METH_VARARGS | METH_KEYWORDS,
     "bind_sched(Sched=Sched): give the driver Sched's slots."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef core_module = {
    PyModuleDef_HEAD_INIT, "mnsched._core", "mnsched's G driver in C (docs/design.md).", -1,
    core_methods,
};

PyMODINIT_FUNC
PyInit__core(void)
{
    static struct {
        PyObject **var;
        const char *s;
    } strs[] = {
        {&str_trap, "_trap"},
        {&str_fatal_error, "fatal_error"},
        {&str_acquire, "acquire"},
        {&str_release, "release"},
        {&str_throw, "throw"},
        {&str_close, "close"},
        {&str_cancel_wait, "cancel_wait"},
        {&str_value, "value"},
        {&str_runqput, "runqput"},
        {&str_ready_here, "ready_here"},
        {&str_wake, "wake"},
        {&str_wakep, "wakep"},
        {&str_idle, "idle"},
        {&str_nspinning, "nspinning"},
        {&str_allg, "allg"},
        {&str_closing, "closing"},
        {&str_all_done, "all_done"},
        {&str_set, "set"},
        {&str_ready_remote, "ready_remote"},
        {&str_newproc, "newproc"},
        {&str_retrieved, "_retrieved"},
        {&str_await_foreign, "_await_foreign"},
        {&str_p, "p"},
        {&str_cr_frame, "cr_frame"},
        {&str_cr_running, "cr_running"},
        {&str_cr_suspended, "cr_suspended"},
        {&str_runq, "runq"},
        {&str_globrunqget, "globrunqget"},
        {&str_reset_spinning, "reset_spinning"},
        {&str_findrunnable, "_findrunnable"},
        {&str_stop_if_drained, "stop_if_drained"},
        {&str_spawned, "spawned"},
        {&str_before_step, "before_step"},
        {&str_after_step, "after_step"},
        {&str_parked, "parked"},
        {&str_readied, "readied"},
        {&str_exited, "exited"},
        {&str__send, "_send"},
        {&str__recv, "_recv"},
        {&str_take_token, "take_token"},
        {&str_yield_token, "yield_token"},
    };
    for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
        if ((*strs[i].var = PyUnicode_InternFromString(strs[i].s)) == NULL)
            return NULL;
    }
    PyObject *thread = PyImport_ImportModule("_thread");
    ThreadLockType = thread == NULL ? NULL : PyObject_GetAttrString(thread, "LockType");
    Py_XDECREF(thread);
    if (ThreadLockType == NULL)
        return NULL;
    PyObject *collections = PyImport_ImportModule("collections");
    PyObject *deque = collections == NULL ? NULL : PyObject_GetAttrString(collections, "deque");
    Py_XDECREF(collections);
    if (deque == NULL)
        return NULL;
    deque_append = PyObject_GetAttrString(deque, "append");
    deque_popleft = PyObject_GetAttrString(deque, "popleft");
    Py_DECREF(deque);
    if (deque_append == NULL || deque_popleft == NULL)
        return NULL;
    if ((minus_one = PyLong_FromLong(-1)) == NULL || PyType_Ready(&Awaiter_type) < 0 ||
        PyType_Ready(&GBase_type) < 0 || PyType_Ready(&PBase_type) < 0 ||
        PyType_Ready(&TraceBuf_type) < 0 ||
        PyType_Ready(&RunQ_type) < 0 ||
        PyType_Ready(&ChanOp_type) < 0 ||
        PyType_Ready(&ChanBase_type) < 0 || PyType_Ready(&Lock_type) < 0 ||
        PyType_Ready(&StepToken_type) < 0 ||
        PyType_Ready(&Go_type) < 0)
        return NULL;
    PyObject *mod = PyModule_Create(&core_module);
    if (mod == NULL)
        return NULL;
    PyObject *kinds = Py_BuildValue("(iiiiii)", TR_BEGIN, TR_END, TR_SPAWN, TR_PARK, TR_READY,
                                    TR_EXIT);
    if (kinds == NULL) {
        Py_DECREF(mod);
        return NULL;
    }
    if (PyModule_AddObjectRef(mod, "GBase", (PyObject *)&GBase_type) < 0 ||
        PyModule_AddObjectRef(mod, "PBase", (PyObject *)&PBase_type) < 0 ||
        PyModule_AddObjectRef(mod, "RunQ", (PyObject *)&RunQ_type) < 0 ||
        PyModule_AddObjectRef(mod, "TraceBuf", (PyObject *)&TraceBuf_type) < 0 ||
        PyModule_AddObjectRef(mod, "TRACE_KINDS", kinds) < 0 ||
        PyModule_AddObjectRef(mod, "ChanBase", (PyObject *)&ChanBase_type) < 0 ||
        PyModule_AddObjectRef(mod, "ChanOp", (PyObject *)&ChanOp_type) < 0 ||
        PyModule_AddObjectRef(mod, "Lock", (PyObject *)&Lock_type) < 0 ||
        PyModule_AddObjectRef(mod, "StepToken", (PyObject *)&StepToken_type) < 0 ||
        PyModule_AddObjectRef(mod, "Go", (PyObject *)&Go_type) < 0) {
        Py_DECREF(kinds);
        Py_DECREF(mod);
        return NULL;
    }
    Py_DECREF(kinds);
    return mod;
}
