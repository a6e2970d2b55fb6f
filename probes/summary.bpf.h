/* SPDX-License-Identifier: GPL-2.0 */
/*
 * zaptrace --summary: the in-kernel state machine that pairs each decrement
 * with its covering flush and histograms the signed gap (rules and slot
 * layout: zaptrace_summary.h).
 *
 * Plain C on purpose: the same text is compiled by BCC into the BPF program
 * (zaptrace.bpf.c) and by gcc on the host, where tests/probes replays
 * recorded traces through it and compares the result with analysis/gaps.py.
 * So nothing here names a map or uses BCC's map syntax: BCC rewrites
 * "table.lookup(...)" only in the main file (not in headers, not in macros),
 * and gcc does not know it at all.  The includer provides
 *
 *   - the types __u8 .. __u64, __s64 and __always_inline;
 *   - struct zt_event (zaptrace_event.h);
 *   - bpf_log2l(): BCC's helpers.h has it; the host shim defines the same
 *     contract (floor(log2 v) + 1, and 1 for v = 0);
 *   - the storage accessors declared below, defined after this #include
 *     (BPF: one-line wrappers over BCC tables; host: C arrays).
 *
 * Entry points, called by the BPF handlers with the event they are about
 * to emit: sum_zap_enter, sum_dirty, sum_decrement, sum_flush_done,
 * sum_mkclean_enter, sum_mkclean_exit; sum_task_exit at sched_process_exit.
 */
#ifndef ZAPTRACE_SUMMARY_BPF_H
#define ZAPTRACE_SUMMARY_BPF_H

#include "zaptrace_summary.h"

/* Keep the compiler from rewriting an index the verifier must see bounded. */
#ifndef ZT_BARRIER
#define ZT_BARRIER(v) asm volatile("" : "+r"(v))
#endif

/* A run of pending immediate decrements of one class (count pages, first..last). */
struct zt_run {
	__u64 first;
	__u64 last;
	__u32 count;
	__u32 cls;
};

struct zt_sumtask {
	__u64 mm;              /* mm of the pending runs */
	__u64 zap_ts;          /* start of the task's current zap */
	__u64 zap_seq;         /* zaps started by the task */
	__u64 last_done;       /* completion of its last covering flush... */
	__u64 last_done_mm;    /* ...and that flush's mm */
	__u64 gen;             /* covering flushes completed: a window is open while gen is unchanged */
	__u32 n;               /* runs[0..n) in use; runs[ZT_PENDING + class] collect the overflow */
	__u32 pad;
	__u64 pending[ZT_NCLASS];   /* pages waiting for a covering flush, per class */
	struct zt_run runs[ZT_PENDING + ZT_NCLASS];
};

/* The zap's dirty marker of a folio, per task: value = the task's zap_seq then. */
struct zt_dkey {
	__u64 folio;
	__u32 tid;
	__u32 pad;
};

/* The last immediate decrement of a folio: its window is open while its task's gen is unchanged. */
struct zt_open {
	__u64 gen;
	__u32 tid;
	__u32 cls;
};

/* Storage, provided by the includer.  NULL from a lookup means "absent" (or a map error). */
static __always_inline __u64 *zs_hist(__u32 slot);                 /* histogram slot (per CPU) */
static __always_inline __u64 *zs_sums(__u32 slot);                 /* counter slot (per CPU) */
static __always_inline struct zt_sumtask *zs_task(__u32 tid);
static __always_inline struct zt_sumtask *zs_task_init(__u32 tid); /* lookup, or insert zeroed */
static __always_inline void zs_task_drop(__u32 tid);
static __always_inline __u64 *zs_dirty(struct zt_dkey *k);
static __always_inline void zs_dirty_set(struct zt_dkey *k, __u64 *zap_seq);
static __always_inline struct zt_open *zs_open(__u64 folio);
static __always_inline void zs_open_set(__u64 folio, struct zt_open *o);
static __always_inline __u64 *zs_mk(__u64 folio);                  /* mkclean of the folio running since */
static __always_inline void zs_mk_set(__u64 folio, __u64 *since);
static __always_inline void zs_mk_drop(__u64 folio);

