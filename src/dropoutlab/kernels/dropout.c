/*
 * Fast CPU dropout kernels for dropoutlab (Srivastava et al., JMLR 2014, §4 and §10).
 *
 * Compiled on first use by dropoutlab/kernels/_build.py with the system C compiler and loaded
 * with ctypes; nothing here depends on torch.
 *
 * Random numbers are counter-based: element i of a call with seed s uses the 64-bit word
 *
 *     h(s, i) = mix64(k + (i + 1) * GAMMA),  k = mix64(s)
 *
 * which is the i-th output of the SplitMix64 generator seeded with k (Steele, Lea & Flood,
 * "Fast splittable pseudorandom number generators", OOPSLA 2014; it passes BigCrush). Because a
 * word depends only on (s, i), the result is the same whatever the thread count or the order the
 * blocks run in, and the backward pass regenerates the mask from s instead of storing it.
 *
 * Bernoulli dropout keeps element i when the high 32 bits of h are >= thr, thr = round(p * 2^32),
 * so P(drop) = thr / 2^32 = p to within 2^-33. The output is x * (kept ? factor : 0), a product
 * (not a select) so that inf/NaN propagate exactly as in the reference x * mask.
 *
 * Gaussian dropout multiplies by 1 + sigma * z, z ~ N(0, 1) from the Box-Muller transform of
 * the two 32-bit halves of h: z = sqrt(-2 ln u1) cos(2 pi u2). log and cos are evaluated with
 * branch-free polynomials (below) so the loop vectorises and every lane, vector or scalar tail,
 * computes the same bits.
 *
 * Work is split into fixed blocks of BLOCK elements, so which code path (vector body or scalar
 * tail) handles an element never depends on the number of threads.
 */

#define _GNU_SOURCE /* MADV_HUGEPAGE */
#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#define BLOCK 4096
#define GAMMA 0x9e3779b97f4a7c15ULL
#define HUGE_PAGE ((int64_t)2 << 20)

/* SplitMix64's output function (Stafford's "Mix13" variant of the MurmurHash3 finaliser). */
static inline uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* SplitMix64's state before word i; the block loops below step it by adding GAMMA, the same
 * value without a 64-bit multiply per word (the compiler vectorises the addition). */
static inline uint64_t state(uint64_t key, int64_t i) { return key + ((uint64_t)i + 1u) * GAMMA; }

static inline uint64_t word(uint64_t key, int64_t i) { return mix64(state(key, i)); }

/* Natural log of u in (0, 1]: u = m * 2^e with m in [sqrt(1/2), sqrt(2)),
 * ln m = 2 atanh(s), s = (m - 1) / (m + 1), |s| <= 0.1716; odd series to s^11 (rel. err < 1e-9
 * before float rounding). */
static inline float log_unit(float u) {
    uint32_t bits;
    memcpy(&bits, &u, sizeof bits);
    uint32_t ix = bits - 0x3f3504f3u; /* 0x3f3504f3 is sqrt(1/2) */
    int32_t e = (int32_t)ix >> 23;    /* u = m * 2^e */
    uint32_t mbits = bits - (ix & 0xff800000u);
    float m;
    memcpy(&m, &mbits, sizeof m);
    float s = (m - 1.0f) / (m + 1.0f);
    float s2 = s * s;
    float odd = 1.0f + s2 * (1.0f / 3 + s2 * (1.0f / 5 + s2 * (1.0f / 7 + s2 * (1.0f / 9
                + s2 * (1.0f / 11)))));
    return (float)e * 0.69314718055994531f + 2.0f * s * odd;
}

/* cos(2 pi t) for t in [0, 1): fold to a in [0, 1/4] by symmetry, then an even Taylor
 * polynomial in x = 2 pi a up to x^12 (abs. err < 3e-8 on [0, pi/2]). */
static inline float cos_turn(float t) {
    float a = fabsf(t - 0.5f);             /* cos(2 pi t) = -cos(2 pi a), a in [0, 1/2] */
    float sign = a > 0.25f ? 1.0f : -1.0f; /* -cos(2 pi a) = cos(2 pi (1/2 - a)) if a > 1/4 */
    a = a > 0.25f ? 0.5f - a : a;
    float x = 6.28318530717958648f * a;
    float x2 = x * x;
    float c = 1.0f + x2 * (-1.0f / 2 + x2 * (1.0f / 24 + x2 * (-1.0f / 720 + x2 * (1.0f / 40320
              + x2 * (-1.0f / 3628800 + x2 * (1.0f / 479001600))))));
    return sign * c;
}

