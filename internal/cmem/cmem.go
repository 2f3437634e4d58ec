// Package cmem keeps the C heap (glibc's malloc, used through cgo by
// sqlite, PAM and the video encoders) from holding memory the proxy no
// longer uses: a burst of logins leaves freed sqlite page caches in
// per-thread malloc arenas that glibc keeps by default, which at 9,000
// idle sessions was as much resident memory as the whole Go heap.
package cmem

/*
#include <malloc.h>
#include <stdlib.h>
#include <string.h>

static void limit_arenas(int n) { mallopt(M_ARENA_MAX, n); }

// churn mallocs n blocks of size bytes, touches them and frees all but
// the last (which it returns): what a burst of sqlite lookups leaves.
static void *churn(int n, size_t size) {
	void **p = malloc(n * sizeof(void *));
	for (int i = 0; i < n; i++) { p[i] = malloc(size); memset(p[i], 1, size); }
	for (int i = 0; i < n - 1; i++) free(p[i]);
	void *last = p[n - 1];
	free(p);
	return last;
}
*/
import "C"

// maxArenas bounds glibc's malloc arenas (default: 8 per core): each
// thread that calls into C otherwise gets its own, and keeps its pages.
const maxArenas = 2

func init() { C.limit_arenas(maxArenas) }

// churn is what the tests use to leave freed C memory behind; it returns
// a function that frees the block it kept.
func churn(n, size int) func() {
	last := C.churn(C.int(n), C.size_t(size))
	return func() { C.free(last) }
}

// Trim gives the C heap's free pages back to the operating system
// (malloc_trim), as debug.FreeOSMemory does for Go's heap.
func Trim() { C.malloc_trim(0) }
