// SPDX-License-Identifier: GPL-2.0
/*
 * zaptrace: per-page mapcount decrements, TLB flushes and mkclean calls.
 *
 * Compiled by BCC against the running kernel's headers.  Which handlers
 * exist and which argument register holds which value is decided in user
 * space from the probe catalog (zaptrace/catalog.py) and arrives here as
 * compile-time constants:
 *
 *   ZT_HAVE_<EVENT>       the logical event is attached on this kernel
 *   ZT_<EVENT>_<ROLE>     1-based argument position of ROLE, 0 = absent
 *   ZT_<EVENT>_TRAMP      1: attached with BPF trampolines (fentry/fexit), 0: kprobes
 *   ZT_<EVENT>_NARGS      number of arguments (where fexit finds the return value)
 *
 * Each handler h_<name>(ctx) is named by its logical event in the catalog
 * (zaptrace/catalog.py, "handlers"); zaptrace/plan.py appends its entry
 * points for this kernel: zt_<name>(struct pt_regs *) for a kprobe, or
 * kfunc__<symbol>/kretfunc__<symbol> for a BPF trampoline.
 *   ZT_RINGBUF_PAGES      ring buffer size in pages (power of two)
 *   ZT_PERFBUF            use a perf buffer (kernels without BPF ring buffer)
 *   ZT_RB_FLAGS           ring buffer output flags (BPF_RB_NO_WAKEUP: user space polls)
 *   ZT_SUMMARY            pair and histogram in the kernel (summary.bpf.h)
 *   ZT_KEEP_EVENTS        with ZT_SUMMARY: send the events as well (to check one against the other)
 *
 * Nothing from the command line is pasted into this text: filters are
 * values in the "config" and "tgids" maps.
 */
#include <uapi/linux/ptrace.h>
#include <linux/sched.h>
#include <linux/mm_types.h>
#include <linux/page-flags.h>

#include "zaptrace_event.h"
#include "core_fixes.h"

struct zt_config {
	__u32 follow_all;      /* 1: every process (-a); 0: only tgids in "tgids" */
	__u32 mkclean_all;     /* 1: mkclean by any task (writeback runs in kworkers) */
	__u64 vmemmap_addr;    /* address of the vmemmap_base variable, 0 = unknown */
	__u64 vmemmap_val;     /* its value, read once by the BPF side ("vmemmap" is a macro in 6.12+ headers) */
	__u64 page_size;       /* sizeof(struct page), filled in by the BPF side */
	__u32 stopped;         /* 1: recording ended, emit nothing more (exact final counts) */
	__u32 pad;
};

/* Per-task state while a zap or a tlb_flush_rmaps() runs. */
struct zt_task {
	__u64 zap_mm;
	__u64 rmaps_mm;
	__u32 zap_depth;
	__u32 rmaps_depth;
	__u32 zap_sent;              /* the outermost zap's ZAP_ENTER has been written */
	__u32 pad;
	struct zt_event zap_ev;      /* that ZAP_ENTER, held until an event of the task needs it */
	__u64 zap_slot;              /* ZT_ZAP_INFER: where the zap's return address is on the task's stack */
	__u64 zap_ret;               /* and that return address (zap_running()) */
	__u32 zap_k;                 /* its position in the trampoline's frame, in words from ctx */
	__u32 zap_lazy;              /* zap_ev is filled by the first event inside (zap_enter_fast()) */
	__u64 zap_vma;               /* then: the zap's vma (or tlb) argument; zap_mm is found from it */
	__u64 zap_addr;              /* --zap-entry inferred: the address of the open bracket's last opener */
	__u64 lz_slot;               /* --zap-entry inferred with --zap-return checked: the inferred bracket's slot, */
	__u64 lz_addr;               /* its last opener's address, */
	__u32 lz_new;                /* and 1 when a probed zap entered since the last opener */
	__u32 pad2;
};

BPF_ARRAY(config, struct zt_config, 1);
BPF_HASH(tgids, __u32, __u8, 65536);
BPF_HASH(tasks, __u32, struct zt_task, 16384);
BPF_HASH(mkclean_arg, __u32, __u64, 16384);
/* mm of an open flush, keyed by tid | kind << 32: return probes lose the arguments. */
BPF_HASH(flush_mm, __u64, __u64, 16384);
BPF_PERCPU_ARRAY(counts, __u64, ZT_COUNT_SLOTS);
/*
 * Programs inside emit(), per CPU. The recorder sets config.stopped, then waits
 * until the sum over CPUs is 0 before it drains and reads the counters: a
 * program that read stopped == 0 had already raised this (a locked add, a full
 * barrier on x86), so none can still count or commit a record after the final
 * read. Without it, one event in ~50,000 was counted as generated after the
 * counters were read (a vCPU descheduled between the stop check and count()).
 */
BPF_PERCPU_ARRAY(busy, __s64, 1);

#ifndef ZT_RB_FLAGS
#define ZT_RB_FLAGS 0
#endif

#ifdef ZT_PERFBUF
BPF_PERF_OUTPUT(events);
#else
BPF_RINGBUF_OUTPUT(events, ZT_RINGBUF_PAGES);
#endif

#define ZT_ARG(ctx, n)                                              \
	((n) == 1 ? PT_REGS_PARM1(ctx) : (n) == 2 ? PT_REGS_PARM2(ctx) : \
	 (n) == 3 ? PT_REGS_PARM3(ctx) : (n) == 4 ? PT_REGS_PARM4(ctx) : \
	 (n) == 5 ? PT_REGS_PARM5(ctx) : (n) == 6 ? PT_REGS_PARM6(ctx) : 0)

/*
 * Arguments of a logical event EV: from pt_regs (kprobe) or from the u64 array
 * a BPF trampoline (fentry/fexit) passes, as ZT_<EV>_TRAMP says; at return,
 * fexit puts the return value after the ZT_<EV>_NARGS arguments.
 */