/* Box-Muller radius sqrt(-2 ln u1), u1 = (low 32 bits + 1/2) / 2^32 in (0, 1]. */
static inline float radius(uint64_t h) {
    float u1 = ((float)(uint32_t)h + 0.5f) * 2.3283064365386963e-10f;
    return sqrtf(-2.0f * log_unit(u1));
}

/* Box-Muller turn u2 in [0, 1) from the top 24 bits (a float holds 24 exactly). */
static inline float turn(uint64_t h) { return (float)(uint32_t)(h >> 40) * 5.9604644775390625e-08f; }

/* sin(2 pi u) = cos(2 pi (u - 1/4)), shifted back into [0, 1) (exact for 24-bit u). */
static inline float sin_turn(float u) { return cos_turn(u < 0.25f ? u + 0.75f : u - 0.25f); }

/* 16-bit storage (bfloat16, float16): each element is widened to float, computed exactly as the
 * float32 kernels compute it, and rounded once to nearest even on the way out. So a 16-bit
 * result is bitwise the float32 kernel's result on the widened input, rounded; the masks depend
 * on the element index only, never on the dtype. The conversions are torch's (c10::BFloat16 and
 * c10::Half): bfloat16 NaN becomes the canonical quiet NaN 0x7fc0. */
static inline uint32_t float_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float bits_float(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline float load_bf16(uint16_t v) { return bits_float((uint32_t)v << 16); }

static inline uint16_t store_bf16(float f) {
    uint32_t u = float_bits(f);
    uint16_t rounded = (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    return (u & 0x7fffffffu) > 0x7f800000u ? (uint16_t)0x7fc0 : rounded;
}

#if defined(__FLT16_MANT_DIG__) && !defined(DL_PORTABLE_F16)
/* The compiler has IEEE binary16 (_Float16): use its conversions (F16C instructions on x86). */
static inline float load_f16(uint16_t v) {
    _Float16 h;
    memcpy(&h, &v, sizeof h);
    return (float)h;
}

static inline uint16_t store_f16(float f) {
    _Float16 h = (_Float16)f;
    uint16_t v;
    memcpy(&v, &h, sizeof v);
    return v;
}
#else /* the same IEEE conversions, written out (-DDL_PORTABLE_F16 builds these, for a test) */
static inline float load_f16(uint16_t v) {
    uint32_t sign = (uint32_t)(v & 0x8000u) << 16, e = (v >> 10) & 0x1fu, m = v & 0x3ffu;
    if (e == 0) return bits_float(sign | float_bits((float)m * 5.9604644775390625e-08f));
    return bits_float(sign | (e == 31 ? 0x7f800000u : (e + 112u) << 23) | (m << 13));
}

static inline uint16_t store_f16(float f) {
    uint32_t u = float_bits(f), sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu)); /* NaN */
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* rounds to infinity */
    if (a < 0x38800000u) /* subnormal half: an integer multiple of 2^-24 */
        return (uint16_t)(sign | (uint32_t)rintf(bits_float(a) * 16777216.0f));
    a -= 112u << 23; /* rebias the exponent, then round 23 mantissa bits to 10 */
    return (uint16_t)(sign | ((a + 0xfffu + ((a >> 13) & 1u)) >> 13));
}
#endif

/* Whether advise_huge asks for huge pages (dl_set_huge_pages). dropoutlab.kernels turns it off
 * in a process that keeps freed memory (dropoutlab.allocator): there outputs reuse pages that
 * are already mapped, so the hint saves no faults, and when the heap does grow, the kernel may
 * compact memory synchronously to find a 2 MiB page (measured: single 4096^2 passes of 30-80 ms
 * instead of 7). */
static int huge_pages = 1;

void dl_set_huge_pages(int on) { huge_pages = on != 0; }

int dl_huge_pages(void) { return huge_pages; }

/* Ask Linux to back a large, not yet touched output with 2 MiB pages: one page fault instead
 * of 512. A hint only: it never changes results. */
