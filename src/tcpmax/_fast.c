/* tcpmax._fast: the per-connection system calls of the plain connect and accept paths, out of
 * the interpreter. Optional: built at install when a C compiler is there, and every caller
 * has the pure-Python path it replaces (engine/native.py picks one; TCPMAX_NATIVE=0 forces
 * Python). It owns no state: it reads and writes the workers' own flat arrays (the state
 * bytes, start times, source indexes and the flat latency histogram of model/flathist.py)
 * through the buffer protocol, so either path leaves the same trace.
 *
 * Why: at a million connections on two cores the ramp is CPU-bound, and the Python around
 * each socket(), setsockopt(), bind(), connect(), epoll_ctl() and accept() cost load about
 * 6.5 us and serve about 4 us of user CPU per connection against under 2 us for C programs
 * (docs/benchmarks.md). One call per batch removes that. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

/* The load worker's connection states (engine/load_worker.py). */
enum { CONNECTING = 1, ESTABLISHED = 2 };
/* model/flathist.py's layout. */
#define SUB_BITS 8
#define SUB_MASK ((1 << SUB_BITS) - 1)

#define OPEN_RESET 1    /* SO_LINGER {1, 0} before connect: close() sends RST */
#define OPEN_EXPLICIT 2 /* bind the given port (SO_REUSEADDR), else let connect() pick */

static int make_addr(int family, const char *host, int port, struct sockaddr_storage *ss,
                     socklen_t *len) {
    memset(ss, 0, sizeof *ss);
    if (family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)ss;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)port);
        *len = sizeof *a;
        return inet_pton(AF_INET, host, &a->sin_addr) == 1 ? 0 : -1;
    }
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
    a->sin6_family = AF_INET6;
    a->sin6_port = htons((uint16_t)port);
    *len = sizeof *a;
    return inet_pton(AF_INET6, host, &a->sin6_addr) == 1 ? 0 : -1;
}