#define ZT_REGARG(ctx, n) ZT_ARG((struct pt_regs *)(ctx), n)
#define ZT_TRAMPARG(ctx, n) ((n) ? zt_slot(ctx, (n) - 1) : 0)
#define ZT_GET(EV, ctx, n) (ZT_##EV##_TRAMP ? ZT_TRAMPARG(ctx, n) : ZT_REGARG(ctx, n))
#define ZT_RET(EV, ctx) \
	(ZT_##EV##_TRAMP ? zt_slot(ctx, ZT_##EV##_NARGS) : PT_REGS_RC((struct pt_regs *)(ctx)))

/*
 * A trampoline argument as a plain number.  Loaded directly, a pointer
 * argument is a typed BTF pointer to the verifier, and the arithmetic we do
 * on page addresses (PFNs, compound heads) would be refused.
 */
static __always_inline __u64 zt_slot(void *ctx, int i)
{
	__u64 v = 0;

	bpf_probe_read_kernel(&v, sizeof(v), (__u64 *)ctx + i);
	return v;
}

static __always_inline struct zt_config *cfg(void)
{
	__u32 zero = 0;
	return config.lookup(&zero);
}

static __always_inline int followed(struct zt_config *c, __u32 tgid)
{
	if (!c)
		return 0;
	if (c->follow_all)
		return 1;
	return tgids.lookup(&tgid) != NULL;
}

static __always_inline void count(__u32 slot)
{
	__u64 *v = counts.lookup(&slot);
	if (v)
		__sync_fetch_and_add(v, 1);   /* atomic even against a program nested on this CPU */
}

/* Count one event and send it (called inside emit()'s busy section). */
static __always_inline void send(void *ctx, struct zt_event *e)
{
	int err = 0;

	count(ZT_COUNT_GENERATED + e->kind);
#if defined(ZT_SUMMARY) && !defined(ZT_KEEP_EVENTS)
	return;                 /* --summary: events are aggregated in the kernel, never sent */
#endif
#ifdef ZT_PERFBUF
	err = events.perf_submit(ctx, e, sizeof(*e));
#else
	err = events.ringbuf_output(e, sizeof(*e), ZT_RB_FLAGS);
#endif
	if (err)
		count(ZT_COUNT_LOST + e->kind);
}

/*
 * The stop protocol of what counts or sends (emit(), and outside it): busy_enter() raises
 * this CPU's "busy" and sets *live while the recording runs; busy_leave() lowers it.
 */
static __always_inline __s64 *busy_enter(int *live)
{
	struct zt_config *c = cfg();
	__u32 zero = 0;
	__s64 *b = busy.lookup(&zero);

	*live = 0;
	if (!b)
		return NULL;
	__sync_fetch_and_add(b, 1);
	*live = c && !c->stopped;
	return b;
}

static __always_inline void busy_leave(__s64 *b)
{
	__sync_fetch_and_add(b, -1);
}

#ifdef ZT_ZAP_INFER
/*
 * record --zap-return inferred (ZT_ZAP_INFER 1) attaches the zap bracket at its entry only:
 * a zap of an empty range, nearly all of a lostwrite zapper's, then costs one probe hit
 * instead of two.  h_zap_enter keeps where the zap's return address lies on the task's
 * kernel stack (x86-64: pushed by the call, zap_return_slot()) and its value.  While the
 * zap runs, every probe of the task inside it runs deeper on the same stack, and the slot
 * still holds that address.  Once the zap has returned, a probe of the task runs either
 * above the slot, or in a call chain that crossed it again and wrote another return
 * address, a saved register or a local there.  What this cannot see: a frame that leaves
 * its slot unwritten (a local not yet stored): the zap then reads as running until the
 * task's next event above it.  --zap-return checked (ZT_ZAP_INFER 2) keeps the return
 * probe, makes the same inference at every event of a task that has zapped and counts
 * where the two disagree (ZT_COUNT_ZAP_WRONG of ZT_COUNT_ZAP_CHECKS).
 * A probe on another stack (an interrupt's) decides nothing: the zap reads as running.
 */
#ifndef THREAD_SIZE
#define THREAD_SIZE 16384
#endif
#define ZT_KERNEL_TEXT 0xffffffff80000000ULL   /* x86-64: __START_KERNEL_map */
#ifndef ZT_KRET_TRAMP
#define ZT_KRET_TRAMP 1ULL          /* no kretprobe trampoline known: matches no return address */
#endif
/*
 * Where the probe runs on the task's stack, as a number: its ctx (a trampoline's saved
 * arguments, a kprobe's pt_regs) lies on that stack, below the probed function's frame.
 * (Not a BPF local: since v6.13 a tracing program may run on a private per-CPU stack.)
 */
static __always_inline __u64 stack_here(void *ctx)
{
	__u64 here = 0;

	bpf_probe_read_kernel(&here, sizeof(here), &ctx);
	return here;
}

/*
 * Whether the call that pushed ret at slot still runs, as seen from this probe.  With
 * --zap-entry inferred (ZT_ZAP_LAZY) the slot is where the zap bracket's function pushes
 * the return addresses of its calls (the opener's, zap_open_lazy()): while the function
 * runs, every probe of the task inside the zap is deeper and that slot holds an address
 * inside the function, [ZT_ZAP_LO, ZT_ZAP_HI).
 */
#define ZT_LAZY_PUSHED 15       /* words a call of the bracket's function may push below the slot */
static __always_inline int slot_running(void *ctx, __u64 slot, __u64 ret)
{
	__u64 here = stack_here(ctx);

	if (!slot)
		return 0;
	if ((here & ~((__u64)THREAD_SIZE - 1)) != (slot & ~((__u64)THREAD_SIZE - 1)))
		return 1;
	if (here >= slot)
		return 0;
#ifdef ZT_ZAP_LAZY
	{
		/*
		 * A call with more than six arguments pushes the rest first: its return address
		 * then lies below the slot, under them (measured on Debian's 7.2: 2 of 100 zaps
		 * of a race read a pushed argument at the slot).  The first kernel text address
		 * at or below the slot decides; a kretprobe on the callee has put its trampoline
		 * there (plan.KRETPROBE_TRAMPOLINES).
		 */
		__u64 w[ZT_LAZY_PUSHED + 1] = {};
		int k;

		if (bpf_probe_read_kernel(w, sizeof(w), (void *)(slot - 8 * ZT_LAZY_PUSHED)))
			return 0;
#pragma unroll
		for (k = ZT_LAZY_PUSHED; k >= 0; k--) {
			if (w[k] < ZT_KERNEL_TEXT)
				continue;       /* the slot itself holds text unless arguments were pushed */
			if (here >= slot - 8 * (ZT_LAZY_PUSHED - k))
				return 0;
			return (w[k] >= ZT_ZAP_LO && w[k] < ZT_ZAP_HI) || w[k] == ZT_KRET_TRAMP;
		}
		return 0;
	}
#else
	{
		__u64 v = 0;

		if (bpf_probe_read_kernel(&v, sizeof(v), (void *)slot))
			return 0;
		return v == ret;
	}
#endif
}

static __always_inline int zap_running(void *ctx, struct zt_task *t)
{
	return slot_running(ctx, t->zap_slot, t->zap_ret);
}

/*
 * Before an event of task t at time ts: with --zap-return inferred, a zap bracket whose zap
 * has returned (known to have: returned = 1, at the task's next zap or its exit) closes,
 * its return written (ZT_F_INFERRED, 1 ns before the event: no event of the task lies
 * between the true return and this one) if its entry was, else counted as empty.  With --zap-return checked, the inference is only compared.
 */
static __always_inline void zap_infer(void *ctx, struct zt_task *t, __u64 ts, int returned)
{
	int running;

#if ZT_ZAP_INFER == 2 && defined(ZT_ZAP_LAZY)
	/* the inferred bracket (lz_slot, opened by zap_open_lazy()) against both probes */
	if (returned || (!t->lz_slot && !t->zap_depth))
		return;
	count(ZT_COUNT_ZAP_CHECKS);
	running = t->lz_slot && slot_running(ctx, t->lz_slot, 0);
	if (running != (t->zap_depth != 0))
		count(ZT_COUNT_ZAP_WRONG);
	if (!running)
		t->lz_slot = 0;
	return;
#endif
	if (!t->zap_slot)
		return;
#if ZT_ZAP_INFER == 2
	if (returned)
		return;
	count(ZT_COUNT_ZAP_CHECKS);
	running = zap_running(ctx, t);
	if (running != (t->zap_depth != 0))
		count(ZT_COUNT_ZAP_WRONG);
#else
	running = !returned && zap_running(ctx, t);
	if (!returned)
		count(ZT_COUNT_ZAP_CHECKS);
	if (!t->zap_depth || running)
		return;
	if (t->zap_sent) {
		struct zt_event x = {};

		x.ts = ts - 1;
		x.tid = t->zap_ev.tid;
		x.tgid = t->zap_ev.tgid;
		x.cpu = bpf_get_smp_processor_id();
		x.kind = ZT_ZAP_EXIT;
		x.flags = ZT_F_INFERRED;
		x.mm = t->zap_mm;
		send(ctx, &x);
	} else {
		count(ZT_COUNT_EMPTY_ZAPS);
	}
	t->zap_depth = 0;
	t->zap_slot = 0;
#endif
}

/* zap_infer() outside emit(): under the stop protocol. */
static __always_inline void zap_infer_now(void *ctx, struct zt_task *t, __u64 ts, int returned)
{
	int live;
	__s64 *b = busy_enter(&live);

	if (!b)
		return;
	if (live)
		zap_infer(ctx, t, ts, returned);
	busy_leave(b);
}

/*
 * At the zap's entry: where its return address is.  A trampoline's ctx holds the
 * arguments; above them lie the return value's slot (when a fexit is attached), the saved
 * RBP, and, when the trampoline was called from the function's patched first instruction,
 * its return into the function (ip + 9 after an ENDBR), then the function's return address.
 * Measured in the guests (2026-12-07): [rbp][ip+9][return] for an fentry-only trampoline on
 * 7.2 and 7.2-src, [return value][rbp][return] for one with a fexit on 7.2.  The saved RBP,
 * a general register without frame pointers, may hold any address, a kernel one too (taking
 * the first kernel address above the arguments picked it in 22 of 13,566 zaps on 7.2-src),
 * so a word counts only as a return address: outside the function's first 32 bytes, and
 * the five bytes before it a call (0xe8, rel32).  Not necessarily a call of this function:
 * requiring the call's target to be the function found no slot for unmap_page_range() on
 * 6.1 and 6.12 (0 of 0 inferences in CI: most likely unmap_single_vma() tail-calls it, so
 * the slot is its caller's return, which serves the inference as well; not verified).
 * A kprobe at a function's first instruction: at regs->sp.
 */
static __always_inline int returns_from_call_of(__u64 w, __u64 ip)
{
	unsigned char op = 0;

	if (w < ZT_KERNEL_TEXT || w - ip < 32)
		return 0;
	return !bpf_probe_read_kernel(&op, sizeof(op), (void *)(w - 5)) && op == 0xe8;
}

/* The same for any probed function: tramp and nargs are its ZT_<EV>_TRAMP and _NARGS. */
static __always_inline void ret_slot(void *ctx, int tramp, int nargs, __u64 *slot, __u64 *ret)
{
	__u64 w = 0, base = 0;

	*slot = 0;
	if (tramp) {
		__u64 ip = bpf_get_func_ip(ctx);
		void *c = ctx;
		int k, found = 0;

		bpf_probe_read_kernel(&base, sizeof(base), &c);
#pragma unroll
		for (k = 0; k < 5; k++) {
			if (bpf_probe_read_kernel(&w, sizeof(w), (void *)(base + 8 * (nargs + k))))
				return;
			if (returns_from_call_of(w, ip)) {
				base += 8 * (nargs + k);
				found = 1;
				break;
			}
		}
		if (!found)
			return;
	} else {
		base = PT_REGS_SP((struct pt_regs *)ctx);
		if (bpf_probe_read_kernel(&w, sizeof(w), (void *)base) || w < ZT_KERNEL_TEXT)
			return;
	}
	*slot = base;
	*ret = w;
}

static __always_inline void zap_return_slot(void *ctx, __u64 *slot, __u64 *ret)
{
	ret_slot(ctx, ZT_ZAP_TRAMP, ZT_ZAP_NARGS, slot, ret);
}
#endif

#if defined(ZT_ZAP_INFER) && ZT_ZAP_INFER == 1
#define ZAP_OPEN(ctx, t) ((t)->zap_depth && zap_running(ctx, t))
#else
#define ZAP_OPEN(ctx, t) ((t)->zap_depth)
#endif

static __always_inline __u64 zap_mm_of(struct zt_task *t);

/*
 * Count and send one event.  Any event of a task inside its zap (except the
 * zap's own return) first sends the zap's held ZAP_ENTER, with its own
 * earlier timestamp: a zap bracket is written only when something happened
 * inside it (h_zap_enter).
 */
static __always_inline void emit(void *ctx, struct zt_event *e)
{
	__u32 tid = e->tid;
	int live;
	__s64 *b = busy_enter(&live);
	struct zt_task *t;

	if (!b)
		return;
	if (!live)
		goto out;
	if (e->kind != ZT_ZAP_EXIT) {
		t = tasks.lookup(&tid);
#ifdef ZT_ZAP_INFER
		if (t)
			zap_infer(ctx, t, e->ts, 0);
#endif
		if (t && t->zap_depth && !t->zap_sent) {
			t->zap_sent = 1;
			if (t->zap_lazy) {
				/* no event of the task lies between the zap's entry and this one */
				t->zap_ev.ts = e->ts - 1;
				t->zap_ev.tid = e->tid;
				t->zap_ev.tgid = e->tgid;
				t->zap_ev.cpu = e->cpu;
				t->zap_ev.kind = ZT_ZAP_ENTER;
				t->zap_ev.flags = ZT_F_INFERRED;
				t->zap_ev.mm = zap_mm_of(t);
				t->zap_lazy = 0;
			}
			send(ctx, &t->zap_ev);
		}
	}
	send(ctx, e);
out:
	busy_leave(b);
}

/* Count a zap bracket that is not written (emit()'s stop protocol, no event). */
static __always_inline void count_empty_zap(void)
{
	int live;
	__s64 *b = busy_enter(&live);

	if (!b)
		return;
	if (live)
		count(ZT_COUNT_EMPTY_ZAPS);
	busy_leave(b);
}

static __always_inline void fill(struct zt_event *e, __u8 kind, __u64 pid_tgid)
{
	e->ts = bpf_ktime_get_ns();
	e->tid = (__u32)pid_tgid;
	e->tgid = pid_tgid >> 32;
	e->cpu = bpf_get_smp_processor_id();
	e->kind = kind;
}

/*
 * An event of the current task if it is followed: e gets the kind, the time,
 * the CPU and the task's ids.  0 for a task that is not followed.
 */
static __always_inline int task_event(struct zt_config *c, struct zt_event *e, __u8 kind)
{
	__u64 id = bpf_get_current_pid_tgid();

	if (!followed(c, id >> 32))
		return 0;
	fill(e, kind, id);
	return 1;
}

/* current->mm, or current->active_mm while exit_mmap() runs with mm == NULL. */
static __always_inline __u64 current_mm(void)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	__u64 mm = 0;

	bpf_probe_read_kernel(&mm, sizeof(mm), &t->mm);
	if (!mm)
		bpf_probe_read_kernel(&mm, sizeof(mm), &t->active_mm);
	return mm;
}

