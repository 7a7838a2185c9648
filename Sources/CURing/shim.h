#ifndef PEREGRINE_CURING_SHIM_H
#define PEREGRINE_CURING_SHIM_H
// Include the glibc headers liburing uses *before* liburing.h: it defines
// _XOPEN_SOURCE/_GNU_SOURCE, which would otherwise give these headers a
// different shape here than in SwiftGlibc (e.g. fd_set.fds_bits vs
// __fds_bits) and clang refuses the two definitions.
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <inttypes.h>
#include <string.h>
#include <time.h>
#include <sched.h>
#include <sys/types.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <liburing.h>
#include <linux/time_types.h>

// Swift imports liburing's static inline functions directly; only the
// IOSQE_* / IORING_* flag macros (function-like or enum-derived) need
// constant shims so they are visible with a stable integer type.
static const unsigned int PEREGRINE_IOSQE_FIXED_FILE = IOSQE_FIXED_FILE;
static const unsigned int PEREGRINE_IOSQE_IO_DRAIN = IOSQE_IO_DRAIN;
static const unsigned int PEREGRINE_IOSQE_IO_LINK = IOSQE_IO_LINK;
static const unsigned int PEREGRINE_IOSQE_IO_HARDLINK = IOSQE_IO_HARDLINK;
static const unsigned int PEREGRINE_IOSQE_ASYNC = IOSQE_ASYNC;
static const unsigned int PEREGRINE_IOSQE_BUFFER_SELECT = IOSQE_BUFFER_SELECT;
static const unsigned int PEREGRINE_IOSQE_CQE_SKIP_SUCCESS = IOSQE_CQE_SKIP_SUCCESS;

// Ring setup flags (URingLoop tries the strongest combination first).
static const unsigned int PEREGRINE_IORING_SETUP_CQSIZE = IORING_SETUP_CQSIZE;
static const unsigned int PEREGRINE_IORING_SETUP_CLAMP = IORING_SETUP_CLAMP;
static const unsigned int PEREGRINE_IORING_SETUP_R_DISABLED = IORING_SETUP_R_DISABLED;
static const unsigned int PEREGRINE_IORING_SETUP_SUBMIT_ALL = IORING_SETUP_SUBMIT_ALL;
static const unsigned int PEREGRINE_IORING_SETUP_COOP_TASKRUN = IORING_SETUP_COOP_TASKRUN;
static const unsigned int PEREGRINE_IORING_SETUP_SINGLE_ISSUER = IORING_SETUP_SINGLE_ISSUER;
static const unsigned int PEREGRINE_IORING_SETUP_DEFER_TASKRUN = IORING_SETUP_DEFER_TASKRUN;
static const unsigned int PEREGRINE_IORING_FEAT_EXT_ARG = IORING_FEAT_EXT_ARG;

// Completion and operation flags.
static const unsigned int PEREGRINE_IORING_CQE_F_MORE = IORING_CQE_F_MORE;
static const unsigned int PEREGRINE_IORING_ASYNC_CANCEL_ALL = IORING_ASYNC_CANCEL_ALL;
static const unsigned int PEREGRINE_IORING_FSYNC_DATASYNC = IORING_FSYNC_DATASYNC;

// Opcodes the io_uring backend needs (checked with io_uring_get_probe_ring).
static const int PEREGRINE_IORING_OP_ACCEPT = IORING_OP_ACCEPT;
static const int PEREGRINE_IORING_OP_CONNECT = IORING_OP_CONNECT;
static const int PEREGRINE_IORING_OP_RECV = IORING_OP_RECV;
static const int PEREGRINE_IORING_OP_SEND = IORING_OP_SEND;
static const int PEREGRINE_IORING_OP_SENDMSG = IORING_OP_SENDMSG;
static const int PEREGRINE_IORING_OP_RECVMSG = IORING_OP_RECVMSG;
static const int PEREGRINE_IORING_OP_LINK_TIMEOUT = IORING_OP_LINK_TIMEOUT;
static const int PEREGRINE_IORING_OP_ASYNC_CANCEL = IORING_OP_ASYNC_CANCEL;
static const int PEREGRINE_IORING_OP_READ = IORING_OP_READ;
static const int PEREGRINE_IORING_OP_WRITE = IORING_OP_WRITE;
static const int PEREGRINE_IORING_OP_FSYNC = IORING_OP_FSYNC;

// Enables a ring created with IORING_SETUP_R_DISABLED. Debian's liburing 2.3
// declares io_uring_enable_rings but does not export it, so call the syscall.
// Returns 0 or -errno. With SINGLE_ISSUER the calling thread becomes the submitter.
static inline int peregrine_enable_rings(struct io_uring *ring) {
    long r = syscall(__NR_io_uring_register, ring->ring_fd, IORING_REGISTER_ENABLE_RINGS, NULL, 0);
    return r < 0 ? -errno : (int)r;
}

static inline int peregrine_opcode_supported(const struct io_uring_probe *p, int op) {
    return io_uring_opcode_supported(p, op);
}

#endif
