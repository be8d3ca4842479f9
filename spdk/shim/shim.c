#include "shim.h"

struct spdk_bdev_io *
spdk_mirror_shim_bdev_io_from_ctx(void *ctx)
{
	return spdk_bdev_io_from_ctx(ctx);
}