/* No mm from the call's arguments: the current task's, flagged as a guess. */
static __always_inline void guess_mm(struct zt_event *e)
{
	e->mm = current_mm();
	e->flags |= ZT_F_MM_GUESS;
}

/* struct mmu_gather's first member has been "struct mm_struct *mm" since 2.6. */
static __always_inline __u64 tlb_mm(__u64 tlb)
{
	__u64 mm = 0;

	bpf_probe_read_kernel(&mm, sizeof(mm), (void *)tlb);
	return mm;
}

static __always_inline __u64 vma_mm(__u64 vma)
{
	__u64 mm = 0;

	bpf_probe_read_kernel(&mm, sizeof(mm), &((struct vm_area_struct *)vma)->vm_mm);
	return mm;
}

/* The mm of the task's open zap (found from its argument when zap_enter_fast() left it). */
static __always_inline __u64 zap_mm_of(struct zt_task *t)
{
	if (!t->zap_mm && t->zap_vma) {
		t->zap_mm = ZT_ZAP_VMA ? vma_mm(t->zap_vma) : tlb_mm(t->zap_vma);
		if (!t->zap_mm)
			t->zap_mm = current_mm();
		t->zap_vma = 0;
	}
	return t->zap_mm;
}

static __always_inline __u64 pfn_of(struct zt_config *c, __u64 page)
{
	if (!c || !page)
		return 0;
	if (!c->vmemmap_val) {
		__u64 v = 0;

		if (c->vmemmap_addr)
			bpf_probe_read_kernel(&v, sizeof(v), (void *)c->vmemmap_addr);
		else
			v = 0xffffea0000000000ULL;      /* x86-64 VMEMMAP_START without KASLR */
		c->vmemmap_val = v;
		c->page_size = sizeof(struct page);
	}
	if (page < c->vmemmap_val)
		return 0;
	return (page - c->vmemmap_val) / sizeof(struct page);
}