static __always_inline void sadd(__u32 slot, __u64 n)
{
	__u64 *v = zs_sums(slot);

	if (v)
		*v += n;
}

/* Per class x path counter slot. */
static __always_inline __u32 zt_cp(__u32 base, __u32 cls, __u32 path)
{
	return base + cls * ZT_NPATH + path;
}

/* Account n pages of class cls on path path with this signed gap. */
static __always_inline void hadd(__u32 cls, __u32 path, __s64 gap, __u64 n)
{
	__u32 neg = gap <= 0;
	__u64 mag = neg ? (__u64)(-gap) : (__u64)gap;
	/* bucket floor(log2 |gap|), 0 for |gap| <= 1: BCC's bpf_log2l is one more */
	__u32 slot = ((cls * ZT_NPATH + path) * 2 + neg) * ZT_HBUCKETS + (bpf_log2l(mag) - 1);
	__u64 *v = zs_hist(slot);

	if (v)
		*v += n;
	sadd(zt_cp(ZT_S_PAIRED, cls, path), n);
	sadd(zt_cp(neg ? ZT_S_CLOSED : ZT_S_OPEN, cls, path), n);
}

static __always_inline void sum_zap_enter(__u32 tid, __u64 now)
{
	struct zt_sumtask *st = zs_task_init(tid);

	if (st) {
		st->zap_seq++;
		st->zap_ts = now;
	}
}

static __always_inline void sum_dirty(__u32 tid, __u64 folio)
{
	struct zt_sumtask *st = zs_task(tid);
	struct zt_dkey k = {.folio = folio, .tid = tid};

	if (st)
		zs_dirty_set(&k, &st->zap_seq);
}

/* The class of a decrement on path: anon, file-dirty by the zap's own marker, else file-clean. */
static __always_inline __u32 sum_class(struct zt_event *e, struct zt_sumtask *st, __u32 path)
{
	struct zt_dkey k = {.folio = e->folio, .tid = e->tid};
	__u64 *seq;

	if (e->flags & ZT_F_ANON)
		return ZT_C_ANON;
	if (path == ZT_P_DELAYED)
		return ZT_C_FILE_DIRTY;     /* the kernel delays only dirty file PTEs (PATH_RULES in analysis/gaps.py) */
	seq = zs_dirty(&k);
	return (st && seq && *seq == st->zap_seq) ? ZT_C_FILE_DIRTY : ZT_C_FILE_CLEAN;
}

static __always_inline void sum_decrement(struct zt_event *e)
{
	__u64 n = e->nr > 0 ? e->nr : 1;
	__u32 cls, path, i;
	struct zt_sumtask *st;
	struct zt_open o = {};
	struct zt_run *r;

	if (e->flags & (ZT_F_COMPOUND | ZT_F_PUD)) {
		/* PMD/PUD mappings: counted, not paired in the kernel (the analysis pairs them). */
		sadd((e->flags & ZT_F_IN_ZAP) ? ZT_S_HUGE : ZT_S_OTHER, 1);
		return;
	}
	if (!(e->flags & (ZT_F_IN_ZAP | ZT_F_IN_RMAPS))) {
		sadd(ZT_S_OTHER, n);
		return;
	}
	path = (e->flags & ZT_F_IN_RMAPS) ? ZT_P_DELAYED : ZT_P_IMMEDIATE;
	st = zs_task_init(e->tid);
	cls = sum_class(e, st, path);
	sadd(zt_cp(ZT_S_DEC, cls, path), n);
	if (!st) {
		sadd(zt_cp(ZT_S_UNPAIRED, cls, path), n);
		return;
	}
	if (path == ZT_P_DELAYED) {
		if (st->last_done && st->last_done >= st->zap_ts && st->last_done_mm == e->mm)
			hadd(cls, path, (__s64)(st->last_done - e->ts), n);
		else
			sadd(zt_cp(ZT_S_UNPAIRED, cls, path), n);
		return;
	}
	if (zs_mk(e->folio))
		sadd(ZT_S_HITS + cls, 1);           /* writeback already in the folio */
	o.gen = st->gen;
	o.tid = e->tid;
	o.cls = cls;
	zs_open_set(e->folio, &o);
	if (st->n && st->mm != e->mm) {
		sadd(zt_cp(ZT_S_UNPAIRED, cls, path), n);
		sadd(ZT_S_MIXED_MM, n);
		return;
	}
	st->mm = e->mm;
	st->pending[cls % ZT_NCLASS] += n;
	i = st->n;
	ZT_BARRIER(i);
	if (i < ZT_PENDING) {
		r = &st->runs[i];
		r->first = e->ts;
		r->last = e->ts;
		r->count = n;
		r->cls = cls;
		st->n = i + 1;
		return;
	}
	r = &st->runs[ZT_PENDING + (cls % ZT_NCLASS)];
	if (!r->count)
		r->first = e->ts;
	r->last = e->ts;
	r->count += n;
	r->cls = cls;
	sadd(ZT_S_APPROX, n);
}