static void advise_huge(void *ptr, int64_t nbytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (!huge_pages || nbytes < 4 * HUGE_PAGE) return;
    uintptr_t start = ((uintptr_t)ptr + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1);
    uintptr_t end = ((uintptr_t)ptr + (uintptr_t)nbytes) & ~(uintptr_t)(HUGE_PAGE - 1);
    if (end > start) madvise((void *)start, end - start, MADV_HUGEPAGE);
#else
    (void)ptr;
    (void)nbytes;
#endif
}

/* Outputs larger than the last-level cache are written with non-temporal (streaming) stores:
 * a normal store first reads the destination line into the cache (a read-for-ownership), and
 * such an output is evicted before anyone reads it; streaming skips that read. Smaller outputs
 * keep normal stores, so the next layer finds them in the cache. */
static int64_t stream_threshold(void) {
    static int64_t bytes = 0;
    if (bytes == 0) {
        int64_t llc = 0;
#if defined(__linux__) && defined(_SC_LEVEL3_CACHE_SIZE)
        llc = (int64_t)sysconf(_SC_LEVEL3_CACHE_SIZE);
#endif
        bytes = llc > 0 ? llc : (int64_t)32 << 20;
    }
    return bytes;
}

/* Copy len bytes from an L1-resident block to dst with streaming stores where the hardware has
 * them (SSE2 on x86-64: 16-byte aligned stores of 16 bytes), plain memcpy otherwise. */
static void stream_store(void *dst, const void *src, int64_t len) {
#if defined(__SSE2__)
    char *d = (char *)dst;
    const char *s = (const char *)src;
    int64_t head = (int64_t)((16 - ((uintptr_t)d & 15)) & 15);
    if (head > len) head = len;
    memcpy(d, s, (size_t)head);
    int64_t i = head;
    for (; i + 16 <= len; i += 16)
        _mm_stream_si128((__m128i *)(d + i), _mm_loadu_si128((const __m128i *)(s + i)));
    memcpy(d + i, s + i, (size_t)(len - i));
    _mm_sfence(); /* streaming stores are weakly ordered: publish them before returning */
#else
    memcpy(dst, src, (size_t)len);
#endif
}

/* Threads worth waking for n elements: one per 8 blocks (32768 elements, torch's grain size;
 * a few microseconds of work), at most nthreads. */
static int threads_for(int64_t n, int nthreads) {
    int64_t useful = n / (8 * BLOCK);
    if (nthreads < 1 || useful < 2) return 1;
    return useful < nthreads ? (int)useful : nthreads;
}

/* One block of len <= BLOCK elements starting at x, y, using words c0, c0 + 1, ...
 * Word j feeds two elements: its low 32 bits element j, its high 32 bits element half + j
 * (half = ceil(len / 2)); for odd len the last low element has no partner. Both halves are
 * contiguous, so the loop vectorises, and each word is hashed once for two elements.
 *
 * The Bernoulli block NAME computes y = IN(x) * (kept ? factor : 0), IN an elementwise map of
 * the input (the identity for dropout, relu for the fused ReLU + dropout below). */
#define DEFINE_MASK_BLOCK(NAME, S, C, LOAD, STORE, IN)                                      \
    static void NAME(const S *x, S *y, int64_t len, uint64_t key, uint64_t c0, uint32_t thr, \
                     C factor) {                                                            \
        int64_t half = (len + 1) / 2, pairs = len - half;                                   \
        uint64_t s = state(key, (int64_t)c0);                                               \
        for (int64_t j = 0; j < pairs; ++j, s += GAMMA) {                                   \
            uint64_t h = mix64(s);                                                          \
            y[j] = STORE(IN(LOAD(x[j])) * ((uint32_t)h >= thr ? factor : (C)0));            \
            y[half + j] =                                                                   \
                STORE(IN(LOAD(x[half + j])) * ((uint32_t)(h >> 32) >= thr ? factor : (C)0)); \
        }                                                                                   \
        if (half > pairs) {                                                                 \
            uint64_t h = word(key, (int64_t)(c0 + pairs));                                  \
            y[pairs] = STORE(IN(LOAD(x[pairs])) * ((uint32_t)h >= thr ? factor : (C)0));    \
        }                                                                                   \
    }

/* The kernels of one storage type S computed in C: LOAD widens an element to C, STORE rounds a
 * C value back to S (both the identity for float32 and float64). */