/*
 * ANON and PGDIRTY flags of a folio; for a file folio also the inode number
 * and the file offset of `page` (or of the folio when page is 0), so that a
 * lost write found by content can be joined with the trace by file position.
 */
static __always_inline void zt_folio_info(struct zt_event *e, __u64 folio, __u64 page)
{
	unsigned long flags = 0, mapping = 0, index = 0;
	__u64 host = 0, ino = 0;

	bpf_probe_read_kernel(&flags, sizeof(flags), &((struct page *)folio)->flags);
	bpf_probe_read_kernel(&mapping, sizeof(mapping), &((struct page *)folio)->mapping);
	if (flags & (1UL << PG_dirty))
		e->flags |= ZT_F_PGDIRTY;
	if (mapping & ZT_MAPPING_ANON) {
		e->flags |= ZT_F_ANON;
		return;
	}
	if (!mapping || (mapping & ZT_MAPPING_FLAGS))
		return;
#if defined(ZT_OFF_MAPPING_HOST) && defined(ZT_OFF_INODE_INO)
	/* offsets from BTF (FIELD_OFFSETS in zaptrace/catalog.py): <linux/fs.h> is not included */
	bpf_probe_read_kernel(&host, sizeof(host), (void *)(mapping + ZT_OFF_MAPPING_HOST));
	if (host)
		bpf_probe_read_kernel(&ino, sizeof(ino), (void *)(host + ZT_OFF_INODE_INO));
#endif
	bpf_probe_read_kernel(&index, sizeof(index), &((struct page *)folio)->ZT_PAGE_INDEX);
	e->ino = ino;
	e->index = index + (page > folio ? (page - folio) / sizeof(struct page) : 0);
}

/*
 * The page and folio of a page event from what the call gave (the folio of a
 * page is its compound head; a folio alone stands for its first page), the
 * PFN, and the folio's flags and file position: of the page, or of the folio
 * when at_folio.
 */
static __always_inline void page_fields(struct zt_config *c, struct zt_event *e, int at_folio)
{
	if (!e->folio && e->page)
		e->folio = head_of(e->page);
	if (!e->page)
		e->page = e->folio;
	e->pfn = pfn_of(c, e->page);
	zt_folio_info(e, e->folio, at_folio ? 0 : e->page);
}

#ifdef ZT_SUMMARY
/*
 * --summary: the state machine is summary.bpf.h (plain C, also compiled on the
 * host by tests/probes); here are only its maps and the accessors it calls.
 * BCC rewrites map methods in this file only, so they cannot move there.
 */
#include "summary.bpf.h"

BPF_PERCPU_ARRAY(hist, __u64, ZT_HIST_SLOTS);
BPF_PERCPU_ARRAY(sums, __u64, ZT_S_SLOTS);
BPF_ARRAY(sumzero, struct zt_sumtask, 1);   /* a zeroed zt_sumtask: too large for the BPF stack */
BPF_F_TABLE("hash", __u32, struct zt_sumtask, sumtask, 4096, BPF_F_NO_PREALLOC);
BPF_TABLE("lru_hash", struct zt_dkey, __u64, dirty_folios, 65536);
BPF_TABLE("lru_hash", __u64, struct zt_open, open_folios, 65536);
BPF_TABLE("lru_hash", __u64, __u64, mk_running, 16384);

static __always_inline __u64 *zs_hist(__u32 slot) { return hist.lookup(&slot); }
static __always_inline __u64 *zs_sums(__u32 slot) { return sums.lookup(&slot); }
static __always_inline struct zt_sumtask *zs_task(__u32 tid) { return sumtask.lookup(&tid); }
static __always_inline void zs_task_drop(__u32 tid) { sumtask.delete(&tid); }
static __always_inline __u64 *zs_dirty(struct zt_dkey *k) { return dirty_folios.lookup(k); }
static __always_inline void zs_dirty_set(struct zt_dkey *k, __u64 *seq) { dirty_folios.update(k, seq); }
static __always_inline struct zt_open *zs_open(__u64 folio) { return open_folios.lookup(&folio); }
static __always_inline void zs_open_set(__u64 folio, struct zt_open *o) { open_folios.update(&folio, o); }
static __always_inline __u64 *zs_mk(__u64 folio) { return mk_running.lookup(&folio); }
static __always_inline void zs_mk_set(__u64 folio, __u64 *since) { mk_running.update(&folio, since); }
static __always_inline void zs_mk_drop(__u64 folio) { mk_running.delete(&folio); }

