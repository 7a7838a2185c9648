// PeregrineIO: the EventLoop protocol and its io_uring, epoll and Dispatch
// backends (TCP, UDP, timers, files), socket addresses and IP networks,
// ByteBuffer, the lock and the loop-confined box, monotonic and wall clocks.
// Imports: CURing, CLinux, Glibc. Never touches: any protocol above bytes.
