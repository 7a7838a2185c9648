/* Who calls malloc, per relayed message (issue 18). Build: clang -shared -fPIC -O2 -o libstacks.so stacks.c
   Run the daemon with LD_PRELOAD=libstacks.so PROFILE_STACKS=/tmp/x: every malloc/calloc/realloc/aligned
   call appends its 14 return addresses (120 bytes) to /tmp/x.PID.bin; /tmp/x.PID.maps is the process map at start.
   Note the file size after a warm-up, relay N messages, then scripts/alloc-stacks/report.py x.PID.bin x.PID.maps SIZE N.
   Unlike heaptrack it needs no unwinder at exit and survives SIGKILL; the frames are symbolised offline. */
#define _GNU_SOURCE
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <fcntl.h>
#include <unistd.h>
#include <execinfo.h>
#include <string.h>
#include <stdio.h>
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
static int fd = -1;
static __thread int busy;
#define DEPTH 14
static void rec(void) {
    if (fd < 0 || busy) return;
    busy = 1;
    void *frames[DEPTH + 1];
    int n = backtrace(frames, DEPTH + 1);
    uint64_t out[DEPTH + 1];
    memset(out, 0, sizeof out);
    out[0] = n;
    for (int i = 1; i < n && i <= DEPTH; i++) out[i] = (uint64_t)frames[i];
    write(fd, out, sizeof out);
    busy = 0;
}
__attribute__((constructor)) static void init(void) {
    const char *p = getenv("PROFILE_STACKS");
    if (!p) return;
    void *f[2]; busy = 1; backtrace(f, 2); busy = 0;
    char path[512]; snprintf(path, sizeof path, "%s.%d.bin", p, getpid());
    char maps[512]; snprintf(maps, sizeof maps, "%s.%d.maps", p, getpid());
    int in = open("/proc/self/maps", O_RDONLY), out = open(maps, O_WRONLY|O_CREAT|O_TRUNC, 0644);
    char buf[65536]; ssize_t r; while ((r = read(in, buf, sizeof buf)) > 0) write(out, buf, r);
    close(in); close(out);
    fd = open(path, O_WRONLY|O_CREAT|O_TRUNC|O_APPEND, 0644);
}
void *malloc(size_t n) { rec(); return __libc_malloc(n); }
void *calloc(size_t a, size_t b) { rec(); return __libc_calloc(a, b); }
void *realloc(void *p, size_t n) { rec(); return __libc_realloc(p, n); }
int posix_memalign(void **o, size_t a, size_t n) { rec(); *o = __libc_memalign(a, n); return *o || !n ? 0 : 12; }
void *aligned_alloc(size_t a, size_t n) { rec(); return __libc_memalign(a, n); }
void *memalign(size_t a, size_t n) { rec(); return __libc_memalign(a, n); }