static __always_inline struct zt_sumtask *zs_task_init(__u32 tid)
{
	__u32 zero = 0;
	struct zt_sumtask *z = sumzero.lookup(&zero);

	return z ? sumtask.lookup_or_try_init(&tid, z) : NULL;
}

#endif /* ZT_SUMMARY */

/*
 * A task's state goes with the task: it stays in "tasks" between its zaps, so that a zap
 * of an empty range (nearly all of a lostwrite zapper's) costs no map insert and delete.
 */
TRACEPOINT_PROBE(sched, sched_process_exit)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
#if defined(ZT_ZAP_INFER) && ZT_ZAP_INFER == 1
	struct zt_task *t = tasks.lookup(&tid);

	if (t && t->zap_depth)
		zap_infer_now(args, t, bpf_ktime_get_ns(), 1);   /* the task's last zap returned */
#endif

	tasks.delete(&tid);
#ifdef ZT_SUMMARY
	sum_task_exit(tid);
#endif
	return 0;
}

/* Follow the process tree: children of followed processes are followed. */
TRACEPOINT_PROBE(sched, sched_process_fork)
{
	__u32 parent = bpf_get_current_pid_tgid() >> 32;
	__u32 child = args->child_pid;
	__u8 one = 1;

	if (tgids.lookup(&parent))
		tgids.update(&child, &one);
	return 0;
}

/*
 * The brackets a task can be inside: its zap (zap = 1) and tlb_flush_rmaps()
 * (zap = 0), nested or not.  The task map holds only followed tasks.  zap is
 * a constant at every call: each helper compiles to one bracket's fields.
 */

/* The task's state, created zeroed when absent (NULL when the map is full). */
static __always_inline struct zt_task *task_state(__u32 tid)
{
	struct zt_task zero = {};

	return tasks.lookup_or_try_init(&tid, &zero);
}

/* A bracket of the task opens (again, when nested) on mm. */
static __always_inline void bracket_open(struct zt_task *t, __u64 mm, int zap)
{
	if (!t)
		return;
	if (zap) {
		t->zap_mm = mm;
		t->zap_depth++;
	} else {
		t->rmaps_mm = mm;
		t->rmaps_depth++;
	}
}

/*
 * The state of the current task if it is inside the bracket, with e filled
 * for an event of kind there and the bracket's mm; NULL outside it.
 */
static __always_inline struct zt_task *in_bracket(void *ctx, struct zt_event *e, __u8 kind, int zap)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = id;
	struct zt_task *t = tasks.lookup(&tid);

	if (!t || !(zap ? ZAP_OPEN(ctx, t) : t->rmaps_depth))
		return NULL;
	fill(e, kind, id);
	e->mm = zap ? zap_mm_of(t) : t->rmaps_mm;
	return t;
}

/* The innermost bracket closes (the task's state stays until the task exits). */
static __always_inline void bracket_close(struct zt_task *t, int zap)
{
	if (zap)
		t->zap_depth--;
	else
		t->rmaps_depth--;
}

/*
 * An event of a followed task inside its zap: e gets the kind, the zap's mm
 * and ZT_F_IN_ZAP.  0 outside a zap: nothing to record.
 */
static __always_inline int zap_event(void *ctx, struct zt_event *e, __u8 kind)
{
	if (!in_bracket(ctx, e, kind, 1))
		return 0;
	e->flags = ZT_F_IN_ZAP;
	return 1;
}

/* A mark of a zapping task inside its zap: one argument of its function, as e.page. */
static __always_inline int zap_mark(void *ctx, __u8 kind, __u64 arg)
{
	struct zt_event e = {};

	if (zap_event(ctx, &e, kind)) {
		e.page = arg;
		emit(ctx, &e);
	}
	return 0;
}

#ifdef ZT_ZAP_LAZY
/*
 * --zap-entry inferred: the zap bracket is not probed at all.  It opens at the first call
 * the zap makes to an opener (zap_table: flush_tlb_batched_pending(), once per PTE table
 * the zap walks; zap_pmd: zap_huge_pmd()) whose return address lies inside the zap
 * bracket's function, [ZT_ZAP_LO, ZT_ZAP_HI) (the zap_p*_range loops are inlined there;
 * mprotect, mremap and MADV_FREE walks call the same functions from elsewhere).  The slot
 * of that return address is where the function pushes every call's: the zap runs while it
 * holds an address inside the function and the task's probe runs deeper (slot_running()).
 * A zap of an empty range (its tables freed by PT_RECLAIM) calls no opener: no probe hit.
 * An opener at the open bracket's slot continues it: the next table of the same zap, or
 * the next zap from the same caller when no event of the task between them saw the first
 * one return (exit's zaps of consecutive VMAs, mostly): both then read as one bracket.
 * Two huge PMDs' addresses tell that apart (a zap walks upwards: an address at or below
 * the last one starts another zap); a PTE table's opener has none.  The bracket's
 * ZAP_ENTER is written by its first event, as with zap_enter_fast(); its mm is the
 * opener's (or its vma's).  With --zap-return checked the same inference runs beside both
 * probes (lz_*): zap_infer() counts the events it places wrongly, this function the
 * openers where it would join two zaps or split one.
 */
static __always_inline int lazy_continues(void *ctx, __u64 open_slot, __u64 last, __u64 slot, __u64 addr)
{
	if (!open_slot)
		return 0;
	if (slot == open_slot)
		return !addr || !last || addr > last;
	return slot < open_slot && slot_running(ctx, open_slot, 0);   /* a zap inside the open one */
}