#define DEFINE_BLOCKS(S, C, SUFFIX, LOAD, STORE)                                             \
    static inline C same_##SUFFIX(C v) { return v; }                                        \
    DEFINE_MASK_BLOCK(dropout_block_##SUFFIX, S, C, LOAD, STORE, same_##SUFFIX)             \
                                                                                            \
    static void gaussian_block_##SUFFIX(const S *x, S *y, int64_t len, uint64_t key,        \
                                        uint64_t c0, C sigma) {                             \
        int64_t half = (len + 1) / 2, pairs = len - half;                                   \
        uint64_t s = state(key, (int64_t)c0);                                               \
        for (int64_t j = 0; j < pairs; ++j, s += GAMMA) {                                   \
            uint64_t h = mix64(s);                                                          \
            float r = radius(h), u = turn(h);                                               \
            y[j] = STORE(LOAD(x[j]) * ((C)1 + sigma * (C)(r * cos_turn(u))));               \
            y[half + j] = STORE(LOAD(x[half + j]) * ((C)1 + sigma * (C)(r * sin_turn(u)))); \
        }                                                                                   \
        if (half > pairs) {                                                                 \
            uint64_t h = word(key, (int64_t)(c0 + pairs));                                  \
            y[pairs] =                                                                      \
                STORE(LOAD(x[pairs]) * ((C)1 + sigma * (C)(radius(h) * cos_turn(turn(h))))); \
        }                                                                                   \
    }

#define SAME(v) (v)
DEFINE_BLOCKS(float, float, f32, SAME, SAME)
DEFINE_BLOCKS(double, double, f64, SAME, SAME)
DEFINE_BLOCKS(uint16_t, float, bf16, load_bf16, store_bf16)
DEFINE_BLOCKS(uint16_t, float, f16, load_f16, store_f16)

/* ReLU then Bernoulli dropout in one pass: y = relu(x) * (kept ? factor : 0), the mask of the
 * dropout kernel with the same seed (so bitwise dropout(relu(x))). relu keeps NaN and maps
 * everything below 0 to 0, as torch.relu does. Backward needs x and the mask:
 * dx = x <= 0 ? 0 : g * (kept ? factor : 0), bitwise torch's threshold_backward (which passes
 * the gradient where relu(x) <= 0 is false, NaN included) of the dropout gradient. */
#define DEFINE_RELU_BLOCKS(S, C, SUFFIX, LOAD, STORE)                                        \
    static inline C relu_##SUFFIX(C v) { return v < (C)0 ? (C)0 : v; }                     \
    DEFINE_MASK_BLOCK(relu_dropout_block_##SUFFIX, S, C, LOAD, STORE, relu_##SUFFIX)        \
                                                                                            \
    static void relu_dropout_grad_block_##SUFFIX(const S *x, const S *g, S *dx, int64_t len, \
                                                 uint64_t key, uint64_t c0, uint32_t thr,   \
                                                 C factor) {                                \
        int64_t half = (len + 1) / 2, pairs = len - half;                                   \
        uint64_t s = state(key, (int64_t)c0);                                               \
        for (int64_t j = 0; j < pairs; ++j, s += GAMMA) {                                   \
            uint64_t h = mix64(s);                                                          \
            C lo = LOAD(g[j]) * ((uint32_t)h >= thr ? factor : (C)0);                       \
            C hi = LOAD(g[half + j]) * ((uint32_t)(h >> 32) >= thr ? factor : (C)0);        \
            dx[j] = STORE(LOAD(x[j]) <= (C)0 ? (C)0 : lo);                                  \
            dx[half + j] = STORE(LOAD(x[half + j]) <= (C)0 ? (C)0 : hi);                    \
        }                                                                                   \
        if (half > pairs) {                                                                 \
            uint64_t h = word(key, (int64_t)(c0 + pairs));                                  \
            C lo = LOAD(g[pairs]) * ((uint32_t)h >= thr ? factor : (C)0);                   \
            dx[pairs] = STORE(LOAD(x[pairs]) <= (C)0 ? (C)0 : lo);                          \
        }                                                                                   \
    }

DEFINE_RELU_BLOCKS(float, float, f32, SAME, SAME)
DEFINE_RELU_BLOCKS(double, double, f64, SAME, SAME)
DEFINE_RELU_BLOCKS(uint16_t, float, bf16, load_bf16, store_bf16)
DEFINE_RELU_BLOCKS(uint16_t, float, f16, load_f16, store_f16)

