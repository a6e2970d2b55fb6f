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
 *            zapped mm) that MADV_DONTNEED the whole range in a loop;
 *   child    a process that writes the file back (fsync: folio_mkclean) and,
 *            unless --no-evict, drops the clean pages (POSIX_FADV_DONTNEED).
 *
 * Protocol (stdout, one line each, flushed at once; times on CLOCK_MONOTONIC):
 *   lost PAGE EXPECTED FOUND WRITTEN_FROM_NS WRITTEN_TO_NS FOUND_NS
 *   end PASSES VISITS ZAPS ELAPSED_NS
 * Errors: one line on stderr and exit status 2.  Exit status 0 otherwise (the
 * caller decides what a lost write means).  SIGINT/SIGTERM end the run early;
 * the "end" line is still printed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
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

static volatile sig_atomic_t stop_requested;
static volatile int done;
static unsigned long zaps_total;       /* summed by the zappers with atomic adds */
static char *base;
static size_t size;

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

/* Zaps in a free loop, mostly of an empty range: each zap that finds the
 * page the writer is on races the writer's burst of stores.  Measured on 6.1
 * (multi-threaded TCG, 3 vCPUs, 256 pages, burst 16, 60 s runs, 2026-11-27):
 * this loop lost 1, 1 and 0 writes in three runs (about 13,000 zaps per
 * second); zapping once per page visit begun (the zapper waiting for the
 * writer) lost 0 in two, with 60 to 180 times fewer zaps. */
static void *zapper(void *arg)
{
	(void)arg;
	while (!__atomic_load_n(&done, __ATOMIC_RELAXED)) {
		if (madvise(base, size, MADV_DONTNEED))
			die("madvise(MADV_DONTNEED)");
		__atomic_fetch_add(&zaps_total, 1, __ATOMIC_RELAXED);
	}
	return NULL;
}

/* Writes the file back and evicts it until the parent dies or kills it. */
static pid_t start_writeback(int fd, int evict)
{
	pid_t pid = fork();

	if (pid < 0)
		die("fork");
	if (pid)
		return pid;
	signal(SIGINT, SIG_IGN);           /* the parent ends the run on Ctrl-C */
	signal(SIGTERM, SIG_DFL);          /* the parent's handler came through fork */
	prctl(PR_SET_PDEATHSIG, SIGTERM);
	if (getppid() == 1)
		_exit(0);
	for (;;) {
		if (fsync(fd))
			_exit(3);
		if (evict)
			posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
	}
}

/* The same three mappings as zaptrace/workloads.py MAPPINGS. */
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

int main(int argc, char **argv)
{
	const char *path, *mapping;
	long pages, zappers, burst, inject_page, inject_pass, iterations;
	int evict, fd;
	double duration;
	long page_size = sysconf(_SC_PAGESIZE);
	uint64_t *last;
	int64_t *from, *to;
	pthread_t *tids;
	pid_t child;
	struct sigaction sa, old_int;
	unsigned long passes = 0, visits = 0;
	int64_t t0, deadline;

	if (argc != 11)
		usage("usage: lostwrite FILE PAGES MAPPING ZAPPERS EVICT BURST SECONDS ITERATIONS INJECT_PAGE INJECT_PASS");
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

	fd = open(path, O_RDWR);
	if (fd < 0)
		die("open");
	size = (size_t)pages * page_size;
	base = map_file(fd, mapping);
	last = calloc(pages, sizeof(*last));
	from = calloc(pages, sizeof(*from));
	to = calloc(pages, sizeof(*to));
	tids = calloc(zappers ? zappers : 1, sizeof(*tids));
	if (!last || !from || !to || !tids)
		die("calloc");

	child = start_writeback(fd, evict);
	for (long i = 0; i < zappers; i++)
		if ((errno = pthread_create(&tids[i], NULL, zapper, NULL)))
			die("pthread_create");

	t0 = now_ns();
	deadline = duration > 0 ? t0 + (int64_t)(duration * 1e9) : INT64_MAX;
	while (!stop_requested) {
		unsigned long k = passes + 1;

		if (duration <= 0 && (long)passes >= iterations)
			break;
		if (duration > 0 && now_ns() >= deadline)
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
			int64_t start = now_ns();

			for (long b = 0; b < burst; b++) {
				uint64_t v = *head;

				if (v != last[p]) {
					int64_t found = now_ns();

					/* Written in this visit (an earlier store of the burst),
					 * or in the page's previous visit. */
					printf("lost %ld %lu %lu %lld %lld %lld\n", p, (unsigned long)last[p],
					       (unsigned long)v, (long long)(b ? start : from[p]),
					       (long long)(b ? found : to[p]), (long long)found);
					fflush(stdout);
				}
				*head = ++last[p];
			}
			from[p] = start;
			to[p] = now_ns();
			visits++;
		}
		passes = k;
	}
	__atomic_store_n(&done, 1, __ATOMIC_RELAXED);
	for (long i = 0; i < zappers; i++)
		pthread_join(tids[i], NULL);
	kill(child, SIGTERM);
	waitpid(child, NULL, 0);
	printf("end %lu %lu %lu %lld\n", passes, visits, zaps_total, (long long)(now_ns() - t0));
	fflush(stdout);
	munmap(base, size);
	close(fd);
	return 0;
}
