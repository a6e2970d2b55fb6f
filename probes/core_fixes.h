/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Kernel definitions that moved or changed shape, each guarded by what the
 * running kernel's headers define (BCC compiles against them), never by a
 * version number, and commented with the change that made the guard
 * necessary.
 */
#ifndef ZAPTRACE_CORE_FIXES_H
#define ZAPTRACE_CORE_FIXES_H

/*
 * The "anonymous" bit of page->mapping / folio->mapping.  PAGE_MAPPING_ANON
 * (include/linux/page-flags.h since 2.6) became FOLIO_MAPPING_ANON in v6.17,
 * df25569d401e "mm: rename PAGE_MAPPING_* to FOLIO_MAPPING_*"; both are bit 0.
 */
#if defined(PAGE_MAPPING_ANON)
#define ZT_MAPPING_ANON PAGE_MAPPING_ANON
#elif defined(FOLIO_MAPPING_ANON)
#define ZT_MAPPING_ANON FOLIO_MAPPING_ANON
#else
#define ZT_MAPPING_ANON 0x1
#endif

/* The low bits of ->mapping that mark anon/KSM/movable pages (PAGE_MAPPING_FLAGS). */
#define ZT_MAPPING_FLAGS 0x3UL

/*
 * A page's offset in its file: page->index, renamed page->__folio_index in
 * v6.16 (acc53a0b4c15 "mm: rename page->index to page->__folio_index"; struct
 * folio keeps "index" at the same place).  ZT_PAGE_FOLIO_INDEX comes from
 * FIELD_FIXES (zaptrace/catalog.py) when BTF shows the new name.  The inode
 * number is read at offsets BTF gives (FIELD_OFFSETS: mapping->host->i_ino),
 * since <linux/fs.h> does not compile for the BPF target on 7.2; i_ino went
 * from unsigned long to u64 in v7.1 (0b2600f81cef "treewide: change
 * inode->i_ino from unsigned long to u64"): 8 bytes on x86-64 either way.
 */
#ifdef ZT_PAGE_FOLIO_INDEX
#define ZT_PAGE_INDEX __folio_index
#else
#define ZT_PAGE_INDEX index
#endif

/*
 * page->flags: an unsigned long until v6.17; since v6.18 (53fbef56e07d "mm:
 * introduce memdesc_flags_t") a memdesc_flags_t
 * (struct { unsigned long f; }) of the same size and place.  Only its address
 * is taken and one unsigned long is read, so both shapes work unchanged.
 */

/*
 * Compound head (folio) of a page.  Tail pages held "head | 1" in
 * page->compound_head; since v7.1 (d50569612c29 "mm: rename the compound_head field
 * in the struct page to compound_info", 8c846c879e22 for the mask) it is page->compound_info and, with
 * HugeTLB vmemmap optimisation (CONFIG_HUGETLB_PAGE_OPTIMIZE_VMEMMAP) and a
 * power-of-two struct page, a tail's value is a mask: head = page & info
 * (include/linux/page-flags.h, _compound_head()).  ZT_PAGE_COMPOUND_INFO is
 * set by zaptrace/catalog.py FIELD_FIXES when BTF shows the new member.
 */
static __always_inline __u64 head_of(__u64 page)
{
	unsigned long info = 0;

#ifdef ZT_PAGE_COMPOUND_INFO
	bpf_probe_read_kernel(&info, sizeof(info), &((struct page *)page)->compound_info);
	if (!(info & 1))
		return page;
#if defined(CONFIG_HUGETLB_PAGE_OPTIMIZE_VMEMMAP)
	if (!(sizeof(struct page) & (sizeof(struct page) - 1)))
		return page & info;
#endif
	return info - 1;
#else
	bpf_probe_read_kernel(&info, sizeof(info), &((struct page *)page)->compound_head);
	return (info & 1) ? info - 1 : page;
#endif
}

/*
 * Pages in a PMD / PUD mapping of a folio.  x86-64: 2 MiB / 1 GiB of 4 KiB
 * pages (HPAGE_PMD_ORDER / HPAGE_PUD_ORDER); flush_tlb_mm_range(), which
 * closes every window, is x86-only as well.
 */
#define ZT_PMD_PAGES 512
#define ZT_PUD_PAGES 262144

#endif /* ZAPTRACE_CORE_FIXES_H */
