/* mnsched._core: the G driver in C (docs/design.md, "The C core").
 *
 * What runs per goroutine step, and nothing else: P.step (send into the coroutine in
 * the G's context, as the loop's current task, and act on what it yielded or how it
 * ended). Everything it does is what mnsched/p.py's pure-Python ``P.step`` does, in the
 * same order, under the same locks; that driver is the reference, and the test suite
 * runs on both (MNSCHED_PURE=1 selects it).
 *
 * G and P stay Python classes with __slots__. This module reads and writes their slots
 * directly, at the offsets their member descriptors give (``bind``), so both drivers
 * share one G and one P, and a slot read costs a load instead of a descriptor call.
 * ``bind`` checks that every slot it needs is a plain object slot of exactly those
 * classes, and ``step`` that it was given exactly a P and a G: any other layout would
 * make the offsets meaningless.
 *
 * Free-threaded builds: the G state transitions this code makes are the ones the
 * Python driver makes under the same locks (the state lock of docs/design.md, "Locks",
 * around parking); the slot stores themselves are plain stores, which is what the
 * remaining review for Py_MOD_GIL_NOT_USED must cover (design.md lists them).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

/* What bind() was given: constants, classes and helpers of the Python side. */
static PyTypeObject *G_type, *P_type, *Lock_type, *Call_type;
static PyObject *S_RUNNABLE, *S_RUNNING, *S_PARKED, *S_SYSCALL; /* status ints */
static PyObject *M_CANCEL, *M_DELIVERED, *M_DEFERRED;           /* _pend markers */
static PyObject *current_tasks;                                 /* asyncio's dict */
static PyObject *state_locks;                                   /* tuple of locks */
static Py_hash_t lock_mask;
static PyObject *py_goexit, *py_cancelled_error, *py_casgstatus;
static PyObject *str_trap, *str_fatal_error, *str_acquire, *str_release, *str_throw,
    *str_close, *str_cancel_wait, *str_value;

/* Slot offsets. */
static Py_ssize_t g_coro, g_ctx, g_status, g_pend, g_waitq, g_waitsince, g_abandoned;
static Py_ssize_t p_curg, p_tick, p_loop, p_last_clock, p_sched;

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

static PyObject *one; /* the int 1, for P.tick */

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
    /* mnsched.errors.InternalError, imported lazily: only on a broken invariant. */
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
slot_offset(PyTypeObject *tp, const char *name, Py_ssize_t *out)
{
    PyObject *d = PyObject_GetAttrString((PyObject *)tp, name);
    if (d == NULL)
        return -1;
    int ok = Py_IS_TYPE(d, &PyMemberDescr_Type) &&
             ((PyMemberDescrObject *)d)->d_common.d_type == tp &&
             ((PyMemberDescrObject *)d)->d_member->type == T_OBJECT_EX;
    if (ok)
        *out = ((PyMemberDescrObject *)d)->d_member->offset;
    Py_DECREF(d);
    if (!ok) {
        PyErr_Format(PyExc_TypeError, "_core.bind: %s.%s is not an object slot of %s",
                     tp->tp_name, name, tp->tp_name);
        return -1;
    }
    return 0;
}

/* casgstatus(g, old, new) with old == RUNNABLE/RUNNING: the check inline, the report
 * (an InternalError naming the statuses) from the Python one. */
