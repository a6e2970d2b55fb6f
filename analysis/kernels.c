/* Compiled kernels of the gap pipeline (analysis/kernels.py loads them with ctypes).
 *
 * Each kernel is one of analysis/gaps.py's numpy primitives, with the same contract
 * (see the function named in each comment); gaps.py calls it when the library is built
 * and keeps the numpy version for machines without a C compiler.  The rules of the
 * measure stay in gaps.py: these only join rows by key and time.  tests/analysis/
 * test_kernels.py holds each kernel equal to its numpy twin (random inputs, ties,
 * masks, timestamps near the ends of int64), and the gap tables of both engines equal.
 *
 * Why compiled: events come in time order, and a join "the task's latest X before this
 * row" is one sweep with a hash map key -> latest row, O(n); numpy emulates it with
 * sorts and binary searches that miss the cache (most of the report's time at 10 M
 * events).
 *
 * Plain C99, no Python headers: built with `cc -O2 -shared -fPIC`.  Keys are one or
 * two uint64 columns per row (b == NULL: one column); times are int64 nanoseconds,
 * only compared, never subtracted.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- open-addressing map: key (a, b) -> row, the key held in the slot (one cache miss
 * per lookup, not one more per key column read back from the rows) ---- */

struct slot {
    uint64_t a, b;
    int64_t row;            /* -1: empty */
    int64_t aux;            /* zt_hit_ranges: past the run's last row */
};

struct map {
    struct slot *slot;
    uint64_t mask;          /* capacity - 1 (a power of two) */
    int64_t used;
};

static inline uint64_t mix(uint64_t a, uint64_t b)
{
    uint64_t x = a ^ (b * 0x9E3779B97F4A7C15ull) ^ (b >> 29);
    x ^= x >> 33;
    x *= 0xFF51AFD7ED558CCDull;
    x ^= x >> 33;
    x *= 0xC4CEB9FE1A85EC53ull;
    x ^= x >> 33;
    return x;
}

static int map_init(struct map *m, int64_t cap)
{
    uint64_t c = 1024;
    while ((int64_t)c < cap * 2)
        c <<= 1;
    m->slot = malloc(c * sizeof(struct slot));
    if (!m->slot)
        return -1;
    for (uint64_t i = 0; i < c; i++)
        m->slot[i].row = -1;
    m->mask = c - 1;
    m->used = 0;
    return 0;
}

/* The slot of key (ka, kb): the one holding it, or the empty one where it would go. */
static inline struct slot *map_find(const struct map *m, uint64_t ka, uint64_t kb)
{
    uint64_t h = mix(ka, kb) & m->mask;
    for (;;) {
        struct slot *s = &m->slot[h];
        if (s->row < 0 || (s->a == ka && s->b == kb))
            return s;
        h = (h + 1) & m->mask;
    }
}

static int map_grow(struct map *m)
{
    struct map n;
    if (map_init(&n, (int64_t)(m->mask + 1)) < 0)
        return -1;
    for (uint64_t i = 0; i <= m->mask; i++) {
        struct slot *s = &m->slot[i];
        if (s->row >= 0)
            *map_find(&n, s->a, s->b) = *s;
    }
    n.used = m->used;
    free(m->slot);
    *m = n;
    return 0;
}

/* Key (ka, kb) now maps to row r. */
static inline int map_put(struct map *m, uint64_t ka, uint64_t kb, int64_t r)
{
    struct slot *s = map_find(m, ka, kb);
    if (s->row < 0) {
        if ((uint64_t)(m->used + 1) * 2 > m->mask + 1) {
            if (map_grow(m) < 0)
                return -1;
            s = map_find(m, ka, kb);
        }
        m->used++;
        s->a = ka;
        s->b = kb;
    }
    s->row = r;
    return 0;
}

static inline int64_t map_get(const struct map *m, uint64_t ka, uint64_t kb)
{
    return map_find(m, ka, kb)->row;
}

#define ROW(order, i) ((order) ? (order)[i] : (i))
#define KB(col, r) ((col) ? (col)[r] : 0)

/* gaps._asof: for each left row, the right row of the same key matched as-of its time,
 * -1 where none.  backward: the last right row at (exact) or strictly before it; forward:
 * the first at (exact) or strictly after it; of right rows with equal times the last
 * (backward) or first (forward) in row order.  Every right row is valid (the caller keeps
 * only those).
 * lorder / rorder: the rows in stable time order (NULL: the rows already are).
 * Returns 0, -1 when out of memory. */
