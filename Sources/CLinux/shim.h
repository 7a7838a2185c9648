#ifndef PEREGRINE_CLINUX_SHIM_H
#define PEREGRINE_CLINUX_SHIM_H
// Linux APIs that Swift's Glibc module does not map: epoll, eventfd and
// accept4 (a _GNU_SOURCE function, declared here because <sys/socket.h> is
// already owned by the Glibc module without _GNU_SOURCE).
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

extern int accept4(int sockfd, struct sockaddr *addr, socklen_t *addrlen, int flags);

static const int PEREGRINE_EFD_CLOEXEC = EFD_CLOEXEC;
static const int PEREGRINE_EFD_NONBLOCK = EFD_NONBLOCK;
static const int PEREGRINE_EPOLL_CLOEXEC = EPOLL_CLOEXEC;

#endif
