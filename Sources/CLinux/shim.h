#ifndef PEREGRINE_CLINUX_SHIM_H
#define PEREGRINE_CLINUX_SHIM_H
// Linux APIs that Swift's Glibc module does not map: epoll, eventfd, and
// accept4 and pthread_[gs]etname_np (_GNU_SOURCE functions, declared here
// because <sys/socket.h> and <pthread.h> are already owned by the Glibc
// module without _GNU_SOURCE).
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <pthread.h>

extern int accept4(int sockfd, struct sockaddr *addr, socklen_t *addrlen, int flags);
extern int pthread_setname_np(pthread_t thread, const char *name);
extern int pthread_getname_np(pthread_t thread, char *name, size_t len);

static const int PEREGRINE_EFD_CLOEXEC = EFD_CLOEXEC;
static const int PEREGRINE_EFD_NONBLOCK = EFD_NONBLOCK;
static const int PEREGRINE_EPOLL_CLOEXEC = EPOLL_CLOEXEC;

#endif
