#ifndef PEREGRINE_CDKIMSCAN_H
#define PEREGRINE_CDKIMSCAN_H
// DKIM relaxed body canonicalisation's fast path (RFC 6376 §3.4.4), sixteen
// bytes per step with SSE2: the length of the run at `p` that is already
// canonical, i.e. holds no CR, no tab, and no space followed by a space, tab
// or CR: the index of the first such byte, or, when there is none in the
// blocks it looked at, where it stopped looking. It reads one byte past each
// block (p[i + 1]), so it stops up to 16 bytes before `n` and the caller
// finishes the run. Swift's SIMD types compiled
// this test 35 times slower than a 64-bit word loop (results/profile-dkim-2026-12-06.md).
#include <stddef.h>
#include <stdint.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

static inline size_t peregrine_dkim_relaxed_run(const uint8_t *p, size_t n) {
    size_t i = 0;
#if defined(__SSE2__)
    const __m128i cr = _mm_set1_epi8(13), tab = _mm_set1_epi8(9), sp = _mm_set1_epi8(32);
    while (i + 17 <= n) {
        __m128i v = _mm_loadu_si128((const __m128i *)(p + i));
        __m128i w = _mm_loadu_si128((const __m128i *)(p + i + 1));
        __m128i wsAfter = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(w, sp), _mm_cmpeq_epi8(w, tab)), _mm_cmpeq_epi8(w, cr));
        __m128i stop = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, cr), _mm_cmpeq_epi8(v, tab)),
                                    _mm_and_si128(_mm_cmpeq_epi8(v, sp), wsAfter));
        unsigned mask = (unsigned)_mm_movemask_epi8(stop);
        if (mask != 0) return i + (size_t)__builtin_ctz(mask);
        i += 16;
    }
#endif
    return i;
}

#endif