static __always_inline void sum_run_done(struct zt_run *r, __u64 now)
{
	__u64 at;

	if (!r->count)
		return;
	at = r->first + (r->last - r->first) / 2;
	hadd(r->cls % ZT_NCLASS, ZT_P_IMMEDIATE, (__s64)(now - at), r->count);
	r->count = 0;
}

/* A covering flush of mm by tid completed: close every pending window of the task. */
static __always_inline void sum_flush_done(__u32 tid, __u64 mm, __u64 now)
{
	struct zt_sumtask *st = zs_task(tid);
	__u32 i, n;

	if (!st)
		return;
	st->last_done = now;
	st->last_done_mm = mm;
	if (st->n && st->mm != mm)
		return;             /* a flush of another mm covers none of them */
	st->gen++;
	n = st->n;
#ifdef __clang__
#pragma clang loop unroll(disable)
#endif
	for (i = 0; i < ZT_PENDING; i++) {
		__u32 j = i;

		ZT_BARRIER(j);        /* keep the bound check next to the access, for the verifier */
		if (j >= n || j >= ZT_PENDING)
			break;
		sum_run_done(&st->runs[j], now);
	}
	sum_run_done(&st->runs[ZT_PENDING + ZT_C_ANON], now);
	sum_run_done(&st->runs[ZT_PENDING + ZT_C_FILE_CLEAN], now);
	sum_run_done(&st->runs[ZT_PENDING + ZT_C_FILE_DIRTY], now);
	st->n = 0;
	st->pending[ZT_C_ANON] = st->pending[ZT_C_FILE_CLEAN] = st->pending[ZT_C_FILE_DIRTY] = 0;
}

static __always_inline void sum_mkclean_enter(__u64 folio, __u64 now)
{
	struct zt_open *o = zs_open(folio);

	if (o) {
		struct zt_sumtask *st = zs_task(o->tid);

		if (st && st->gen == o->gen)
			sadd(ZT_S_HITS + (o->cls % ZT_NCLASS), 1);
	}
	zs_mk_set(folio, &now);
}

static __always_inline void sum_mkclean_exit(__u64 folio)
{
	zs_mk_drop(folio);
}

/* Pending decrements of an exiting task stay unpaired: count them, drop the task. */
static __always_inline void sum_task_exit(__u32 tid)
{
	struct zt_sumtask *st = zs_task(tid);

	if (!st)
		return;
	sadd(zt_cp(ZT_S_UNPAIRED, ZT_C_ANON, ZT_P_IMMEDIATE), st->pending[ZT_C_ANON]);
	sadd(zt_cp(ZT_S_UNPAIRED, ZT_C_FILE_CLEAN, ZT_P_IMMEDIATE), st->pending[ZT_C_FILE_CLEAN]);
	sadd(zt_cp(ZT_S_UNPAIRED, ZT_C_FILE_DIRTY, ZT_P_IMMEDIATE), st->pending[ZT_C_FILE_DIRTY]);
	zs_task_drop(tid);
}

#endif /* ZAPTRACE_SUMMARY_BPF_H */