static void set_port(struct sockaddr_storage *ss, int port) {
    if (ss->ss_family == AF_INET)
        ((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
}

static double monotonic(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);     /* the clock of Python's time.monotonic() */
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* A writable buffer of items of `size` bytes, or an exception. */
static int get_array(PyObject *obj, Py_buffer *view, Py_ssize_t size, const char *what) {
    if (PyObject_GetBuffer(obj, view, PyBUF_WRITABLE) < 0)
        return -1;
    if (view->itemsize != size) {
        PyErr_Format(PyExc_TypeError, "%s: items of %zd bytes expected, got %zd", what, size,
                     view->itemsize);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static int append_int(PyObject *list, long v) {
    PyObject *o = PyLong_FromLong(v);
    if (o == NULL)
        return -1;
    int rc = PyList_Append(list, o);
    Py_DECREF(o);
    return rc;
}

PyDoc_STRVAR(open_batch_doc,
"open_batch(epfd, family, src, dst, dport, n, ports, first, flags, state, started,\n"
"           source_of, src_index, now) -> (opened, errors)\n\n"
"Start `n` non-blocking connects from `src` to (`dst`, `dport`), each registered in `epfd` for\n"
"EPOLLOUT and marked CONNECTING in `state` (bytes by fd), `started[fd] = now` (doubles) and\n"
"`source_of[fd] = src_index` (uint32). With OPEN_EXPLICIT in `flags`, connect k binds port\n"
"`ports[first + k]` (int32 buffer), falling back to the kernel's choice if it is in use.\n"
"Returns how many are in flight and the errno of each attempt that failed.");

static PyObject *open_batch(PyObject *self, PyObject *args) {
    int epfd, family, dport, flags, src_index;
    const char *src, *dst;
    Py_ssize_t n, first;
    PyObject *ports_obj, *state_obj, *started_obj, *source_obj;
    double now;
    if (!PyArg_ParseTuple(args, "iissinOniOOOid", &epfd, &family, &src, &dst, &dport, &n,
                          &ports_obj, &first, &flags, &state_obj, &started_obj, &source_obj,
                          &src_index, &now))
        return NULL;
    if (family != AF_INET && family != AF_INET6) {
        PyErr_SetString(PyExc_ValueError, "family: AF_INET or AF_INET6");
        return NULL;
    }
    struct sockaddr_storage from, to;
    socklen_t from_len, to_len;
    if (make_addr(family, src, 0, &from, &from_len) < 0 ||
        make_addr(family, dst, dport, &to, &to_len) < 0) {
        PyErr_SetString(PyExc_ValueError, "src and dst must be numeric addresses of `family`");
        return NULL;
    }
    Py_buffer state, started, source_of, ports = {0};
    if (get_array(state_obj, &state, 1, "state") < 0)
        return NULL;
    if (get_array(started_obj, &started, 8, "started") < 0) {
        PyBuffer_Release(&state);
        return NULL;
    }
    if (get_array(source_obj, &source_of, 4, "source_of") < 0) {
        PyBuffer_Release(&state);
        PyBuffer_Release(&started);
        return NULL;
    }
    PyObject *errors = PyList_New(0);
    if (errors == NULL)
        goto fail;
    int explicit = flags & OPEN_EXPLICIT;
    if (explicit) {
        if (PyObject_GetBuffer(ports_obj, &ports, PyBUF_SIMPLE) < 0)
            goto fail;
        if (first < 0 || (first + n) * 4 > ports.len) {
            PyErr_SetString(PyExc_IndexError, "ports: fewer than first + n");
            goto fail;
        }
    }
    unsigned char *st = state.buf;
    double *t0 = started.buf;
    uint32_t *src_of = source_of.buf;
    const int32_t *port_at = ports.buf;
    Py_ssize_t limit = state.len;
    if (started.len / 8 < limit)
        limit = started.len / 8;
    if (source_of.len / 4 < limit)
        limit = source_of.len / 4;
    static const struct linger reset = {1, 0};
    const int one = 1, zero = 0;
    Py_ssize_t opened = 0;
    for (Py_ssize_t k = 0; k < n; k++) {
        int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            if (append_int(errors, errno) < 0)
                goto fail;
            continue;
        }
        int err = 0;
        if (fd >= limit)
            err = EMFILE;       /* the arrays are sized to the fd limit: cannot happen */
        else if ((flags & OPEN_RESET) &&
                 setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof reset) < 0)
            err = errno;
        else if (explicit) {
            set_port(&from, port_at[first + k]);
            if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0)
                err = errno;
            else if (bind(fd, (struct sockaddr *)&from, from_len) < 0) {
                err = errno;
                /* Another program's connection holds the port: the kernel picks one, without
                 * SO_REUSEADDR (with it, connect() answered EADDRNOTAVAIL at times). */
                if (err == EADDRINUSE) {
                    set_port(&from, 0);
                    err = 0;
                    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &zero, sizeof zero) < 0 ||
                        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one,
                                   sizeof one) < 0 ||
                        bind(fd, (struct sockaddr *)&from, from_len) < 0)
                        err = errno;
                }
            }
        } else if (setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one) < 0 ||
                   bind(fd, (struct sockaddr *)&from, from_len) < 0)
            err = errno;
        if (!err && connect(fd, (struct sockaddr *)&to, to_len) < 0 && errno != EINPROGRESS &&
            errno != EINTR)     /* interrupted, a non-blocking connect goes on */
            err = errno;
        if (!err) {
            struct epoll_event ev = {.events = EPOLLOUT, .data.fd = fd};
            if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
                err = errno;
        }
        if (err) {
            close(fd);
            if (append_int(errors, err) < 0)
                goto fail;
            continue;
        }
        st[fd] = CONNECTING;
        t0[fd] = now;
        src_of[fd] = (uint32_t)src_index;
        opened++;
    }
    PyBuffer_Release(&state);
    PyBuffer_Release(&started);
    PyBuffer_Release(&source_of);
    if (explicit)
        PyBuffer_Release(&ports);
    return Py_BuildValue("nN", opened, errors);
fail:
    Py_XDECREF(errors);
    PyBuffer_Release(&state);
    PyBuffer_Release(&started);
    PyBuffer_Release(&source_of);
    if (ports.obj != NULL)
        PyBuffer_Release(&ports);
    return NULL;
}

