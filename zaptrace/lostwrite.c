/* The lost-write detector's engine: `zaptrace workload run lostwrite` builds
 * and runs this program (zaptrace/lostwrite.py holds the design notes, the
 * options and the findings file; this file only does the racing).
 *
 * Written in C because the race needs stores at the rate of the hardware: the
 * first engine, in Python, made about 800 page visits per second in a TCG
 * guest and found no lost write where an independent C detector found some.
 *
 *   writer   the only writer of every page: each visit checks that the page's
 *            first word still holds the value it stored last, then stores the
 *            next value, --burst times in a row, and moves to the next page;
 *   zappers  threads of the same mm (the stale TLB entry must belong to the
 *            zapped mm) that MADV_DONTNEED the whole range in a loop, whether
 *            or not anything was written since;
 *   child    a process that writes the file back in a loop (writeback=fsync:
 *            fsync(2); fdatasync; msync: msync(MS_SYNC) of a second mapping of
 *            the file that it maps itself and never touches) and, unless
 *            --no-evict, then drops the clean pages (POSIX_FADV_DONTNEED).
 *
 * One visit of page p, burst B (fault_first and time_stores on, as
 * `zaptrace workload run lostwrite` runs it unless told otherwise):
 *   v = *head; *head = v;         the idempotent store: the visit's faults (read,
 *                                 then write-protect) happen here, not in a
 *                                 timed store (see fault_first in main)
 *   check v against last[p]       a lost write when they differ
 *   *head = ++last[p];            stores 1 .. B-1, each after its own check
 *   s0 = now; *head = ++last[p]; s1 = now;      the last store, timed alone
 * The last store's value is the one the next visit checks first, so a lost
 * write found there has the narrow span [s0, s1]; one found within a burst
 * (an untimed store: rare, the page must be evicted and read back between two
 * stores of one visit) has the visit's span so far.
 *
 * Usage: lostwrite FILE PAGES MAPPING ZAPPERS EVICT BURST SECONDS ITERATIONS
 *                  INJECT_PAGE INJECT_PASS [KEY=VALUE...]
 * with KEY one of (the defaults are the engine's behaviour before they existed):
 *   writeback=fsync|fdatasync|msync   the child's write-back call (fsync)
 *   fault_first=0|1     the idempotent store before the check (0)
 *   time_stores=0|1     time the last store of each visit on its own (0)
 *   control=N           keep a uniform sample of N visits that lost nothing (0)
 *   pin=0|1             pin the writer, each zapper and the child to CPUs of their
 *                       own, round robin over the allowed ones (0)
 *   seed=N              the sample's random seed (0: from the clock and pid)
 *
 * Protocol (stdout, one line each, flushed at once; times on CLOCK_MONOTONIC):
 *   lost PAGE EXPECTED FOUND WRITTEN_FROM_NS WRITTEN_TO_NS FOUND_NS [STORE_FROM_NS STORE_TO_NS]
 *       WRITTEN: the visit that stored EXPECTED; STORE (with time_stores): that
 *       store alone (a loss found within a burst: WRITTEN again, see above)
 *   ctl PAGE VISIT_FROM_NS VISIT_TO_NS [STORE_FROM_NS STORE_TO_NS]
 *       with control=N, after the run: the sample (at most N lines) of visits whose
 *       stores the next check found in place, and the span of their last store
 *   end PASSES VISITS ZAPS ELAPSED_NS [CONTROL_SEEN]
 *       CONTROL_SEEN (with control=N): the visits the sample was drawn from
 * The fields in brackets are new; a reader of the old lines reads their start.
 * Errors: one line on stderr and exit status 2 (also when the write-back child
 * ends by itself: a run without writeback loses nothing and proves nothing).
 * Exit status 0 otherwise (the caller decides what a lost write means).
 * SIGINT/SIGTERM end the run early; the "end" line is still printed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PMD_SIZE (2UL << 20)

enum writeback { WB_FSYNC, WB_FDATASYNC, WB_MSYNC };

static volatile sig_atomic_t stop_requested;
static volatile int done;
static unsigned long zaps_total;       /* summed by the zappers with atomic adds */
static char *base;
static size_t size;
static int pin;
static int ncpus, cpus[CPU_SETSIZE];   /* the CPUs allowed at the start, for pin=1 */

