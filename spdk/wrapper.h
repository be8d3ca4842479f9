/* Headers bindgen reads; SPDK's own, from the install found by build.rs. */
#include <spdk/stdinc.h>
#include <spdk/env.h>
#include <spdk/thread.h>
#include <spdk/bdev.h>
#include <spdk/bdev_module.h>
#include <spdk/json.h>
#include <spdk/jsonrpc.h>
#include <spdk/rpc.h>
#include <spdk/log.h>
#include <spdk/string.h>
#include <spdk/util.h>
#include <spdk/uuid.h>
#include "shim/shim.h"
