/* SPDX-License-Identifier: GPL-2.0 */
/*
 * zaptrace --summary: pair decrements with their covering flush in the kernel
 * and keep log2 histograms of the signed gap, per class and path, with no
 * per-event transfer to user space.
 *
 * Shared with the reader (zaptrace/summary.py parses the enums and defines)
 * and with the state machine that fills the slots (summary.bpf.h).
 *
 * Rules (the same as analysis/gaps.py):
 *   immediate decrement: pending until the task's next completed flush
 *     (flush_tlb_mm_range return), gap = that completion - decrement > 0;
 *   delayed decrement (inside tlb_flush_rmaps): gap = the task's last
 *     completed flush in the same zap - decrement <= 0;
 *   class: anon, file-dirty (the zap's own folio_mark_dirty/set_page_dirty of
 *     the folio in this zap; every delayed file decrement: the kernel delays
 *     only dirty PTEs), file-clean;
 *   window hit: a mkclean of the folio that overlaps a still-open window.
 * A task keeps up to ZT_PENDING runs of pending decrements; beyond that a
 * decrement joins the task's last run of its class and its gap is taken at
 * the run's midpoint (counted in ZT_S_APPROX: same class and sign, bucket
 * approximate).
 */
#ifndef ZAPTRACE_SUMMARY_H
#define ZAPTRACE_SUMMARY_H

/* Page classes, as the kernel summary counts them; the quoted name is the reader's. */
enum zt_class {
	ZT_C_ANON = 0,         /* "anon" */
	ZT_C_FILE_CLEAN = 1,   /* "file-clean" */
	ZT_C_FILE_DIRTY = 2,   /* "file-dirty" */
};

/* Zap paths the kernel summary pairs (PMD/PUD and other-path ones are only counted). */
enum zt_path {
	ZT_P_IMMEDIATE = 0,    /* "immediate": decremented in the zap, before its flush */
	ZT_P_DELAYED = 1,      /* "delayed": decremented in tlb_flush_rmaps(), after it (6.2+) */
};

#define ZT_NCLASS 3          /* members of enum zt_class */
#define ZT_NPATH 2           /* members of enum zt_path */
#define ZT_HBUCKETS 64       /* log2 buckets of |gap| in ns */
#define ZT_PENDING 256
/* histogram slot: ((class * ZT_NPATH + path) * 2 + negative) * ZT_HBUCKETS + log2(|gap|) */
#define ZT_HIST_SLOTS (ZT_NCLASS * ZT_NPATH * 2 * ZT_HBUCKETS)

/* Counter slots; per class x path ones are at base + class * ZT_NPATH + path. */
enum zt_sum {
	ZT_S_DEC = 0,          /* decrements (pages) */
	ZT_S_PAIRED = 6,
	ZT_S_UNPAIRED = 12,    /* delayed with no earlier flush in the zap */
	ZT_S_OPEN = 18,
	ZT_S_CLOSED = 24,
	ZT_S_HITS = 30,        /* per class only: base + class */
	ZT_S_OTHER = 33,       /* other-path removals */
	ZT_S_APPROX = 34,      /* pages whose gap was taken at a merged run's midpoint */
	ZT_S_MIXED_MM = 35,    /* decrements dropped from pairing: the task's pending runs were for another mm */
	ZT_S_HUGE = 36,        /* PMD/PUD mappings removed inside a zap: counted, paired only by the analysis */
	ZT_S_SLOTS = 37,
};

#endif /* ZAPTRACE_SUMMARY_H */