PyDoc_STRVAR(poll_connects_doc,
"poll_connects(epfd, maxevents, timeout, state, started, counts, source_of, by_source,\n"
"              peak_by_source) -> (established, others)\n\n"
"One epoll_wait (`timeout` in seconds, the GIL released). Each connect that completed\n"
"without error (CONNECTING in `state`) is finished here: its latency since `started[fd]`\n"
"counted in the flat histogram `counts` (uint64, model/flathist.py), re-armed for\n"
"EPOLLIN | EPOLLRDHUP, marked ESTABLISHED, and its source's count in `by_source` (int64) and\n"
"high mark in `peak_by_source` raised. Returns how many, and every other event as the\n"
"(fd, events) pairs select.epoll.poll() gives, for the caller to handle.");

static PyObject *poll_connects(PyObject *self, PyObject *args) {
    int epfd, maxevents;
    double timeout;
    PyObject *state_obj, *started_obj, *counts_obj, *source_obj, *by_obj, *peak_obj;
    if (!PyArg_ParseTuple(args, "iidOOOOOO", &epfd, &maxevents, &timeout, &state_obj,
                          &started_obj, &counts_obj, &source_obj, &by_obj, &peak_obj))
        return NULL;
    if (maxevents < 1 || maxevents > 65536) {
        PyErr_SetString(PyExc_ValueError, "maxevents: 1 to 65536");
        return NULL;
    }
    Py_buffer bufs[6];
    PyObject *objs[6] = {state_obj, started_obj, counts_obj, source_obj, by_obj, peak_obj};
    static const Py_ssize_t sizes[6] = {1, 8, 8, 4, 8, 8};
    static const char *names[6] = {"state", "started", "counts", "source_of", "by_source",
                                   "peak_by_source"};
    int got = 0;
    struct epoll_event *evs = NULL;
    PyObject *others = NULL;
    for (; got < 6; got++)
        if (get_array(objs[got], &bufs[got], sizes[got], names[got]) < 0)
            goto done;
    evs = PyMem_Malloc(sizeof *evs * (size_t)maxevents);
    if (evs == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    int ms = timeout < 0 ? -1 : (int)(timeout * 1000 + 0.999);
    int k;
    Py_BEGIN_ALLOW_THREADS
    k = epoll_wait(epfd, evs, maxevents, ms);
    Py_END_ALLOW_THREADS
    if (k < 0) {
        if (errno != EINTR) {
            PyErr_SetFromErrno(PyExc_OSError);
            goto done;
        }
        if (PyErr_CheckSignals() < 0)       /* a handler raised (Ctrl-C) */
            goto done;
        k = 0;
    }
    others = PyList_New(0);
    if (others == NULL)
        goto done;
    unsigned char *st = bufs[0].buf;
    double *t0 = bufs[1].buf;
    uint64_t *counts = bufs[2].buf;
    uint32_t *src_of = bufs[3].buf;
    int64_t *by_source = bufs[4].buf, *peak = bufs[5].buf;
    Py_ssize_t n_state = bufs[0].len, n_counts = bufs[2].len / 8;
    Py_ssize_t n_sources = bufs[4].len / 8 < bufs[5].len / 8 ? bufs[4].len / 8 : bufs[5].len / 8;
    if (bufs[1].len / 8 < n_state)
        n_state = bufs[1].len / 8;
    if (bufs[3].len / 4 < n_state)
        n_state = bufs[3].len / 4;
    double now = monotonic();
    Py_ssize_t established = 0;
    for (int i = 0; i < k; i++) {
        int fd = evs[i].data.fd;
        uint32_t e = evs[i].events;
        if (fd >= 0 && fd < n_state && st[fd] == CONNECTING && !(e & (EPOLLERR | EPOLLHUP)) &&
            src_of[fd] < (uint64_t)n_sources) {
            struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.fd = fd};
            if (epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &ev) == 0) {
                double dt = (now - t0[fd]) * 1e6;
                uint64_t us = dt > 0 ? (uint64_t)dt : 0;
                int b = us ? 64 - __builtin_clzll(us) : 0;
                Py_ssize_t idx = b <= SUB_BITS ? (Py_ssize_t)us
                    : (Py_ssize_t)((((uint64_t)(b - SUB_BITS)) << SUB_BITS) |
                                   ((us >> (b - SUB_BITS - 1)) & SUB_MASK));
                if (idx < n_counts)
                    counts[idx]++;
                st[fd] = ESTABLISHED;
                uint32_t s = src_of[fd];
                if (++by_source[s] > peak[s])
                    peak[s] = by_source[s];
                established++;
                continue;
            }
        }
        PyObject *pair = Py_BuildValue("(iI)", fd, e);
        if (pair == NULL || PyList_Append(others, pair) < 0) {
            Py_XDECREF(pair);
            Py_CLEAR(others);
            goto done;
        }
        Py_DECREF(pair);
    }
