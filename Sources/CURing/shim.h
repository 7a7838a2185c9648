#ifndef PEREGRINE_CURING_SHIM_H
#define PEREGRINE_CURING_SHIM_H
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

#endif
