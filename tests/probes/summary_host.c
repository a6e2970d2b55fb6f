/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Host build of the --summary state machine (probes/summary.bpf.h) for the
 * differential test: the header's environment (types, bpf_log2l, storage
 * accessors) over plain C tables, and a replay entry point that makes the
 * same calls as the BPF handlers in probes/zaptrace.bpf.c, for each recorded
 * event in trace order.  One CPU: the per-CPU arrays are plain arrays.
 *
 * Built by tests/probes/hostbuild.py with gcc into a shared library loaded
 * with ctypes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef uint8_t __u8;
typedef uint16_t __u16;
typedef uint32_t __u32;
typedef uint64_t __u64;
typedef int32_t __s32;
typedef int64_t __s64;
#ifndef __always_inline         /* glibc's <sys/cdefs.h> has it */
#define __always_inline inline __attribute__((always_inline))
#endif

#include "zaptrace_event.h"

/*
 * BCC's helpers.h contract for bpf_log2l: floor(log2 v) + 1, and 1 for v = 0
 * (BCC computes it with shifts; a plain loop here, so a slip in one shows).
 */
static unsigned int bpf_log2l(unsigned long v)
{
	unsigned int r = 1;

	while (v > 1) {
		v >>= 1;
		r++;
	}
	return r;
}

#include "summary.bpf.h"

/*
 * A hash table with the kernel map's max_entries: an insert into a full
 * table fails as bpf_map_update_elem does (the BPF side then sees NULL or
 * nothing stored).  For the LRU maps the kernel would evict instead; the
 * test asserts that no table ever filled (zh_full), so eviction never mattered.
 * Open addressing, linear probing, tombstones reused on insert.
 */
enum { SLOT_FREE, SLOT_USED, SLOT_DEAD };

struct table {
	size_t ksz, vsz, max, nslots, count, full;
	unsigned char *state, *keys, *vals;
};

static void t_init(struct table *t, size_t ksz, size_t vsz, size_t max)
{
	free(t->state);
	free(t->keys);
	free(t->vals);
	t->ksz = ksz;
	t->vsz = vsz;
	t->max = max;
	t->nslots = 4 * max;
	t->count = t->full = 0;
	t->state = calloc(t->nslots, 1);
	t->keys = calloc(t->nslots, ksz);
	t->vals = calloc(t->nslots, vsz);
}

static size_t t_hash(const struct table *t, const void *key)
{
	const unsigned char *p = key;
	uint64_t h = 1469598103934665603ULL;
	size_t i;

	for (i = 0; i < t->ksz; i++)
		h = (h ^ p[i]) * 1099511628211ULL;
	return (size_t)(h % t->nslots);
}

/* Slot of key, or (size_t)-1; *freeslot: first reusable slot met on the way. */
static size_t t_find(const struct table *t, const void *key, size_t *freeslot)
{
	size_t i = t_hash(t, key), n;

	if (freeslot)
		*freeslot = (size_t)-1;
	for (n = 0; n < t->nslots; n++, i = (i + 1) % t->nslots) {
		if (t->state[i] == SLOT_FREE) {
			if (freeslot && *freeslot == (size_t)-1)
				*freeslot = i;
			return (size_t)-1;
		}
		if (t->state[i] == SLOT_DEAD) {
			if (freeslot && *freeslot == (size_t)-1)
				*freeslot = i;
			continue;
		}
		if (!memcmp(t->keys + i * t->ksz, key, t->ksz))
			return i;
	}
	return (size_t)-1;
}

static void *t_lookup(struct table *t, const void *key)
{
	size_t i = t_find(t, key, NULL);

	return i == (size_t)-1 ? NULL : t->vals + i * t->vsz;
}

/* bpf_map_update_elem with BPF_ANY (noexist: BPF_NOEXIST); 0 on success. */
static int t_update(struct table *t, const void *key, const void *val, int noexist)
{
	size_t fs, i = t_find(t, key, &fs);

	if (i != (size_t)-1) {
		if (noexist)
			return -1;
		memcpy(t->vals + i * t->vsz, val, t->vsz);
		return 0;
	}
	if (t->count >= t->max || fs == (size_t)-1) {
		t->full++;
		return -1;
	}
	t->state[fs] = SLOT_USED;
	memcpy(t->keys + fs * t->ksz, key, t->ksz);
	memcpy(t->vals + fs * t->vsz, val, t->vsz);
	t->count++;
	return 0;
}

static void t_delete(struct table *t, const void *key)
{
	size_t i = t_find(t, key, NULL);

	if (i != (size_t)-1) {
		t->state[i] = SLOT_DEAD;
		t->count--;
	}
}

/* The maps of probes/zaptrace.bpf.c, with its max_entries. */
static __u64 hist[ZT_HIST_SLOTS];
static __u64 sums[ZT_S_SLOTS];
static struct zt_sumtask sumzero;
static struct table sumtask, dirty_folios, open_folios, mk_running;