static int
casgstatus(PyObject *g, PyObject *old, PyObject *new)
{
    PyObject *cur = SLOT(g, g_status);
    if (cur != old && (cur == NULL || PyObject_RichCompareBool(cur, old, Py_EQ) != 1)) {
        PyObject *r = PyObject_CallFunctionObjArgs(py_casgstatus, g, old, new, NULL);
        if (r == NULL)
            return -1;
        Py_DECREF(r); /* it found the status right after all: fall through */
    }
    slot_set(g, g_status, new);
    return 0;
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

/* The CancelledError a cancelled G raises (a new reference). */
static PyObject *
cancelled_error(PyObject *g)
{
    return PyObject_CallOneArg(py_cancelled_error, g);
}

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
        PyObject *exc = NULL, *y = NULL;
        if (pend == M_CANCEL || pend == M_DELIVERED || pend == M_DEFERRED) {
            PyObject *ab = SLOT(g, g_abandoned);
            if (ab != NULL && PyObject_IsTrue(ab) == 1) {
                /* Shutdown gave up on it: close the coroutine (its finally blocks run,
                 * through GeneratorExit), and it ends cancelled. */
                if (call_method0(coro, str_close) == 0) {
                    exc = cancelled_error(g);
                    if (exc != NULL)
                        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
                    Py_XDECREF(exc);
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
            if (v == NULL) {
                r = PYGEN_ERROR;
            }
            else {
                *res = v;
                r = PYGEN_RETURN;
            }
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

static int
goexit(PyObject *p, PyObject *g, PyObject *result, PyObject *exc)
{
    PyObject *r = PyObject_CallFunctionObjArgs(py_goexit, g, result, exc, p, NULL);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* g yielded a park lock: mark it parked (in SYSCALL, for a blocking call) before the
 * lock is released, so whoever finds g in its wait queue finds it parked; the state lock
 * orders this against a concurrent cancel() (docs/design.md, "Parking"). */
static int
park(PyObject *p, PyObject *g, PyObject *lock)
{
    Py_hash_t h = PyObject_Hash(g);
    if (h == -1)
        return -1;
    PyObject *sl = PyTuple_GET_ITEM(state_locks, h & lock_mask);
    if (call_method0(sl, str_acquire) < 0)
        return -1;
    PyObject *waitq = SLOT(g, g_waitq);
    PyObject *to = (waitq != NULL && Py_IS_TYPE(waitq, Call_type)) ? S_SYSCALL : S_PARKED;
    if (casgstatus(g, S_RUNNING, to) < 0) {
        PyObject *e = PyErr_GetRaisedException();
        call_method0(sl, str_release);
        call_method0(lock, str_release);
        PyErr_SetRaisedException(e);
        return -1;
    }
    slot_set(g, g_waitsince, SLOT(p, p_last_clock));
    PyObject *pend = SLOT(g, g_pend);
    if (pend == M_CANCEL || pend == M_DEFERRED) {
        /* cancel() came first: we deliver it. The queue is read under its lock: once it
         * is released a waker may ready g and clear _waitq. */
        slot_set(g, g_pend, M_DELIVERED);
        waitq = SLOT(g, g_waitq);
        Py_XINCREF(waitq);
        int rc = call_method0(sl, str_release);
        if (rc == 0)
            rc = call_method0(lock, str_release);
        if (rc == 0 && waitq != NULL)
            rc = PyObject_CallMethodOneArg(waitq, str_cancel_wait, g) == NULL ? -1 : 0;
        Py_XDECREF(waitq);
        return rc;
    }
    if (call_method0(sl, str_release) < 0)
        return -1;
    return call_method0(lock, str_release);
}

/* step(p, g): P.step. */
static PyObject *
core_step(PyObject *Py_UNUSED(mod), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !Py_IS_TYPE(args[0], P_type) || !Py_IS_TYPE(args[1], G_type)) {
        if (P_type == NULL)
            return internal_error("_core.step before _core.bind");
        return internal_error("_core.step(p, g) takes a P and a G");
    }
    PyObject *p = args[0], *g = args[1];
    PyObject *loop = SLOT(p, p_loop), *tick = SLOT(p, p_tick);
    if (loop == NULL || tick == NULL)
        return internal_error("stepping on a P without a loop");
    if (casgstatus(g, S_RUNNABLE, S_RUNNING) < 0)
        return NULL;
    slot_set(p, p_curg, g);
    PyObject *t1 = PyNumber_Add(tick, one);
    if (t1 == NULL)
        return NULL;
    slot_set(p, p_tick, t1);
    Py_DECREF(t1);
    Py_INCREF(loop); /* a step may replace nothing of this, but keep it for the del */
    if (PyDict_SetItem(current_tasks, loop, g) < 0) {
        Py_DECREF(loop);
        return NULL;
    }
    PyObject *y = NULL;
    PySendResult r = resume(g, &y);
    PyObject *exc = r == PYGEN_ERROR ? PyErr_GetRaisedException() : NULL;
    int bad = PyDict_DelItem(current_tasks, loop);
    Py_DECREF(loop);
    slot_set(p, p_curg, Py_None);
    if (bad < 0) {
        Py_XDECREF(y);
        Py_XDECREF(exc);
        return NULL;
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
        if (exc == NULL)
            return internal_error("a step failed without an exception");
        rc = goexit(p, g, Py_None, exc);
        if (rc == 0 && (PyErr_GivenExceptionMatches(exc, PyExc_KeyboardInterrupt) ||
                        PyErr_GivenExceptionMatches(exc, PyExc_SystemExit))) {
            PyObject *sched = SLOT(p, p_sched);
            PyObject *v = sched == NULL
                              ? NULL
                              : PyObject_CallMethodOneArg(sched, str_fatal_error, exc);
            rc = v == NULL ? -1 : 0;
            Py_XDECREF(v);
        }
        Py_DECREF(exc);
    }
    else if (Py_IS_TYPE(y, Lock_type)) {
        rc = park(p, g, y);
        Py_DECREF(y);
    }
    else {
        PyObject *v = PyObject_CallMethodObjArgs(p, str_trap, g, y, NULL);
        Py_DECREF(y);
        rc = v == NULL ? -1 : 0;
        Py_XDECREF(v);
    }
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

static int
take(PyObject *kw, const char *name, PyObject **out)
{
    PyObject *v = PyDict_GetItemString(kw, name); /* borrowed */
    if (v == NULL) {
        PyErr_Format(PyExc_TypeError, "_core.bind: missing %s", name);
        return -1;
    }
    Py_XSETREF(*out, Py_NewRef(v));
    return 0;
}

static PyObject *
core_bind(PyObject *Py_UNUSED(mod), PyObject *args, PyObject *kw)
{
    if (PyTuple_GET_SIZE(args) != 0 || kw == NULL)
        return PyErr_Format(PyExc_TypeError, "_core.bind takes keyword arguments only");
    PyObject *G = NULL, *P = NULL, *Lock = NULL, *Call = NULL, *mask = NULL;
    int ok = take(kw, "G", &G) == 0 && take(kw, "P", &P) == 0 &&
             take(kw, "LockType", &Lock) == 0 && take(kw, "Call", &Call) == 0 &&
             take(kw, "LOCK_MASK", &mask) == 0 && take(kw, "RUNNABLE", &S_RUNNABLE) == 0 &&
             take(kw, "RUNNING", &S_RUNNING) == 0 && take(kw, "PARKED", &S_PARKED) == 0 &&
             take(kw, "SYSCALL", &S_SYSCALL) == 0 && take(kw, "CANCEL", &M_CANCEL) == 0 &&
             take(kw, "DELIVERED", &M_DELIVERED) == 0 &&
             take(kw, "DEFERRED", &M_DEFERRED) == 0 &&
             take(kw, "CURRENT_TASKS", &current_tasks) == 0 &&
             take(kw, "STATE_LOCKS", &state_locks) == 0 && take(kw, "goexit", &py_goexit) == 0 &&
             take(kw, "cancelled_error", &py_cancelled_error) == 0 &&
             take(kw, "casgstatus", &py_casgstatus) == 0;
    if (ok && !(PyType_Check(G) && PyType_Check(P) && PyType_Check(Lock) && PyType_Check(Call) &&
                PyDict_CheckExact(current_tasks) && PyTuple_CheckExact(state_locks))) {
        PyErr_SetString(PyExc_TypeError, "_core.bind: wrong kinds of arguments");
        ok = 0;
    }
    if (ok) {
        lock_mask = PyLong_AsSsize_t(mask);
        ok = !(lock_mask == -1 && PyErr_Occurred()) &&
             PyTuple_GET_SIZE(state_locks) == lock_mask + 1;
        if (ok && (lock_mask & (lock_mask + 1)) != 0)
            ok = 0;
        if (!ok && !PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "_core.bind: STATE_LOCKS must hold LOCK_MASK+1 locks");
    }
    if (ok) {
        Py_XSETREF(G_type, (PyTypeObject *)Py_NewRef(G));
        Py_XSETREF(P_type, (PyTypeObject *)Py_NewRef(P));
        Py_XSETREF(Lock_type, (PyTypeObject *)Py_NewRef(Lock));
        Py_XSETREF(Call_type, (PyTypeObject *)Py_NewRef(Call));
        ok = slot_offset(G_type, "_coro", &g_coro) == 0 &&
             slot_offset(G_type, "_ctx", &g_ctx) == 0 &&
             slot_offset(G_type, "_status", &g_status) == 0 &&
             slot_offset(G_type, "_pend", &g_pend) == 0 &&
             slot_offset(G_type, "_waitq", &g_waitq) == 0 &&
             slot_offset(G_type, "_waitsince", &g_waitsince) == 0 &&
             slot_offset(G_type, "_abandoned", &g_abandoned) == 0 &&
             slot_offset(P_type, "curg", &p_curg) == 0 &&
             slot_offset(P_type, "tick", &p_tick) == 0 &&
             slot_offset(P_type, "loop", &p_loop) == 0 &&
             slot_offset(P_type, "last_clock", &p_last_clock) == 0 &&
             slot_offset(P_type, "sched", &p_sched) == 0;
        if (!ok)
            Py_CLEAR(P_type); /* step refuses to run unbound */
    }
    Py_XDECREF(G);
    Py_XDECREF(P);
    Py_XDECREF(Lock);
    Py_XDECREF(Call);
    Py_XDECREF(mask);
    if (!ok)
        return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef core_methods[] = {
    {"step", (PyCFunction)(void (*)(void))core_step, METH_FASTCALL,
     "step(p, g): step g once on p and act on what it yielded (P.step)."},
    {"bind", (PyCFunction)(void (*)(void))core_bind, METH_VARARGS | METH_KEYWORDS,
     "bind(**names): give the driver mnsched's classes, constants and helpers."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef core_module = {
    PyModuleDef_HEAD_INIT, "mnsched._core", "mnsched's G driver in C (docs/design.md).", -1,
    core_methods,
};

#define INTERN(var, s)                                                                     \
    if ((var = PyUnicode_InternFromString(s)) == NULL)                                     \
        return NULL;

PyMODINIT_FUNC
PyInit__core(void)
{
    INTERN(str_trap, "_trap");
    INTERN(str_fatal_error, "fatal_error");
    INTERN(str_acquire, "acquire");
    INTERN(str_release, "release");
    INTERN(str_throw, "throw");
    INTERN(str_close, "close");
    INTERN(str_cancel_wait, "cancel_wait");
    INTERN(str_value, "value");
    if ((one = PyLong_FromLong(1)) == NULL)
        return NULL;
    return PyModule_Create(&core_module);
}