static __always_inline void zap_open_lazy(void *ctx, int tramp, int nargs, __u64 mm, __u64 vma, __u64 addr)
{
	__u64 slot = 0, ret = 0;
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = id;
	struct zt_task *t;

	ret_slot(ctx, tramp, nargs, &slot, &ret);
	if (!slot || ret < ZT_ZAP_LO || ret >= ZT_ZAP_HI)
		return;                 /* not called by the zap (a fault, mprotect, mremap...) */
	t = tasks.lookup(&tid);
	if (!t) {
		if (!followed(cfg(), id >> 32))
			return;
		t = task_state(tid);
		if (!t)
			return;
	}
#if ZT_ZAP_INFER == 2
	{
		int cont = lazy_continues(ctx, t->lz_slot, t->lz_addr, slot, addr);

		if (t->zap_depth) {
			count(ZT_COUNT_ZAP_OPENS);
			if (cont && t->lz_new)
				count(ZT_COUNT_ZAP_JOINED);   /* a probed zap began since: joined to it */
			else if (!cont && !t->lz_new)
				count(ZT_COUNT_ZAP_SPLIT);    /* the same probed zap: its bracket split */
		}
		t->lz_new = 0;
		if (!cont)
			t->lz_slot = slot;
		if (slot == t->lz_slot)
			t->lz_addr = addr;
	}
#else
	if (t->zap_depth) {
		if (lazy_continues(ctx, t->zap_slot, t->zap_addr, slot, addr)) {
			if (slot == t->zap_slot)
				t->zap_addr = addr;
			return;
		}
		zap_infer_now(ctx, t, bpf_ktime_get_ns(), 1);
	}
	t->zap_depth = 1;
	t->zap_sent = 0;
	t->zap_lazy = 1;
	t->zap_slot = slot;
	t->zap_ret = ret;
	t->zap_addr = addr;
	t->zap_mm = mm;
	t->zap_vma = mm ? 0 : vma;
	t->zap_ev.page = 0;         /* the zap's range is not known here */
	t->zap_ev.folio = 0;
#endif
}
#endif

#ifdef ZT_HAVE_ZAP
#if defined(ZT_ZAP_INFER) && ZT_ZAP_INFER == 1
/*
 * --zap-return inferred: the zap's entry is the one probe hit of an empty
 * zap, so it does the least it can: look up the task's state (it exists for every followed
 * task that zapped before: the first zap of a task takes the full path below), read the
 * zap's return address (a kprobe: at regs->sp; a trampoline: with the arguments, in one
 * read, at the position zap_return_slot() found), and keep it with the arguments.  Its
 * ZAP_ENTER is filled by the first event of the task inside the zap (emit()), with that event's time less 1 ns: no event of
 * the task lies between the zap's entry and that one, so every rule that compares a zap's
 * entry with the task's events decides as with the entry's own time.  A zap in which
 * nothing fires is neither written nor counted.  1: fall back to the full path.
 */
#define ZT_ZAP_WORDS (ZT_ZAP_NARGS + 5)
static __always_inline int zap_enter_fast(void *ctx, struct zt_task *t, __u64 id)
{
	__u64 slot = 0, ret = 0, arg = 0, start = 0, end = 0;
#if ZT_ZAP_TRAMP
	__u64 w[ZT_ZAP_NARGS] = {}, base = 0;
	void *c = ctx;
	__u32 k = t->zap_k;

	if (k < ZT_ZAP_NARGS || k >= ZT_ZAP_WORDS)
		return 1;
	if (bpf_probe_read_kernel(&base, sizeof(base), &c) ||
	    bpf_probe_read_kernel(w, sizeof(w), ctx))
		return 1;
	slot = base + 8 * k;
	if (bpf_probe_read_kernel(&ret, sizeof(ret), (void *)slot))
		return 1;
	arg = ZT_ZAP_VMA ? w[(ZT_ZAP_VMA - 1) % ZT_ZAP_NARGS] : w[(ZT_ZAP_TLB - 1) % ZT_ZAP_NARGS];
	start = ZT_ZAP_START ? w[(ZT_ZAP_START - 1) % ZT_ZAP_NARGS] : 0;
	end = ZT_ZAP_END ? w[(ZT_ZAP_END - 1) % ZT_ZAP_NARGS] : 0;
#else
	slot = PT_REGS_SP((struct pt_regs *)ctx);
	if (bpf_probe_read_kernel(&ret, sizeof(ret), (void *)slot))
		return 1;
	arg = ZT_ZAP_VMA ? ZT_REGARG(ctx, ZT_ZAP_VMA) : ZT_REGARG(ctx, ZT_ZAP_TLB);
	start = ZT_REGARG(ctx, ZT_ZAP_START);
	end = ZT_REGARG(ctx, ZT_ZAP_END);
#endif
	if (ret < ZT_KERNEL_TEXT)
		return 1;
	if (t->zap_depth && (t->zap_sent || slot < t->zap_slot)) {
		/* the open zap was written, or this one may be nested in it */
		if (slot < t->zap_slot && zap_running(ctx, t))
			return 0;
		zap_infer_now(ctx, t, bpf_ktime_get_ns(), 1);
	}
	/* else the task's previous zap, if any, returned with nothing inside: not counted */
	t->zap_depth = 1;
	t->zap_sent = 0;
	t->zap_lazy = 1;
	t->zap_slot = slot;
	t->zap_ret = ret;
	t->zap_mm = 0;
	t->zap_vma = arg;
	t->zap_ev.page = start;
	t->zap_ev.folio = end;
	return 0;
}
#endif

static __always_inline int h_zap_enter(void *ctx)
{
	struct zt_event e = {};
	struct zt_task *t;
#if defined(ZT_ZAP_INFER) && ZT_ZAP_INFER == 1
	{
		__u64 id = bpf_get_current_pid_tgid();
		__u32 tid = id;

		t = tasks.lookup(&tid);
		if (t && !zap_enter_fast(ctx, t, id))
			return 0;
	}
#endif

	if (!task_event(cfg(), &e, ZT_ZAP_ENTER))
		return 0;
	if (ZT_ZAP_VMA)
		e.mm = vma_mm(ZT_GET(ZAP, ctx, ZT_ZAP_VMA));
	else if (ZT_ZAP_TLB)
		e.mm = tlb_mm(ZT_GET(ZAP, ctx, ZT_ZAP_TLB));
	if (!e.mm)
		guess_mm(&e);
	e.page = ZT_GET(ZAP, ctx, ZT_ZAP_START);
	e.folio = ZT_GET(ZAP, ctx, ZT_ZAP_END);
	t = task_state(e.tid);
#if defined(ZT_ZAP_LAZY) && ZT_ZAP_INFER == 2
	if (t)
		t->lz_new = 1;          /* for zap_open_lazy()'s check: a zap began */
#endif
#ifdef ZT_ZAP_INFER
	__u64 slot = 0, ret = 0;

	zap_return_slot(ctx, &slot, &ret);
#if ZT_ZAP_INFER == 1
	if (t && t->zap_depth) {
		/*
		 * A zap called from inside the open one has its return address deeper; the
		 * next zap from the same caller has it at the same place, the open one's
		 * having returned (its slot then holds the same address again).
		 */
		if (slot && t->zap_slot && slot < t->zap_slot && zap_running(ctx, t))
			return 0;        /* nested: inside its outer zap's bracket, not written */
		zap_infer_now(ctx, t, e.ts, 1);
	}
#endif
#endif
#ifdef ZT_SUMMARY
	sum_zap_enter(e.tid, e.ts);
#endif
	/*
	 * The outermost zap's ZAP_ENTER is held in the task's state and written
	 * by emit() before the first event of the task inside the zap; a zap in
	 * which nothing fires (MADV_DONTNEED of an empty range: 97 % of the 7.4
	 * million zaps written in a 10-minute lostwrite run on 7.2) is only counted
	 * (h_zap_exit).  Such zaps hold no decrement, so no row of the gap table
	 * depends on them; writing them filled the ring buffer.  A nested zap, or
	 * no room in the task map, writes its ZAP_ENTER at once, as before.
	 */
	if (t && t->zap_depth == 0) {
		t->zap_mm = e.mm;
		t->zap_depth = 1;
		t->zap_sent = 0;
		t->zap_ev = e;
#ifdef ZT_ZAP_INFER
		t->zap_slot = slot;
		t->zap_ret = ret;
		t->zap_lazy = 0;
		t->zap_vma = 0;
		if (slot) {
			void *c = ctx;
			__u64 base = 0;

			bpf_probe_read_kernel(&base, sizeof(base), &c);
			t->zap_k = (slot - base) / 8;
		}
#endif
		return 0;
	}
	bracket_open(t, e.mm, 1);
	emit(ctx, &e);
	return 0;
}