int zt_asof(int64_t n, const int64_t *lt, const uint64_t *la, const uint64_t *lb, const int64_t *lorder,
            int64_t m, const int64_t *rt, const uint64_t *ra, const uint64_t *rb,
            const int64_t *rorder, int backward, int exact, int64_t *out)
{
    struct map mp;
    if (map_init(&mp, 1024) < 0)
        return -1;
    if (backward) {
        int64_t j = 0;
        for (int64_t k = 0; k < n; k++) {
            int64_t i = ROW(lorder, k), t = lt[i];
            for (; j < m; j++) {
                int64_t r = ROW(rorder, j);
                if (exact ? rt[r] > t : rt[r] >= t)
                    break;
                if (map_put(&mp, ra[r], KB(rb, r), r) < 0)
                    goto oom;
            }
            out[i] = map_get(&mp, la[i], KB(lb, i));
        }
    } else {
        int64_t j = m - 1;
        for (int64_t k = n - 1; k >= 0; k--) {
            int64_t i = ROW(lorder, k), t = lt[i];
            for (; j >= 0; j--) {
                int64_t r = ROW(rorder, j);
                if (exact ? rt[r] < t : rt[r] <= t)
                    break;
                if (map_put(&mp, ra[r], KB(rb, r), r) < 0)
                    goto oom;
            }
            out[i] = map_get(&mp, la[i], KB(lb, i));
        }
    }
    free(mp.slot);
    return 0;
oom:
    free(mp.slot);
    return -1;
}

/* gaps._shift_np with periods 1 / -1: the value of t in the previous (dir > 0) or next
 * (dir < 0) row of the same key, in row order; fill where there is none. */
int zt_shift(int64_t n, const int64_t *t, const uint64_t *a, const uint64_t *b, int dir, int64_t fill,
             int64_t *out)
{
    struct map mp;
    if (map_init(&mp, 1024) < 0)
        return -1;
    for (int64_t k = 0; k < n; k++) {
        int64_t i = dir > 0 ? k : n - 1 - k;
        struct slot *s = map_find(&mp, a[i], KB(b, i));
        out[i] = s->row >= 0 ? t[s->row] : fill;
        if (s->row >= 0)
            s->row = i;
        else if (map_put(&mp, a[i], KB(b, i), i) < 0) {
            free(mp.slot);
            return -1;
        }
    }
    free(mp.slot);
    return 0;
}

/* gaps._hit_ranges: mkclean calls sorted by folio (runs of equal m_folio, nm rows) whose
 * starts m_ts and ends m_end rise within each run.  For each query window [q_ts, q_done]
 * of folio q_folio: lo = the first call of its run ending after q_ts, count = the calls
 * from lo on starting before q_done (lo = -1, count 0: none ends after q_ts). */
int zt_hit_ranges(int64_t nm, const uint64_t *m_folio, const int64_t *m_ts, const int64_t *m_end,
                  int64_t nq, const int64_t *q_ts, const uint64_t *q_folio, const int64_t *q_done,
                  int64_t *out_lo, int64_t *out_count)
{
    struct map mp;              /* folio -> its run's first row (row) and past its last (aux) */
    if (map_init(&mp, 1024) < 0)
        return -1;
    for (int64_t i = nm - 1, stop = nm; i >= 0; i--) {
        if (i == 0 || m_folio[i] != m_folio[i - 1]) {
            if (map_put(&mp, m_folio[i], 0, i) < 0) {
                free(mp.slot);
                return -1;
            }
            map_find(&mp, m_folio[i], 0)->aux = stop;
            stop = i;
        }
    }
    for (int64_t k = 0; k < nq; k++) {
        const struct slot *s = map_find(&mp, q_folio[k], 0);
        int64_t first = s->row;
        out_lo[k] = -1;
        out_count[k] = 0;
        if (first < 0)
            continue;
        int64_t stop = s->aux;
        /* the first call ending after q_ts (ends rise in the run) */
        int64_t lo = first, hi = stop, t = q_ts[k];
        while (lo < hi) {
            int64_t mid = lo + (hi - lo) / 2;
            if (m_end[mid] <= t)
                lo = mid + 1;
            else
                hi = mid;
        }
        if (lo >= stop)
            continue;
        /* from there, the first starting at or after q_done */
        int64_t a = lo, b = stop, d = q_done[k];
        while (a < b) {
            int64_t mid = a + (b - a) / 2;
            if (m_ts[mid] < d)
                a = mid + 1;
            else
                b = mid;
        }
        out_lo[k] = lo;
        out_count[k] = a > lo ? a - lo : 0;
    }
    free(mp.slot);
    return 0;
}

