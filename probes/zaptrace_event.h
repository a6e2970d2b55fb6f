/* SPDX-License-Identifier: GPL-2.0 */
/*
 * zaptrace event layout: declared once, here.
 *
 * The BPF program (probes/zaptrace.bpf.c) includes this file; the Python
 * reader (zaptrace/layout.py) parses it to build the numpy dtype of a trace
 * chunk, the kind names and the flag bits.  Keep the syntax simple: one
 * member per line, fixed-width __u64/__u32/__s32/__u16/__u8 types only,
 * naturally aligned, no padding holes.
 */
#ifndef ZAPTRACE_EVENT_H
#define ZAPTRACE_EVENT_H

/* Logical event kinds.  The _ENTER and _EXIT kinds are function entry and return. */
enum zt_kind {
	ZT_ZAP_ENTER = 1,        /* zap bracket opens: page = start address, folio = end address */
	ZT_ZAP_EXIT = 2,         /* zap bracket closes */
	ZT_RMAP = 3,             /* mapcount decrement: page, folio, pfn, nr pages (PMD/PUD: pages mapped) */
	ZT_DIRTY = 4,            /* PTE-dirty marker: the zapping task marked page dirty inside a zap */
	ZT_TLB_FLUSH_ENTER = 5,  /* tlb_flush_mmu() entry */
	ZT_TLB_FLUSH_EXIT = 6,   /* tlb_flush_mmu() return */
	ZT_FLUSH_RANGE_ENTER = 7,/* arch flush (flush_tlb_mm_range) entry: page = start, folio = end */
	ZT_FLUSH_RANGE_EXIT = 8, /* arch flush return */
	ZT_RMAPS_ENTER = 9,      /* tlb_flush_rmaps() entry (delayed rmap path, 6.2+) */
	ZT_RMAPS_EXIT = 10,      /* tlb_flush_rmaps() return */
	ZT_MKCLEAN_ENTER = 11,   /* folio_mkclean()/page_mkclean() entry: page = folio = argument */
	ZT_MKCLEAN_EXIT = 12,    /* its return: nr = return value (PTEs cleaned) */
	ZT_ZAP_PMD = 13,         /* zap_huge_pmd() entry inside a zap: page = address; the PMD is cleared after it */
	ZT_PT_FREE = 14,         /* a PTE table freed through the zap's mmu_gather: page = the table's struct page */
	ZT_NKINDS = 15,
};

/* Event flag bits (zt_event.flags). */
#define ZT_F_ANON     0x01  /* page is anonymous (folio->mapping & PAGE_MAPPING_ANON) */
#define ZT_F_PGDIRTY  0x02  /* PG_dirty set on the folio when the event fired */
#define ZT_F_IN_ZAP   0x04  /* fired inside a zap bracket of the same task */
#define ZT_F_IN_RMAPS 0x08  /* fired inside tlb_flush_rmaps() of the same task */
#define ZT_F_MM_GUESS 0x10  /* mm taken from current->active_mm, not from the call's arguments */
#define ZT_F_COMPOUND 0x20  /* rmap of a whole PMD mapping (folio_remove_rmap_pmd; compound page_remove_rmap) */
#define ZT_F_PUD      0x40  /* rmap of a whole PUD mapping (folio_remove_rmap_pud) */
#define ZT_F_INFERRED 0x80  /* record --zap-return inferred: ZAP_EXIT at the task's next event, ZAP_ENTER at its first event inside (ts 1 ns off) */

struct zt_event {
	__u64 ts;     /* bpf_ktime_get_ns(): CLOCK_MONOTONIC, nanoseconds */
	__u64 mm;     /* struct mm_struct * the event acts on */
	__u64 page;   /* struct page * (rmap, dirty, mkclean); start address (zap, flush range) */
	__u64 folio;  /* folio (compound head) pointer; end address (zap, flush range) */
	__u64 pfn;    /* page frame number of page, 0 when not a page event */
	__u32 tid;
	__u32 tgid;
	__s32 nr;     /* pages covered (rmap); return value (mkclean exit) */
	__u16 cpu;
	__u8 kind;    /* enum zt_kind */
	__u8 flags;   /* ZT_F_* */
	__u64 ino;    /* file pages (rmap, mkclean): inode number of folio->mapping->host, else 0 */
	__u64 index;  /* file pages: page offset in the file (of page; of the folio for mkclean) */
};

/*
 * Counter slots of the per-CPU "counts" array: [ZT_COUNT_GENERATED + kind] events generated,
 * [ZT_COUNT_LOST + kind] events lost (ring buffer full), [ZT_COUNT_EMPTY_ZAPS] zap brackets
 * not written because no event of their task fired inside them (a zap of an empty range: see
 * h_zap_enter); with --zap-return inferred or --zap-return checked, [ZT_COUNT_ZAP_CHECKS] the
 * times the inference was made and [ZT_COUNT_ZAP_WRONG] those where it disagreed with the
 * zap's probed return (--zap-return checked only; see zap_running()).  With --zap-entry inferred
 * and --zap-return checked, [ZT_COUNT_ZAP_OPENS] the openers met inside a probed zap, of which
 * [ZT_COUNT_ZAP_JOINED] would have continued the bracket of an earlier zap and
 * [ZT_COUNT_ZAP_SPLIT] would have closed the zap's own (zap_open_lazy()).
 * zaptrace/layout.py reads these defines too: keep each one of the form
 * (A * ZT_NKINDS) or (A * ZT_NKINDS + B).
 */
#define ZT_COUNT_GENERATED (0 * ZT_NKINDS)
#define ZT_COUNT_LOST (1 * ZT_NKINDS)
#define ZT_COUNT_EMPTY_ZAPS (2 * ZT_NKINDS)
#define ZT_COUNT_ZAP_CHECKS (2 * ZT_NKINDS + 1)
#define ZT_COUNT_ZAP_WRONG (2 * ZT_NKINDS + 2)
#define ZT_COUNT_ZAP_OPENS (2 * ZT_NKINDS + 3)
#define ZT_COUNT_ZAP_JOINED (2 * ZT_NKINDS + 4)
#define ZT_COUNT_ZAP_SPLIT (2 * ZT_NKINDS + 5)
#define ZT_COUNT_SLOTS (2 * ZT_NKINDS + 6)

#endif /* ZAPTRACE_EVENT_H */