static __always_inline int h_zap_exit(void *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = id;
	struct zt_task *t = tasks.lookup(&tid);

	if (!t || !t->zap_depth)
		return 0;
	if (!t->zap_sent && t->zap_depth == 1) {
		/* nothing fired inside: counted, nothing to fill or send (the common case) */
		t->zap_depth = 0;
		count_empty_zap();
		return 0;
	}
	{
		/* in_bracket()'s fill, with the state already looked up */
		struct zt_event e = {};

		fill(&e, ZT_ZAP_EXIT, id);
		e.mm = t->zap_mm;
		bracket_close(t, 1);
		emit(ctx, &e);
	}
	return 0;
}
#endif

#ifdef ZT_HAVE_RMAPS
static __always_inline int h_rmaps_enter(void *ctx)
{
	struct zt_event e = {};

	if (task_event(cfg(), &e, ZT_RMAPS_ENTER)) {
		e.mm = tlb_mm(ZT_GET(RMAPS, ctx, ZT_RMAPS_TLB));
		bracket_open(task_state(e.tid), e.mm, 0);
		emit(ctx, &e);
	}
	return 0;
}

static __always_inline int h_rmaps_exit(void *ctx)
{
	struct zt_event e = {};
	struct zt_task *t = in_bracket(ctx, &e, ZT_RMAPS_EXIT, 0);

	if (t) {
		bracket_close(t, 0);
		emit(ctx, &e);
	}
	return 0;
}
#endif

/*
 * What every mapcount decrement shares, whichever function made it: PFN,
 * folio flags, whether it runs inside a zap or tlb_flush_rmaps() of the same
 * task, and the mm.  e->page/folio/nr/flags are set by the caller.
 */
static __always_inline void rmap_common(void *ctx, struct zt_config *c, struct zt_event *e, __u64 vma)
{
	__u32 tid = e->tid;
	struct zt_task *t;

	page_fields(c, e, 0);
	t = tasks.lookup(&tid);
	if (t && t->rmaps_depth) {
		e->flags |= ZT_F_IN_RMAPS;
		e->mm = t->rmaps_mm;
	}
	if (t && ZAP_OPEN(ctx, t)) {
		e->flags |= ZT_F_IN_ZAP;
		if (!e->mm)
			e->mm = zap_mm_of(t);
	}
	if (vma && !e->mm)
		e->mm = vma_mm(vma);
	if (!e->mm)
		guess_mm(e);
#ifdef ZT_SUMMARY
	if (c && !c->stopped)
		sum_decrement(e);
#endif
	emit(ctx, e);
}

#ifdef ZT_HAVE_RMAP
static __always_inline int h_rmap(void *ctx)
{
	struct zt_config *c = cfg();
	struct zt_event e = {};

	if (!task_event(c, &e, ZT_RMAP))
		return 0;
	e.page = ZT_GET(RMAP, ctx, ZT_RMAP_PAGE);
	e.folio = ZT_GET(RMAP, ctx, ZT_RMAP_FOLIO);
	e.nr = ZT_RMAP_NR ? (int)ZT_GET(RMAP, ctx, ZT_RMAP_NR) : 1;
	/* Before v6.8 a PMD mapping went through page_remove_rmap(page, [vma,] compound=true). */
	if (ZT_RMAP_COMPOUND && (ZT_GET(RMAP, ctx, ZT_RMAP_COMPOUND) & 0xff)) {
		e.flags |= ZT_F_COMPOUND;
		e.nr = ZT_PMD_PAGES;
	}
	rmap_common(ctx, c, &e, ZT_GET(RMAP, ctx, ZT_RMAP_VMA));
	return 0;
}
#endif

/* A whole PMD or PUD mapping of a folio: nr pages, one event. */
static __always_inline int rmap_whole(void *ctx, __u64 folio, __u64 page, __u64 vma, int nr, __u8 flag)
{
	struct zt_config *c = cfg();
	struct zt_event e = {};

	if (task_event(c, &e, ZT_RMAP)) {
		e.folio = folio;
		e.page = page;
		e.nr = nr;
		e.flags = flag;
		rmap_common(ctx, c, &e, vma);
	}
	return 0;
}

#ifdef ZT_HAVE_RMAPPMD
/* folio_remove_rmap_pmd(): zap_huge_pmd() and THP splits (v6.8+). */
static __always_inline int h_rmap_pmd(void *ctx)
{
	return rmap_whole(ctx, ZT_GET(RMAPPMD, ctx, ZT_RMAPPMD_FOLIO), ZT_GET(RMAPPMD, ctx, ZT_RMAPPMD_PAGE),
			  ZT_GET(RMAPPMD, ctx, ZT_RMAPPMD_VMA), ZT_PMD_PAGES, ZT_F_COMPOUND);
}
#endif

#ifdef ZT_HAVE_RMAPPUD
/* folio_remove_rmap_pud(): zap_huge_pud(). */
static __always_inline int h_rmap_pud(void *ctx)
{
	return rmap_whole(ctx, ZT_GET(RMAPPUD, ctx, ZT_RMAPPUD_FOLIO), ZT_GET(RMAPPUD, ctx, ZT_RMAPPUD_PAGE),
			  ZT_GET(RMAPPUD, ctx, ZT_RMAPPUD_VMA), ZT_PUD_PAGES, ZT_F_PUD);
}
#endif

#ifdef ZT_HAVE_ZAPPMD
/*
 * zap_huge_pmd() entry inside a zap of a followed task: the PMD is cleared under
 * its lock after this, then its mapcount drops.  The pairing rule of the pmd path
 * takes the first flush after this event (analysis/gaps.py, PATH_RULES).
 */