static void die(const char *what)
{
	fprintf(stderr, "lostwrite: %s failed: %s\n", what, strerror(errno));
	exit(2);
}

static void usage(const char *msg)
{
	fprintf(stderr, "lostwrite: %s\n", msg);
	exit(2);
}

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void on_signal(int sig)
{
	(void)sig;
	stop_requested = 1;
}

/* pin=1: the calling thread (or process) onto the k-th allowed CPU, round robin:
 * writer 0, zapper i 1 + i, child 1 + ZAPPERS. */
static void pin_to(long k)
{
	cpu_set_t set;

	if (!pin || ncpus == 0)
		return;
	CPU_ZERO(&set);
	CPU_SET(cpus[k % ncpus], &set);
	if (sched_setaffinity(0, sizeof(set), &set))
		die("sched_setaffinity");
}

/* Zaps in a free loop, mostly of an empty range: each zap that finds the
 * page the writer is on races the writer's burst of stores.  Measured on 6.1
 * (multi-threaded TCG, 3 vCPUs, 256 pages, burst 16, 60 s runs, 2026-11-27):
 * this loop lost 1, 1 and 0 writes in three runs (about 13,000 zaps per
 * second); zapping once per page visit begun (the zapper waiting for the
 * writer) lost 0 in two, with 60 to 180 times fewer zaps. */
static void *zapper(void *arg)
{
	pin_to(1 + (long)(intptr_t)arg);
	while (!__atomic_load_n(&done, __ATOMIC_RELAXED)) {
		if (madvise(base, size, MADV_DONTNEED))
			die("madvise(MADV_DONTNEED)");
		__atomic_fetch_add(&zaps_total, 1, __ATOMIC_RELAXED);
	}
	return NULL;
}

/* Writes the file back and evicts it until the parent dies or kills it.  With
 * msync, through a second MAP_SHARED mapping of the file in the child's own
 * mm, never touched (no page table entries: msync(MS_SYNC) writes back the
 * file's dirty pages of the range, as fdatasync of that range does).  The
 * mapping inherited from the parent stays, as with the other calls. */
static pid_t start_writeback(int fd, int evict, enum writeback how, long cpu)
{
	sigset_t block, old;
	pid_t pid;
	char *second = NULL;

	/*
	 * SIGTERM and SIGINT stay blocked across fork until the child has its own
	 * dispositions: a short run (tests, a loaded machine) can end and send the
	 * child its SIGTERM before the child has run at all, and the parent's
	 * handler, inherited through fork, would take it and leave the child
	 * writing back forever, with the parent waiting for it.
	 */
	sigemptyset(&block);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGINT);
	sigprocmask(SIG_BLOCK, &block, &old);
	pid = fork();
	if (pid < 0)
		die("fork");
	if (pid) {
		sigprocmask(SIG_SETMASK, &old, NULL);
		return pid;
	}
	signal(SIGINT, SIG_IGN);           /* the parent ends the run on Ctrl-C */
	signal(SIGTERM, SIG_DFL);          /* the parent's handler came through fork */
	prctl(PR_SET_PDEATHSIG, SIGTERM);
	sigprocmask(SIG_SETMASK, &old, NULL);   /* a SIGTERM already sent ends the child here */
	if (getppid() == 1)
		_exit(0);
	pin_to(cpu);
	if (how == WB_MSYNC) {
		second = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (second == MAP_FAILED) {
			fprintf(stderr, "lostwrite: writeback: mmap failed: %s\n", strerror(errno));
			_exit(3);
		}
	}
	for (;;) {
		int r = how == WB_MSYNC ? msync(second, size, MS_SYNC) : how == WB_FDATASYNC ? fdatasync(fd) : fsync(fd);

		if (r) {
			fprintf(stderr, "lostwrite: writeback: %s failed: %s\n",
				how == WB_MSYNC ? "msync" : how == WB_FDATASYNC ? "fdatasync" : "fsync", strerror(errno));
			_exit(3);
		}
		if (evict)
			posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
	}
}

