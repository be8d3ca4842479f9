/* Out-of-line copies of the SPDK static-inline functions the mirror module needs (bindgen cannot
 * bind static inline functions). */
#ifndef SPDK_MIRROR_SHIM_H
#define SPDK_MIRROR_SHIM_H
#include <spdk/bdev_module.h>
#include <spdk/thread.h>

struct spdk_bdev_io *spdk_mirror_shim_bdev_io_from_ctx(void *ctx);
#endif