done:
    PyMem_Free(evs);
    for (int i = 0; i < got; i++)
        PyBuffer_Release(&bufs[i]);
    if (others == NULL)
        return NULL;
    return Py_BuildValue("nN", established, others);
}

PyDoc_STRVAR(accept_batch_doc,
"accept_batch(lfd, epfd, max_n, nonblocking, held, mark) -> (accepted, aborted, err)\n\n"
"Accept what listener `lfd`'s queue holds (tcpi_unacked of its TCP_INFO), at most `max_n`,\n"
"each registered in `epfd` for EPOLLIN | EPOLLRDHUP with `held[fd] = mark` (bytes by fd).\n"
"Connections reset before they were accepted (ECONNABORTED) are skipped and counted in\n"
"`aborted`. `err` is 0, or the errno that stopped the batch (EAGAIN: another worker was\n"
"first); the caller pauses on the others (EMFILE, ENFILE, ENOBUFS, ENOMEM).");

static PyObject *accept_batch(PyObject *self, PyObject *args) {
    int lfd, epfd, max_n, nonblocking, mark;
    PyObject *held_obj;
    if (!PyArg_ParseTuple(args, "iiipOi", &lfd, &epfd, &max_n, &nonblocking, &held_obj, &mark))
        return NULL;
    Py_buffer held;
    if (get_array(held_obj, &held, 1, "held") < 0)
        return NULL;
    struct tcp_info info;
    socklen_t len = sizeof info;
    int queued = max_n;
    if (getsockopt(lfd, IPPROTO_TCP, TCP_INFO, &info, &len) == 0 &&
        len >= offsetof(struct tcp_info, tcpi_unacked) + sizeof info.tcpi_unacked)
        queued = (int)info.tcpi_unacked;    /* a listener's accept queue length */
    if (queued > max_n)
        queued = max_n;
    int flags = SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0);
    unsigned char *h = held.buf;
    int accepted = 0, aborted = 0, err = 0;
    while (accepted < queued) {
        int fd = accept4(lfd, NULL, NULL, flags);
        if (fd < 0) {
            if (errno == EINTR)
                continue;
            if (errno == ECONNABORTED) {
                aborted++;
                queued--;
                continue;
            }
            err = errno;
            break;
        }
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.fd = fd};
        if (fd >= held.len) {
            close(fd);
            err = EMFILE;       /* `held` is sized to the fd limit: cannot happen */
            break;
        }
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
            err = errno;
            close(fd);
            break;
        }
        h[fd] = (unsigned char)mark;
        accepted++;
    }
    PyBuffer_Release(&held);
    return Py_BuildValue("iii", accepted, aborted, err);
}

static PyMethodDef methods[] = {
    {"open_batch", open_batch, METH_VARARGS, open_batch_doc},
    {"poll_connects", poll_connects, METH_VARARGS, poll_connects_doc},
    {"accept_batch", accept_batch, METH_VARARGS, accept_batch_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "tcpmax._fast",
    .m_doc = "The plain connect and accept paths' system calls in C (optional; see "
             "engine/native.py).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__fast(void) {
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddIntConstant(m, "OPEN_RESET", OPEN_RESET) < 0 ||
        PyModule_AddIntConstant(m, "OPEN_EXPLICIT", OPEN_EXPLICIT) < 0 ||
        PyModule_AddIntConstant(m, "CONNECTING", CONNECTING) < 0 ||
        PyModule_AddIntConstant(m, "ESTABLISHED", ESTABLISHED) < 0 ||
        PyModule_AddIntConstant(m, "SUB_BITS", SUB_BITS) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
