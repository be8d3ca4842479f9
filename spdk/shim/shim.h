/* Out-of-line helpers for the mirror module: SPDK static-inline functions bindgen cannot bind,
 * and the packed spdk_bdev_ext_io_opts, which Rust cannot lay out. */
#ifndef SPDK_MIRROR_SHIM_H
#define SPDK_MIRROR_SHIM_H
#include <spdk/bdev_module.h>
#include <spdk/thread.h>
#include <spdk/log.h>

struct spdk_bdev_io *spdk_mirror_shim_bdev_io_from_ctx(void *ctx);
/* readv/writev_blocks_ext with the parent's memory domain passed through (the plain calls when
 * it has none: the same I/O, without options to build and check). */
int spdk_mirror_shim_rw(struct spdk_bdev_desc *desc, struct spdk_io_channel *ch,
			struct spdk_bdev_io *parent, bool write, struct iovec *iov, int iovcnt,
			uint64_t offset_blocks, uint64_t num_blocks,
			spdk_bdev_io_completion_cb cb, void *cb_arg);
/* spdk_log without varargs: level is an enum spdk_log_level. */
void spdk_mirror_shim_log(int level, const char *msg);
#endif
