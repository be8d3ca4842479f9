#include "shim.h"

struct spdk_bdev_io *
spdk_mirror_shim_bdev_io_from_ctx(void *ctx)
{
	return spdk_bdev_io_from_ctx(ctx);
}

int
spdk_mirror_shim_rw(struct spdk_bdev_desc *desc, struct spdk_io_channel *ch,
		    struct spdk_bdev_io *parent, bool write, struct iovec *iov, int iovcnt,
		    uint64_t offset_blocks, uint64_t num_blocks,
		    spdk_bdev_io_completion_cb cb, void *cb_arg)
{
	struct spdk_bdev_ext_io_opts opts = {};

	if (parent->u.bdev.memory_domain == NULL) {
		/* Nothing for the options to carry: the plain calls skip building and checking them. */
		if (write) {
			return spdk_bdev_writev_blocks(desc, ch, iov, iovcnt, offset_blocks, num_blocks, cb, cb_arg);
		}
		return spdk_bdev_readv_blocks(desc, ch, iov, iovcnt, offset_blocks, num_blocks, cb, cb_arg);
	}
	opts.size = sizeof(opts);
	opts.memory_domain = parent->u.bdev.memory_domain;
	opts.memory_domain_ctx = parent->u.bdev.memory_domain_ctx;
	if (write) {
		return spdk_bdev_writev_blocks_ext(desc, ch, iov, iovcnt, offset_blocks, num_blocks,
						   cb, cb_arg, &opts);
	}
	return spdk_bdev_readv_blocks_ext(desc, ch, iov, iovcnt, offset_blocks, num_blocks,
					  cb, cb_arg, &opts);
}

void
spdk_mirror_shim_log(int level, const char *msg)
{
	spdk_log((enum spdk_log_level)level, "mirror", 0, "mirror", "%s\n", msg);
}
