"""``viommu-sim check-policy REF``: run the invalidation-policy conformance suite against a policy.

REF is ``strict``, ``lazy``, ``PATH.py:Class`` or ``package.module:Class`` (``--iommu-policy``'s
values).  The suite (``testbench.check_policy``) boots the policy on each guest kernel it applies
to, each vCPU count and seed, drives the DMA-safety and ordering regressions and prints one verdict
line per property, the first counterexample of a failing one with the command that replays it, and
the stale window measured against the one the policy declares.  Exit status 1 on any violation, 0
when all pass, 2 (one line) for a bad reference or flag.
"""

from __future__ import annotations

import argparse
import sys

from models import ConfigError, guest_kernel_behaviour
from testbench import check_policy

from ._options import UsageError


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid list of integers {text!r} (e.g. 1,4)") from None
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"invalid list of integers {text!r} (e.g. 1,4)")
    return values


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("check-policy", help="run the DMA-safety and ordering conformance suite against a policy")
    p.add_argument("ref", metavar="REF", help="strict, lazy, PATH.py:Class or package.module:Class")
    p.add_argument("--guest-kernel", metavar="K[,K]", help="guest kernels (default 6.12, and 6.7 for a policy "
                   "that does not defer flushes)")
    p.add_argument("--smp", type=_int_list, default=(1, 4), metavar="N[,N]", help="vCPU counts (default 1,4)")
    p.add_argument("--seed", type=_int_list, default=(0, 1), metavar="S[,S]", help="seeds (default 0,1)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    kernels = tuple(args.guest_kernel.split(",")) if args.guest_kernel else None
    for k in kernels or ():
        try:
            guest_kernel_behaviour(k)  # any version run accepts: 5.14 .. 6.7 as 6.7, 6.8+ as 6.12
        except ConfigError as exc:
            raise UsageError(str(exc)) from None
    for n in args.smp:
        if not 1 <= n <= 255:
            raise UsageError(f"--smp: invalid value {n!r} (an integer from 1 to 255)")
    report = check_policy(args.ref, guest_kernels=kernels, smps=args.smp, seeds=args.seed)
    sys.stdout.write("\n".join(report.lines()) + "\n")
    return 0 if report.ok else 1