/* Whether the write-back child has ended.  Ended by itself (it prints why): an
 * error, exit status 2, as a run without writeback proves nothing.  Killed by
 * a signal (the parent's process group got SIGTERM, or someone killed it): the
 * run ends here, normally. */
static int child_ended(pid_t child)
{
	int status;

	if (waitpid(child, &status, WNOHANG) != child)
		return 0;
	if (WIFEXITED(status))
		usage("the writeback process ended by itself");
	return 1;
}

/* The same three mappings as zaptrace/workload_base.py MAPPINGS. */
static char *map_file(int fd, const char *mapping)
{
	int flags = MAP_SHARED;
	void *hint = NULL, *p;

	if (!strcmp(mapping, "pmd")) {
		void *res = mmap(NULL, size + PMD_SIZE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		if (res == MAP_FAILED)
			die("mmap (reservation)");
		hint = (void *)(((uintptr_t)res + PMD_SIZE - 1) & ~(PMD_SIZE - 1));
		munmap(res, size + PMD_SIZE);
		flags |= MAP_FIXED;
	} else if (strcmp(mapping, "pte") && strcmp(mapping, "default")) {
		usage("unknown mapping");
	}
	p = mmap(hint, size, PROT_READ | PROT_WRITE, flags, fd, 0);
	if (p == MAP_FAILED)
		die("mmap");
	if (!strcmp(mapping, "pmd") && madvise(p, size, MADV_HUGEPAGE))
		die("madvise(MADV_HUGEPAGE)");
	if (!strcmp(mapping, "pte") && madvise(p, size, MADV_NOHUGEPAGE))
		die("madvise(MADV_NOHUGEPAGE)");
	return p;
}

/* The control sample: a uniform random sample (reservoir, Vitter's algorithm R)
 * of the visits that lost nothing, for `zaptrace report --findings` to tell how
 * often its join "explains" a visit by chance. */
struct ctl {
	long page;
	int64_t v0, v1, s0, s1;
};

static struct ctl *sample;
static unsigned long sample_cap, sample_seen;
static uint64_t rng_state;

static uint64_t rng(void)               /* xorshift64* */
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 2685821657736338717ULL;
}

static void control_visit(long p, int64_t v0, int64_t v1, int64_t s0, int64_t s1)
{
	unsigned long slot = sample_seen < sample_cap ? sample_seen : rng() % (sample_seen + 1);

	sample_seen++;
	if (slot < sample_cap)
		sample[slot] = (struct ctl){p, v0, v1, s0, s1};
}

static long flag_value(const char *arg, const char *key)
{
	size_t n = strlen(key);
	char *end;
	long v;

	if (strncmp(arg, key, n) || arg[n] != '=')
		return -1;
	errno = 0;
	v = strtol(arg + n + 1, &end, 10);
	if (errno || *end || end == arg + n + 1 || v < 0)
		usage("bad option value");
	return v;
}

