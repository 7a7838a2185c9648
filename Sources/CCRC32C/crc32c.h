#ifndef PEREGRINE_CCRC32C_H
#define PEREGRINE_CCRC32C_H
// CRC32C with the SSE4.2 `crc32` instruction, eight bytes per step: the
// spool checksums every record it writes and every body it reads back, and
// the slicing-by-8 table version was 8 % of the relay daemon's CPU
// (results/profile-crc32c-2026-12-06.md). Static inline, no library; the
// function carries its own target attribute, so the module needs no -msse4.2
// and the caller checks the CPU first (peregrine_crc32c_hardware_available).
// The instruction computes the reflected Castagnoli CRC without the initial
// and final inversion: the caller inverts, as the table version does.
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#if defined(__x86_64__)
#include <cpuid.h>

static inline int peregrine_crc32c_hardware_available(void) {
    unsigned int a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    return (c & bit_SSE4_2) != 0;
}

__attribute__((target("sse4.2")))
static inline uint32_t peregrine_crc32c_update(uint32_t crc, const uint8_t *p, size_t n) {
    uint64_t c = crc;
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c = __builtin_ia32_crc32di(c, v);
        p += 8;
        n -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (n > 0) {
        c32 = __builtin_ia32_crc32qi(c32, *p);
        p += 1;
        n -= 1;
    }
    return c32;
}
#else
static inline int peregrine_crc32c_hardware_available(void) { return 0; }
static inline uint32_t peregrine_crc32c_update(uint32_t crc, const uint8_t *p, size_t n) { (void)p; (void)n; return crc; }
#endif
#endif
