#include "app/core/errors.h"

G_DEFINE_QUARK(lmwb-error-quark, lmwb_error)

int lmwb_error_exit_status(const GError *err) {
  if (err && err->domain == LMWB_ERROR && err->code == LMWB_ERROR_INPUT) return 2;
  return 1;
}
