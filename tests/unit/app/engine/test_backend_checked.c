/* The checked backend finds host/device mix-ups: device memory read from host code faults, a host
 * pointer handed to an op (or a device pointer as a copy's host side) aborts naming the op and the
 * argument, and data moved through to_device / to_host and the ops arrives intact. */
#include "app/engine/backend.h"
#include <glib.h>
#include <string.h>

static const LmwbBackend *ck;

static void test_round_trip(void) {
  float host[100], back[100];
  for (int i = 0; i < 100; i++) host[i] = (float)i;
  float *a = ck->alloc(sizeof host), *b = ck->alloc(sizeof host);
  g_assert_nonnull(a);
  ck->to_device(a, host, sizeof host);
  ck->ops->add(b, a, a, 100);
  ck->to_host(back, b, sizeof back);
  for (int i = 0; i < 100; i++) g_assert_cmpfloat(back[i], ==, 2.0f * i);
  ck->free(a);
  ck->free(b);
}

static void host_reads_device(void) {
  float *a = ck->alloc(64 * sizeof(float));
  ck->zero(a, 64 * sizeof(float));
  volatile float x = a[3]; /* faults: the arena is closed to host code */
  (void)x;
}

static void op_gets_host_pointer(void) {
  float host[8] = {0}, *d = ck->alloc(sizeof host);
  ck->ops->add(d, host, d, 8);
}

static void copy_gets_device_as_host(void) {
  float *d = ck->alloc(64), *e = ck->alloc(64);
  ck->to_device(d, e, 64);
}

static void test_traps(void) {
  if (g_test_subprocess()) {
    const char *which = g_getenv("LMWB_CHECKED_CASE");
    if (!g_strcmp0(which, "read")) host_reads_device();
    if (!g_strcmp0(which, "op")) op_gets_host_pointer();
    if (!g_strcmp0(which, "copy")) copy_gets_device_as_host();
    return;
  }
  g_setenv("LMWB_CHECKED_CASE", "read", TRUE);
  g_test_trap_subprocess(NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
  g_test_trap_assert_failed();
  g_setenv("LMWB_CHECKED_CASE", "op", TRUE);
  g_test_trap_subprocess(NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
  g_test_trap_assert_failed();
  g_test_trap_assert_stderr("*add got a host pointer for a*");
  g_setenv("LMWB_CHECKED_CASE", "copy", TRUE);
  g_test_trap_subprocess(NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
  g_test_trap_assert_failed();
  g_test_trap_assert_stderr("*to_device got a device pointer for src*");
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  ck = lmwb_backend_checked();
  g_test_add_func("/checked/round-trip", test_round_trip);
  g_test_add_func("/checked/traps", test_traps);
  return g_test_run();
}