/* Split n elements into fixed blocks (block b uses words b * BLOCK/2 + j) and run them on up
 * to nthreads OpenMP threads; the result does not depend on the split. */
#define FOR_BLOCKS(n, nthreads, CALL)                                                        \
    do {                                                                                    \
        int64_t nblocks_ = ((n) + BLOCK - 1) / BLOCK;                                       \
        _Pragma("omp parallel for schedule(static) num_threads(threads_for(n, nthreads))")  \
        for (int64_t b = 0; b < nblocks_; ++b) {                                            \
            int64_t lo = b * BLOCK;                                                         \
            int64_t len = (n) - lo < BLOCK ? (n) - lo : BLOCK;                              \
            uint64_t c0 = (uint64_t)b * (BLOCK / 2);                                        \
            CALL;                                                                           \
        }                                                                                   \
    } while (0)

/* Write the n-element output y block by block with BLOCK_FN(x + lo, dst, len, key, c0, ...)
 * (the *_block functions above). Large outputs: each block is computed into a buffer on the
 * thread's stack (L1-resident), then streamed to y; the values are the same either way. */
#define WRITE_BLOCKS(T, x, y, n, nthreads, key, BLOCK_FN, ...)                               \
    do {                                                                                    \
        int64_t nbytes_ = (n) * (int64_t)sizeof(T);                                         \
        advise_huge(y, nbytes_);                                                            \
        if (nbytes_ < stream_threshold()) {                                                 \
            FOR_BLOCKS(n, nthreads, BLOCK_FN((x) + lo, (y) + lo, len, key, c0, __VA_ARGS__)); \
        } else {                                                                            \
            FOR_BLOCKS(n, nthreads, {                                                       \
                T buf[BLOCK];                                                               \
                BLOCK_FN((x) + lo, buf, len, key, c0, __VA_ARGS__);                         \
                stream_store((y) + lo, buf, len * (int64_t)sizeof(T));                      \
            });                                                                             \
        }                                                                                   \
    } while (0)

#define DEFINE_ENTRY_POINTS(T, C, SUFFIX)                                                    \
    void dl_dropout_##SUFFIX(const T *x, T *y, int64_t n, uint64_t seed, uint32_t thr,      \
                             C factor, int nthreads) {                                      \
        uint64_t key = mix64(seed);                                                         \
        WRITE_BLOCKS(T, x, y, n, nthreads, key, dropout_block_##SUFFIX, thr, factor);       \
    }                                                                                       \
                                                                                            \
    void dl_gaussian_##SUFFIX(const T *x, T *y, int64_t n, uint64_t seed, C sigma,          \
                              int nthreads) {                                               \
        uint64_t key = mix64(seed);                                                         \
        WRITE_BLOCKS(T, x, y, n, nthreads, key, gaussian_block_##SUFFIX, sigma);            \
    }                                                                                       \
                                                                                            \
    void dl_relu_dropout_##SUFFIX(const T *x, T *y, int64_t n, uint64_t seed, uint32_t thr, \
                                  C factor, int nthreads) {                                 \
        uint64_t key = mix64(seed);                                                         \
        WRITE_BLOCKS(T, x, y, n, nthreads, key, relu_dropout_block_##SUFFIX, thr, factor);  \
    }                                                                                       \
                                                                                            \
    void dl_relu_dropout_grad_##SUFFIX(const T *x, const T *g, T *dx, int64_t n,            \
                                       uint64_t seed, uint32_t thr, C factor, int nthreads) { \
        uint64_t key = mix64(seed);                                                         \
        advise_huge(dx, n * (int64_t)sizeof(T));                                            \
        FOR_BLOCKS(n, nthreads, relu_dropout_grad_block_##SUFFIX(                           \
                                    x + lo, g + lo, dx + lo, len, key, c0, thr, factor));   \
    }

DEFINE_ENTRY_POINTS(float, float, f32)
DEFINE_ENTRY_POINTS(double, double, f64)
DEFINE_ENTRY_POINTS(uint16_t, float, bf16)
DEFINE_ENTRY_POINTS(uint16_t, float, f16)