static __always_inline int h_zap_pmd(void *ctx)
{
#ifdef ZT_ZAP_LAZY
	zap_open_lazy(ctx, ZT_ZAPPMD_TRAMP, ZT_ZAPPMD_NARGS, 0, ZT_GET(ZAPPMD, ctx, ZT_ZAPPMD_VMA),
		      ZT_GET(ZAPPMD, ctx, ZT_ZAPPMD_ADDR));
#endif
	return zap_mark(ctx, ZT_ZAP_PMD, ZT_GET(ZAPPMD, ctx, ZT_ZAPPMD_ADDR));
}
#endif

#ifdef ZT_HAVE_ZAPTABLE
/* flush_tlb_batched_pending(): with --zap-entry inferred, where a zap's bracket opens (zap_open_lazy()). */
static __always_inline int h_zap_table(void *ctx)
{
#ifdef ZT_ZAP_LAZY
	zap_open_lazy(ctx, ZT_ZAPTABLE_TRAMP, ZT_ZAPTABLE_NARGS, ZT_GET(ZAPTABLE, ctx, ZT_ZAPTABLE_MM), 0, 0);
#endif
	return 0;
}
#endif

#ifdef ZT_HAVE_PTFREE
/*
 * A PTE table freed through the mmu_gather inside a zap of a followed task: since
 * PT_RECLAIM (v6.14) MADV_DONTNEED frees the tables it empties; the direct path
 * detaches the table (clears its PMD) before the zap's flush and frees it here, after.
 */
static __always_inline int h_pt_free(void *ctx)
{
	return zap_mark(ctx, ZT_PT_FREE, ZT_GET(PTFREE, ctx, ZT_PTFREE_PTE));
}
#endif

#ifdef ZT_HAVE_DIRTY
/* Only the calls a zapping task makes inside its zap are markers. */
static __always_inline int h_dirty(void *ctx)
{
	struct zt_event e = {};

	if (!zap_event(ctx, &e, ZT_DIRTY))
		return 0;
	e.page = ZT_GET(DIRTY, ctx, ZT_DIRTY_PAGE);
	e.folio = ZT_GET(DIRTY, ctx, ZT_DIRTY_FOLIO);
	e.nr = 1;
	page_fields(cfg(), &e, 0);
#ifdef ZT_SUMMARY
	sum_dirty(e.tid, e.folio);
#endif
	emit(ctx, &e);
	return 0;
}
#endif

/*
 * A flush's entry (e, of a followed task, with the range where the call gives
 * one): e is written with the flushed mm, which is kept for the return, since
 * return probes lose the arguments.  Keyed by tid | kind << 32.
 */
static __always_inline void flush_open(void *ctx, struct zt_event *e, __u64 mm)
{
	__u64 key = e->tid | ((__u64)e->kind << 32);

	e->mm = mm;
	flush_mm.update(&key, &mm);
	emit(ctx, e);
}

/*
 * A flush's return (enter: the kind of its entry): the event of a followed
 * task carries the mm its entry saw.  With --summary, done says that this
 * return completes the covering flush of the task's pending decrements.
 */
static __always_inline int flush_close(void *ctx, __u8 kind, __u8 enter, int done)
{
	struct zt_event e = {};
	__u64 key, *mm;

	if (!task_event(cfg(), &e, kind))
		return 0;
	key = e.tid | ((__u64)enter << 32);
	mm = flush_mm.lookup(&key);
	if (mm) {
		e.mm = *mm;
		flush_mm.delete(&key);
	} else {
		guess_mm(&e);
	}
#ifdef ZT_SUMMARY
	if (done)
		sum_flush_done(e.tid, e.mm, e.ts);
#else
	(void)done;
#endif
	emit(ctx, &e);
	return 0;
}

#ifdef ZT_HAVE_TLBFLUSH
/* Its return completes the covering flush only where no arch flush is probed. */
#ifdef ZT_HAVE_FLUSHRANGE
#define ZT_TLBFLUSH_DONE 0
#else
#define ZT_TLBFLUSH_DONE 1
#endif

static __always_inline int h_tlb_flush_enter(void *ctx)
{
	struct zt_event e = {};

	if (task_event(cfg(), &e, ZT_TLB_FLUSH_ENTER))
		flush_open(ctx, &e, tlb_mm(ZT_GET(TLBFLUSH, ctx, ZT_TLBFLUSH_TLB)));
	return 0;
}

static __always_inline int h_tlb_flush_exit(void *ctx)
{
	return flush_close(ctx, ZT_TLB_FLUSH_EXIT, ZT_TLB_FLUSH_ENTER, ZT_TLBFLUSH_DONE);
}
#endif

#ifdef ZT_HAVE_FLUSHRANGE
static __always_inline int h_flush_range_enter(void *ctx)
{
	struct zt_event e = {};

	if (!task_event(cfg(), &e, ZT_FLUSH_RANGE_ENTER))
		return 0;
	e.page = ZT_GET(FLUSHRANGE, ctx, ZT_FLUSHRANGE_START);
	e.folio = ZT_GET(FLUSHRANGE, ctx, ZT_FLUSHRANGE_END);
	flush_open(ctx, &e, ZT_GET(FLUSHRANGE, ctx, ZT_FLUSHRANGE_MM));
	return 0;
}

static __always_inline int h_flush_range_exit(void *ctx)
{
	return flush_close(ctx, ZT_FLUSH_RANGE_EXIT, ZT_FLUSH_RANGE_ENTER, 1);
}
#endif

#ifdef ZT_HAVE_MKCLEAN
static __always_inline int h_mkclean_enter(void *ctx)
{
	struct zt_config *c = cfg();
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = id;
	struct zt_event e = {};

	if (!c || (!c->mkclean_all && !followed(c, id >> 32)))
		return 0;
	fill(&e, ZT_MKCLEAN_ENTER, id);
	e.folio = ZT_GET(MKCLEAN, ctx, ZT_MKCLEAN_FOLIO);
	e.page = ZT_GET(MKCLEAN, ctx, ZT_MKCLEAN_PAGE);
	page_fields(c, &e, 1);
	guess_mm(&e);
	mkclean_arg.update(&tid, &e.folio);
#ifdef ZT_SUMMARY
	sum_mkclean_enter(e.folio, e.ts);
#endif
	emit(ctx, &e);
	return 0;
}

static __always_inline int h_mkclean_exit(void *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = id;
	struct zt_event e = {};
	__u64 *folio = mkclean_arg.lookup(&tid);

	if (!folio)
		return 0;
	fill(&e, ZT_MKCLEAN_EXIT, id);
	e.folio = *folio;
	e.page = *folio;
	e.pfn = pfn_of(cfg(), e.page);
	e.nr = (int)ZT_RET(MKCLEAN, ctx);
	mkclean_arg.delete(&tid);
#ifdef ZT_SUMMARY
	sum_mkclean_exit(e.folio);
#endif
	emit(ctx, &e);
	return 0;
}
#endif
