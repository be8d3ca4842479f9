#  SPDX-License-Identifier: BSD-3-Clause
"""rpc.py plugin for the spdk-mirror bdev module (RAID1 / md-compatible RAID10).

SPDK's rpc.py imports a plugin by module name from PYTHONPATH and calls its
spdk_rpc_plugin_initialize(subparsers). Usage, with the module loaded into the
target (e.g. LD_PRELOAD=<repo>/target/release/libspdk_mirror.so spdk_tgt ...):

    PYTHONPATH=<repo>/python rpc.py --plugin spdk_mirror_rpc bdev_mirror_get_bdevs
    PYTHONPATH=<repo>/python rpc.py --plugin spdk_mirror_rpc \\
        bdev_mirror_create -n md0 -l raid10 --layout n2 -c 64 -b "b0 b1 b2 b3"
    PYTHONPATH=<repo>/python rpc.py --plugin spdk_mirror_rpc bdev_mirror_add_base_bdev md0 b4
    PYTHONPATH=<repo>/python rpc.py --plugin spdk_mirror_rpc bdev_mirror_remove_base_bdev b1
    PYTHONPATH=<repo>/python rpc.py --plugin spdk_mirror_rpc bdev_mirror_delete md0

rpc.py's global options (-s SOCKET, -t TIMEOUT, --dry-run, ...) go before --plugin.
Optional parameters that are not given are left out of the request, so the
module's defaults apply (raid10: layout n2, chunk 64 KiB).
"""

import json

READ_POLICIES = ['least_outstanding', 'round_robin', 'preferred']
CATEGORIES = ['all', 'online', 'configuring', 'offline']


def _print_json(obj):
    # Same output as rpc.py's print_json: indented JSON, a bare string unquoted. None comes
    # only from rpc.py's --dry-run client (which prints the request itself).
    if obj is not None:
        print(json.dumps(obj, indent=2).strip('"'))


def _call(args, method, params):
    """Sends one request through rpc.py's client (JSON-RPC errors raise JSONRPCException,
    which rpc.py prints before exiting with status 1)."""
    return args.client.call(method, {k: v for k, v in params.items() if v is not None})


def bdev_mirror_create(args):
    _print_json(_call(args, 'bdev_mirror_create', {
        'name': args.name,
        'level': args.level,
        'layout': args.layout,
        'chunk_kb': args.chunk_kb,
        'base_bdevs': args.base_bdevs,
        'uuid': args.uuid,
        'pool_size': args.pool_size,
        'max_parents': args.max_parents,
        'read_policy': args.read_policy,
        'preferred_leg': args.preferred_leg,
        'superblock': args.superblock,
        'bitmap_region_kb': args.bitmap_region_kb,
        'rebuild_max_mb_per_s': args.rebuild_max_mb_per_s,
        'leg_blocks': args.leg_blocks,
        'wait_for_legs': args.wait_for_legs,
    }))


def bdev_mirror_delete(args):
    _call(args, 'bdev_mirror_delete', {'name': args.name})


def bdev_mirror_get_bdevs(args):
    _print_json(_call(args, 'bdev_mirror_get_bdevs', {'name': args.name, 'category': args.category}))


def bdev_mirror_add_base_bdev(args):
    _call(args, 'bdev_mirror_add_base_bdev', {'name': args.name, 'base_bdev': args.base_bdev})


def bdev_mirror_remove_base_bdev(args):
    _call(args, 'bdev_mirror_remove_base_bdev', {'base_bdev': args.base_bdev})


def bdev_mirror_set_read_policy(args):
    _call(args, 'bdev_mirror_set_read_policy', {
        'name': args.name,
        'read_policy': args.read_policy,
        'preferred_leg': args.preferred_leg,
    })


def bdev_mirror_set_options(args):
    _call(args, 'bdev_mirror_set_options', {
        'name': args.name,
        'rebuild_max_mb_per_s': args.rebuild_max_mb_per_s,
    })


def bdev_mirror_check(args):
    _print_json(_call(args, 'bdev_mirror_check', {'name': args.name, 'repair': args.repair}))


def bdev_mirror_wipe_superblock(args):
    _call(args, 'bdev_mirror_wipe_superblock', {'base_bdev': args.base_bdev})