static __always_inline __u64 *zs_hist(__u32 slot) { return slot < ZT_HIST_SLOTS ? &hist[slot] : NULL; }
static __always_inline __u64 *zs_sums(__u32 slot) { return slot < ZT_S_SLOTS ? &sums[slot] : NULL; }
static __always_inline struct zt_sumtask *zs_task(__u32 tid) { return t_lookup(&sumtask, &tid); }
static __always_inline void zs_task_drop(__u32 tid) { t_delete(&sumtask, &tid); }
static __always_inline __u64 *zs_dirty(struct zt_dkey *k) { return t_lookup(&dirty_folios, k); }
static __always_inline void zs_dirty_set(struct zt_dkey *k, __u64 *seq) { t_update(&dirty_folios, k, seq, 0); }
static __always_inline struct zt_open *zs_open(__u64 folio) { return t_lookup(&open_folios, &folio); }
static __always_inline void zs_open_set(__u64 folio, struct zt_open *o) { t_update(&open_folios, &folio, o, 0); }
static __always_inline __u64 *zs_mk(__u64 folio) { return t_lookup(&mk_running, &folio); }
static __always_inline void zs_mk_set(__u64 folio, __u64 *since) { t_update(&mk_running, &folio, since, 0); }
static __always_inline void zs_mk_drop(__u64 folio) { t_delete(&mk_running, &folio); }

/* BCC's lookup_or_try_init: lookup; else insert (BPF_NOEXIST) and look up again. */
static __always_inline struct zt_sumtask *zs_task_init(__u32 tid)
{
	struct zt_sumtask *st = t_lookup(&sumtask, &tid);

	if (st)
		return st;
	t_update(&sumtask, &tid, &sumzero, 1);
	return t_lookup(&sumtask, &tid);
}

/* ---- entry points for ctypes ---- */

unsigned long zh_event_size(void) { return sizeof(struct zt_event); }
unsigned int zh_log2l(unsigned long v) { return bpf_log2l(v); }
unsigned long zh_hist_slots(void) { return ZT_HIST_SLOTS; }
unsigned long zh_sum_slots(void) { return ZT_S_SLOTS; }
const __u64 *zh_hist(void) { return hist; }
const __u64 *zh_sums(void) { return sums; }

/* Tables that filled up (an insert refused): must be 0 for the comparison to hold. */
unsigned long zh_full(void)
{
	return sumtask.full + dirty_folios.full + open_folios.full + mk_running.full;
}

void zh_reset(void)
{
	memset(hist, 0, sizeof(hist));
	memset(sums, 0, sizeof(sums));
	t_init(&sumtask, sizeof(__u32), sizeof(struct zt_sumtask), 4096);
	t_init(&dirty_folios, sizeof(struct zt_dkey), sizeof(__u64), 65536);
	t_init(&open_folios, sizeof(__u64), sizeof(struct zt_open), 65536);
	t_init(&mk_running, sizeof(__u64), sizeof(__u64), 16384);
}

/* Pending pages of class cls over the live tasks, as zaptrace/summary.py reads them at the end. */
__u64 zh_pending(__u32 cls)
{
	__u64 n = 0;
	size_t i;

	for (i = 0; i < sumtask.nslots; i++)
		if (sumtask.state[i] == SLOT_USED && cls < ZT_NCLASS)
			n += ((struct zt_sumtask *)(sumtask.vals + i * sumtask.vsz))->pending[cls];
	return n;
}

/*
 * The calls the BPF handlers make, per event kind (zaptrace.bpf.c: h_zap_enter,
 * rmap_common, h_dirty, h_tlb_flush_exit / h_flush_range_exit, h_mkclean_*).
 * flush_exit_kind: the covering flush's return, ZT_FLUSH_RANGE_EXIT when
 * flush_tlb_mm_range was attached (ZT_HAVE_FLUSHRANGE), else ZT_TLB_FLUSH_EXIT.
 */
void zh_replay(const struct zt_event *ev, unsigned long n, unsigned int flush_exit_kind)
{
	unsigned long i;

	for (i = 0; i < n; i++) {
		struct zt_event e = ev[i];

		switch (e.kind) {
		case ZT_ZAP_ENTER:
			sum_zap_enter(e.tid, e.ts);
			break;
		case ZT_DIRTY:
			sum_dirty(e.tid, e.folio);
			break;
		case ZT_RMAP:
			sum_decrement(&e);
			break;
		case ZT_TLB_FLUSH_EXIT:
		case ZT_FLUSH_RANGE_EXIT:
			if (e.kind == flush_exit_kind)
				sum_flush_done(e.tid, e.mm, e.ts);
			break;
		case ZT_MKCLEAN_ENTER:
			sum_mkclean_enter(e.folio, e.ts);
			break;
		case ZT_MKCLEAN_EXIT:
			sum_mkclean_exit(e.folio);
			break;
		}
	}
}