/* Momentum SGD on one parameter tensor, in place (dropoutlab.recipe.MomentumSGD):
 *
 *     v = v * m;  v = fma(g, s, v);  w = w + v
 *
 * the same operations with the same roundings as torch's _foreach_mul_(v, m),
 * _foreach_add_(v, g, alpha=s) (a fused multiply-add) and _foreach_add_(w, v), so the result is
 * bitwise theirs, but in one pass over memory instead of three. Elementwise, hence independent
 * of the thread count. The file is compiled with -ffp-contract=off: no other product is fused.
 *
 * With d != 0 the gradient first gains an L2 penalty's, g = g + d * (2 * w) (d the penalty's
 * coefficient, Table 9): bitwise what autograd adds for d * sum(w^2), whose gradient d * (2w)
 * it rounds once (2w is exact) and adds to the loss's in one rounding. d == 0 leaves g as it is
 * (not g + 0, which would turn a -0 gradient into +0). */
#define SGD_LOOP(T, FMA_FN, G)                                                              \
    for (int64_t b = 0; b < nblocks; ++b) {                                                 \
        int64_t hi = (b + 1) * BLOCK < n ? (b + 1) * BLOCK : n;                             \
        for (int64_t i = b * BLOCK; i < hi; ++i) {                                          \
            T gi = G;                                                                       \
            T vi = FMA_FN(gi, s, v[i] * m);                                                 \
            v[i] = vi;                                                                      \
            w[i] = w[i] + vi;                                                               \
        }                                                                                   \
    }
#define DEFINE_SGD(T, SUFFIX, FMA_FN)                                                       \
    void dl_sgd_##SUFFIX(T *w, T *v, const T *g, int64_t n, T m, T s, T d, int nthreads) {  \
        int64_t nblocks = (n + BLOCK - 1) / BLOCK;                                          \
        if (d == 0) {                                                                       \
            _Pragma("omp parallel for schedule(static) num_threads(threads_for(n, nthreads))") \
            SGD_LOOP(T, FMA_FN, g[i])                                                       \
        } else {                                                                            \
            _Pragma("omp parallel for schedule(static) num_threads(threads_for(n, nthreads))") \
            SGD_LOOP(T, FMA_FN, g[i] + d * (w[i] * 2))                                      \
        }                                                                                   \
    }

DEFINE_SGD(float, f32, fmaf)
DEFINE_SGD(double, f64, fma)

/* The same update for bfloat16 mixed precision (dropoutlab.bf16_weights): float32 master
 * weights w and velocities v, a bfloat16 gradient g (from the bfloat16 working copy the forward
 * pass used), and that working copy w16 rewritten from the new w:
 *
 *     v = v * m;  v = fma(float(g), s, v);  w = w + v;  w16 = bf16(w)
 *
 * bitwise the float32 update on the widened gradient followed by a cast, in one pass. d is the
 * L2 coefficient, as above: g = float(g) + d * (2 * w) when d != 0. */
#define SGD_BF16_LOOP(G)                                                                    \
    for (int64_t b = 0; b < nblocks; ++b) {                                                 \
        int64_t hi = (b + 1) * BLOCK < n ? (b + 1) * BLOCK : n;                             \
        for (int64_t i = b * BLOCK; i < hi; ++i) {                                          \
            float gi = G;                                                                   \
            float vi = fmaf(gi, s, v[i] * m);                                               \
            float wi = w[i] + vi;                                                           \
            v[i] = vi;                                                                      \
            w[i] = wi;                                                                      \
            w16[i] = store_bf16(wi);                                                        \
        }                                                                                   \
    }
void dl_sgd_bf16_f32(float *w, float *v, const uint16_t *g, uint16_t *w16, int64_t n, float m,
                     float s, float d, int nthreads) {
    int64_t nblocks = (n + BLOCK - 1) / BLOCK;
    if (d == 0) {
#pragma omp parallel for schedule(static) num_threads(threads_for(n, nthreads))
        SGD_BF16_LOOP(load_bf16(g[i]))
    } else {
#pragma omp parallel for schedule(static) num_threads(threads_for(n, nthreads))
        SGD_BF16_LOOP(load_bf16(g[i]) + d * (w[i] * 2))
    }
}

/* The raw words, for tests that check the generator against its definition. */
void dl_words(uint64_t seed, int64_t start, int64_t n, uint64_t *out) {
    uint64_t key = mix64(seed);
    for (int64_t i = 0; i < n; ++i) out[i] = word(key, start + i);
}



/* Version of this ABI; _build.py refuses a library that reports another. */
int dl_abi_version(void) { return 6; }