int main(int argc, char **argv)
{
	const char *path, *mapping;
	long pages, zappers, burst, inject_page, inject_pass, iterations;
	int evict, fd, fault_first = 0, time_stores = 0;
	enum writeback how = WB_FSYNC;
	double duration;
	long page_size = sysconf(_SC_PAGESIZE);
	uint64_t *last, seed = 0;
	int64_t *from, *to, *sfrom, *sto;
	unsigned char *clean;
	pthread_t *tids;
	pid_t child;
	struct sigaction sa, old_int;
	unsigned long passes = 0, visits = 0;
	int64_t t0, deadline;

	if (argc < 11)
		usage("usage: lostwrite FILE PAGES MAPPING ZAPPERS EVICT BURST SECONDS ITERATIONS INJECT_PAGE INJECT_PASS "
		      "[writeback=fsync|fdatasync|msync] [fault_first=0|1] [time_stores=0|1] [control=N] [pin=0|1] [seed=N]");
	path = argv[1];
	pages = atol(argv[2]);
	mapping = argv[3];
	zappers = atol(argv[4]);
	evict = atoi(argv[5]);
	burst = atol(argv[6]);
	duration = atof(argv[7]);
	iterations = atol(argv[8]);
	inject_page = atol(argv[9]);
	inject_pass = atol(argv[10]);
	for (int i = 11; i < argc; i++) {
		const char *a = argv[i];
		long v;

		if (!strcmp(a, "writeback=fsync"))
			how = WB_FSYNC;
		else if (!strcmp(a, "writeback=fdatasync"))
			how = WB_FDATASYNC;
		else if (!strcmp(a, "writeback=msync"))
			how = WB_MSYNC;
		else if ((v = flag_value(a, "fault_first")) >= 0)
			fault_first = v != 0;
		else if ((v = flag_value(a, "time_stores")) >= 0)
			time_stores = v != 0;
		else if ((v = flag_value(a, "control")) >= 0)
			sample_cap = v;
		else if ((v = flag_value(a, "pin")) >= 0)
			pin = v != 0;
		else if ((v = flag_value(a, "seed")) >= 0)
			seed = v;
		else
			usage("unknown option (writeback, fault_first, time_stores, control, pin, seed)");
	}
	if (pages <= 0 || zappers < 0 || burst <= 0)
		usage("PAGES and BURST must be positive, ZAPPERS not negative");

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	/*
	 * SIGINT inherited as ignored (a job started with `nohup ... &` from a
	 * shell without job control) stays ignored, as it does for the Python
	 * side, which then never sees a KeyboardInterrupt: otherwise a Ctrl-C
	 * meant for someone else would end the engine's run and the parent would
	 * report it as a normal end.
	 */
	if (sigaction(SIGINT, NULL, &old_int) == 0 && old_int.sa_handler != SIG_IGN)
		sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	if (pin) {
		cpu_set_t set;

		if (sched_getaffinity(0, sizeof(set), &set))
			die("sched_getaffinity");
		for (int c = 0; c < CPU_SETSIZE; c++)
			if (CPU_ISSET(c, &set))
				cpus[ncpus++] = c;
	}
	rng_state = seed ? seed : ((uint64_t)now_ns() ^ ((uint64_t)getpid() << 32)) | 1;

	fd = open(path, O_RDWR);
	if (fd < 0)
		die("open");
	size = (size_t)pages * page_size;
	base = map_file(fd, mapping);
	last = calloc(pages, sizeof(*last));
	from = calloc(pages, sizeof(*from));
	to = calloc(pages, sizeof(*to));
	sfrom = calloc(pages, sizeof(*sfrom));
	sto = calloc(pages, sizeof(*sto));
	clean = calloc(pages, 1);
	tids = calloc(zappers ? zappers : 1, sizeof(*tids));
	sample = calloc(sample_cap ? sample_cap : 1, sizeof(*sample));
	if (!last || !from || !to || !sfrom || !sto || !clean || !tids || !sample)
		die("calloc");

	child = start_writeback(fd, evict, how, 1 + zappers);
	for (long i = 0; i < zappers; i++)
		if ((errno = pthread_create(&tids[i], NULL, zapper, (void *)(intptr_t)i)))
			die("pthread_create");
	pin_to(0);

	t0 = now_ns();
	deadline = duration > 0 ? t0 + (int64_t)(duration * 1e9) : INT64_MAX;
	while (!stop_requested) {
		unsigned long k = passes + 1;

		if (duration <= 0 && (long)passes >= iterations)
			break;
		if (duration > 0 && now_ns() >= deadline)
			break;
		if (child_ended(child))
			break;
		if (inject_pass > 0 && (long)k == inject_pass) {
			/* A deterministic "loss" for tests: put back an older value of the
			 * page behind the writer's back, write it back and evict it. */
			uint64_t old = last[inject_page] - 1;

			if (pwrite(fd, &old, sizeof(old), inject_page * page_size) != sizeof(old))
				die("pwrite (--inject-loss)");
			if (fsync(fd))
				die("fsync (--inject-loss)");
			if (evict)
				posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
		}
		for (long p = 0; p < pages && !stop_requested; p++) {
			volatile uint64_t *head = (volatile uint64_t *)(base + p * page_size);
			int64_t start = now_ns(), s0 = 0, s1 = 0;
			int lost_here = 0;

			for (long b = 0; b < burst; b++) {
				uint64_t v = *head;

				/*
				 * fault_first: store back the value just read.  The page's
				 * content does not change (the writer is its only writer; a
				 * value that went back is stored back as found, and reported
				 * below), and the kernel sees the same faults as without it, in
				 * the same order: the read fault of the load, then the
				 * write-protect fault, now taken by this store instead of the
				 * first real one.  So the timed store faults only when a zap
				 * came in between (its span then holds that fault too).  What
				 * it changes in the race: the first real store comes a check
				 * (with burst 1 also a clock read: tens to hundreds of ns) after
				 * its page became writable, instead of on the fault's return;
				 * a zap that clears the entry in that time leaves that store
				 * to go through the stale TLB entry (the race) or, after the
				 * flush, to fault again.  It removes no store through a stale
				 * entry: every access of the visit is still made, in the same
				 * order, and one more store is made.  Without it (the design
				 * of the independent detector of issue 24) the span of a
				 * store that faults holds the fault (milliseconds under TCG).
				 */
				if (b == 0 && fault_first)
					*head = v;
				if (v != last[p]) {
					int64_t found = now_ns();

					/* Written in this visit (the burst's previous store, not
					 * timed on its own: its span is the visit's so far), or by
					 * the last store of the page's previous visit. */
					if (time_stores)
						printf("lost %ld %lu %lu %lld %lld %lld %lld %lld\n", p, (unsigned long)last[p],
						       (unsigned long)v, (long long)(b ? start : from[p]),
						       (long long)(b ? found : to[p]), (long long)found,
						       (long long)(b ? start : sfrom[p]), (long long)(b ? found : sto[p]));
					else
						printf("lost %ld %lu %lu %lld %lld %lld\n", p, (unsigned long)last[p],
						       (unsigned long)v, (long long)(b ? start : from[p]),
						       (long long)(b ? found : to[p]), (long long)found);
					fflush(stdout);
					if (b)
						lost_here = 1;      /* a store of this visit was lost */
				} else if (b == 0 && sample_cap && to[p] && clean[p]) {
					/* the page's previous visit lost nothing: its stores were
					 * all found in place, the last one just now */
					control_visit(p, from[p], to[p], sfrom[p], sto[p]);
				}
				if (time_stores && b == burst - 1) {
					s0 = now_ns();
					*head = ++last[p];
					s1 = now_ns();
				} else {
					*head = ++last[p];
				}
			}
			from[p] = start;
			to[p] = time_stores ? s1 : now_ns();
			sfrom[p] = s0;
			sto[p] = s1;
			clean[p] = !lost_here;
			visits++;
		}
		passes = k;
	}
	__atomic_store_n(&done, 1, __ATOMIC_RELAXED);
	for (long i = 0; i < zappers; i++)
		pthread_join(tids[i], NULL);
	if (!child_ended(child)) {
		kill(child, SIGTERM);
		waitpid(child, NULL, 0);
	}
	for (unsigned long i = 0; i < sample_seen && i < sample_cap; i++) {
		struct ctl *c = &sample[i];

		if (time_stores)
			printf("ctl %ld %lld %lld %lld %lld\n", c->page, (long long)c->v0, (long long)c->v1,
			       (long long)c->s0, (long long)c->s1);
		else
			printf("ctl %ld %lld %lld\n", c->page, (long long)c->v0, (long long)c->v1);
	}
	if (sample_cap)
		printf("end %lu %lu %lu %lld %lu\n", passes, visits, zaps_total, (long long)(now_ns() - t0), sample_seen);
	else
		printf("end %lu %lu %lu %lld\n", passes, visits, zaps_total, (long long)(now_ns() - t0));
	fflush(stdout);
	munmap(base, size);
	close(fd);
	return 0;
}