def bdev_mirror_replace_base_bdev(args):
    params = {'base_bdev': args.base_bdev, 'new_base_bdev': args.new_base_bdev}
    if args.name:
        params['name'] = args.name
    _call(args, 'bdev_mirror_replace_base_bdev', params)


def bdev_mirror_set_num_legs(args):
    params = {'name': args.name, 'num_legs': args.num_legs}
    if args.base_bdevs:
        params['base_bdevs'] = args.base_bdevs
    _call(args, 'bdev_mirror_set_num_legs', params)


def bdev_mirror_set_module_options(args):
    _call(args, 'bdev_mirror_set_module_options', {
        'degraded_grace_ms': args.degraded_grace_ms,
        'degraded_assembly': args.degraded_assembly,
    })


def bdev_mirror_get_module_options(args):
    _print_json(_call(args, 'bdev_mirror_get_module_options', {}))


def spdk_rpc_plugin_initialize(subparsers):
    p = subparsers.add_parser('bdev_mirror_create',
                              help='Create a mirror bdev (raid1, or md-compatible raid10)')
    p.add_argument('-n', '--name', required=True, help='mirror bdev name (up to 64 bytes with a superblock, 200 without; no control characters)')
    p.add_argument('-l', '--level', required=True, choices=['raid1', 'raid10'], help='RAID level')
    p.add_argument('--layout', help='raid10 only: md layout, nN (near), fN (far) or oN (offset) '
                                    'with N copies, e.g. n2, f2, o3 (default n2)')
    p.add_argument('-c', '--chunk-kb', dest='chunk_kb', type=int,
                   help='raid10 only: chunk size in KiB (default 64)')
    p.add_argument('-b', '--base-bdevs', dest='base_bdevs', required=True, type=str.split,
                   help='base bdev names, whitespace separated list in quotes')
    p.add_argument('--uuid', help='UUID for the mirror bdev')
    p.add_argument('--pool-size', dest='pool_size', type=int,
                   help='child I/O contexts preallocated per leg')
    p.add_argument('--max-parents', dest='max_parents', type=int,
                   help='maximum number of parent I/Os in flight')
    p.add_argument('--read-policy', dest='read_policy', choices=READ_POLICIES,
                   help='how reads pick a leg (default least_outstanding)')
    p.add_argument('--preferred-leg', dest='preferred_leg', type=int,
                   help="leg index read first with --read-policy preferred")
    sb = p.add_mutually_exclusive_group()
    sb.add_argument('--superblock', dest='superblock', action='store_true', default=None,
                    help='store a superblock and write-intent bitmap on each base bdev (default)')
    sb.add_argument('--no-superblock', dest='superblock', action='store_false',
                    help='no superblock or bitmap: the legs hold data only')
    p.add_argument('--bitmap-region-kb', dest='bitmap_region_kb', type=int,
                   help='KiB of mirror data one bitmap bit covers (default 65536)')
    p.add_argument('--rebuild-max-mb-per-s', dest='rebuild_max_mb_per_s', type=int,
                   help='bandwidth cap of rebuild, recovery, resync and check in MiB/s (0: none)')
    p.add_argument('--leg-blocks', dest='leg_blocks', type=int,
                   help='blocks of each base bdev to hold data in (default: all the smallest offers)')
    p.add_argument('--wait-for-legs', dest='wait_for_legs', action='store_true', default=None,
                   help='base bdevs not registered yet are waited for (the mirror is created '
                        'once they all are) rather than refused')
    p.set_defaults(func=bdev_mirror_create)

    p = subparsers.add_parser('bdev_mirror_delete', help='Delete a mirror bdev')
    p.add_argument('name', help='mirror bdev name')
    p.set_defaults(func=bdev_mirror_delete)

    p = subparsers.add_parser('bdev_mirror_get_bdevs',
                              help='Show mirror bdevs with their legs, states and counters')
    p.add_argument('-n', '--name', help='only this mirror bdev (default: all)')
    p.add_argument('-c', '--category', choices=CATEGORIES,
                   help='all (default); online (degraded included); configuring (waiting for '
                        'legs after a restart); offline')
    p.set_defaults(func=bdev_mirror_get_bdevs)

    p = subparsers.add_parser('bdev_mirror_add_base_bdev',
                              help='Add a base bdev to a mirror bdev (it is rebuilt as a leg)')
    p.add_argument('name', help='mirror bdev name')
    p.add_argument('base_bdev', help='base bdev name')
    p.set_defaults(func=bdev_mirror_add_base_bdev)

    p = subparsers.add_parser('bdev_mirror_remove_base_bdev',
                              help='Remove a base bdev from the mirror bdev it belongs to; it '
                                   'does not rejoin by itself when found again (add it back with '
                                   'bdev_mirror_add_base_bdev). The new bdev of a running replace: '
                                   'the replace stops')
    p.add_argument('base_bdev', help='base bdev name')
    p.set_defaults(func=bdev_mirror_remove_base_bdev)

    p = subparsers.add_parser('bdev_mirror_set_read_policy',
                              help='Change how a mirror picks the copy each read goes to')
    p.add_argument('name', help='mirror bdev name')
    p.add_argument('read_policy', choices=['least_outstanding', 'round_robin', 'preferred'],
                   help='least_outstanding (default), round_robin, or preferred (with --preferred-leg)')
    p.add_argument('--preferred-leg', type=int, help='leg slot read first with the preferred policy')
    p.set_defaults(func=bdev_mirror_set_read_policy)

    p = subparsers.add_parser('bdev_mirror_set_options',
                              help='Change a mirror\'s tunables at runtime')
    p.add_argument('name', help='mirror bdev name')
    p.add_argument('--rebuild-max-mb-per-s', dest='rebuild_max_mb_per_s', type=int,
                   help='bandwidth cap of background processes in MiB/s (0: none)')
    p.set_defaults(func=bdev_mirror_set_options)

    p = subparsers.add_parser('bdev_mirror_check',
                              help='Compare every copy of every block (md check); copies that '
                                   'cannot be read are counted (unreadable_blocks) and rewritten; '
                                   '--repair also rewrites mismatches from the first in-sync copy')
    p.add_argument('name', help='mirror bdev name')
    p.add_argument('--repair', action='store_true', default=None, help='rewrite mismatched copies')
    p.set_defaults(func=bdev_mirror_check)

    p = subparsers.add_parser('bdev_mirror_wipe_superblock',
                              help='Zero the mirror superblock of an unclaimed bdev (md '
                                   '--zero-superblock), e.g. a leg that was away when its '
                                   'mirror was deleted')
    p.add_argument('base_bdev', help='bdev name')
    p.set_defaults(func=bdev_mirror_wipe_superblock)

    p = subparsers.add_parser('bdev_mirror_replace_base_bdev',
                              help='Replace a leg while it keeps serving (md --replace): copy it '
                                   'onto a new bdev, then swap')
    p.add_argument('base_bdev', help='the leg to replace')
    p.add_argument('new_base_bdev', help='the bdev that takes its place')
    p.add_argument('-n', '--name', help='the mirror the leg belongs to (checked)')
    p.set_defaults(func=bdev_mirror_replace_base_bdev)

    p = subparsers.add_parser('bdev_mirror_set_num_legs',
                              help='Grow or shrink the number of raid1 copies (md --grow -n)')
    p.add_argument('name', help='mirror bdev name')
    p.add_argument('num_legs', type=int, help='the new number of legs')
    p.add_argument('-b', '--base-bdevs', dest='base_bdevs', type=str.split,
                   help='growing: bdevs for the new slots, whitespace separated list in quotes')
    p.set_defaults(func=bdev_mirror_set_num_legs)

    p = subparsers.add_parser('bdev_mirror_set_module_options',
                              help='Set module-wide options (also before framework_start_init, '
                                   'with --wait-for-rpc)')
    p.add_argument('--degraded-grace-ms', dest='degraded_grace_ms', type=int,
                   help='how long a mirror that could run degraded waits for its missing legs '
                        'before assembling degraded (default 30000, as mdadm)')
    da = p.add_mutually_exclusive_group()
    da.add_argument('--degraded-assembly', dest='degraded_assembly', action='store_true',
                    default=None, help='assemble degraded after the grace period (default)')
    da.add_argument('--no-degraded-assembly', dest='degraded_assembly', action='store_false',
                    help='never assemble degraded: wait for every active leg')
    p.set_defaults(func=bdev_mirror_set_module_options)

    p = subparsers.add_parser('bdev_mirror_get_module_options', help='Show module-wide options')
    p.set_defaults(func=bdev_mirror_get_module_options)
