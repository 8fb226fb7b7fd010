/* An LD_PRELOAD malloc counter for tests/test_resident.py. While mc_on is set (ctypes
 * sets it around the calls it measures) it counts calls, and separately the calls that
 * free, or hand out, memory inside the ranges mc_lo[i]..mc_hi[i] (vita's malloc arena). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>

int mc_on = 0, mc_n = 0;
unsigned long mc_lo[16], mc_hi[16];
long mc_malloc = 0, mc_free = 0, mc_realloc = 0, mc_inside_free = 0, mc_inside_malloc = 0;

static void *(*real_malloc)(size_t);
static void (*real_free)(void *);
static void *(*real_realloc)(void *, size_t);

static int inside(void *p) {
  for (int i = 0; i < mc_n; i++)
    if ((unsigned long)p >= mc_lo[i] && (unsigned long)p < mc_hi[i]) return 1;
  return 0;
}

void *malloc(size_t n) {
  if (!real_malloc) real_malloc = dlsym(RTLD_NEXT, "malloc");
  void *p = real_malloc(n);
  if (mc_on) {
    mc_malloc++;
    mc_inside_malloc += inside(p);
  }
  return p;
}

void free(void *p) {
  if (!real_free) real_free = dlsym(RTLD_NEXT, "free");
  if (mc_on && p) {
    mc_free++;
    mc_inside_free += inside(p);
  }
  real_free(p);
}

void *realloc(void *p, size_t n) {
  if (!real_realloc) real_realloc = dlsym(RTLD_NEXT, "realloc");
  if (mc_on) {
    mc_realloc++;
    mc_inside_free += p != NULL && inside(p);
  }
  void *r = real_realloc(p, n);
  if (mc_on) mc_inside_malloc += inside(r);
  return r;
}
