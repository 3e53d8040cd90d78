"""Linux errno values, for the host and the guest models and the testbench.

The numbers are Linux's (include/uapi/asm-generic/errno-base.h, errno.h, and the
kernel-internal EPROBE_DEFER of include/linux/errno.h), not the host Python's
``errno`` module, so a model returns the same number on every host.  ``strerror``
gives glibc's message for the values defined here.
"""

from __future__ import annotations

# -- include/uapi/asm-generic/errno-base.h ------------------------------------------------
EPERM = 1
ENOENT = 2
ESRCH = 3
EINTR = 4
EIO = 5
ENXIO = 6
E2BIG = 7
ENOEXEC = 8
EBADF = 9
ECHILD = 10
EAGAIN = 11
ENOMEM = 12
EACCES = 13
EFAULT = 14
ENOTBLK = 15
EBUSY = 16
EEXIST = 17
EXDEV = 18
ENODEV = 19
ENOTDIR = 20
EISDIR = 21
EINVAL = 22
ENFILE = 23
EMFILE = 24
ENOTTY = 25
ETXTBSY = 26
EFBIG = 27
ENOSPC = 28
ESPIPE = 29
EROFS = 30
EMLINK = 31
EPIPE = 32
EDOM = 33
ERANGE = 34

# -- include/uapi/asm-generic/errno.h (the ones the models return) -------------------------
ENOSYS = 38
EOVERFLOW = 75
EOPNOTSUPP = 95
ETIMEDOUT = 110

# -- include/linux/errno.h (kernel-internal, never seen by user space) ---------------------
#: a driver's probe must wait for a supplier (the IOMMU, a clock, ...): retried later
EPROBE_DEFER = 517

_MESSAGES = {
    EPERM: "Operation not permitted", ENOENT: "No such file or directory", ESRCH: "No such process",
    EINTR: "Interrupted system call", EIO: "Input/output error", ENXIO: "No such device or address",
    E2BIG: "Argument list too long", ENOEXEC: "Exec format error", EBADF: "Bad file descriptor",
    ECHILD: "No child processes", EAGAIN: "Resource temporarily unavailable", ENOMEM: "Cannot allocate memory",
    EACCES: "Permission denied", EFAULT: "Bad address", ENOTBLK: "Block device required",
    EBUSY: "Device or resource busy", EEXIST: "File exists", EXDEV: "Invalid cross-device link",
    ENODEV: "No such device", ENOTDIR: "Not a directory", EISDIR: "Is a directory", EINVAL: "Invalid argument",
    ENFILE: "Too many open files in system", EMFILE: "Too many open files",
    ENOTTY: "Inappropriate ioctl for device", ETXTBSY: "Text file busy", EFBIG: "File too large",
    ENOSPC: "No space left on device", ESPIPE: "Illegal seek", EROFS: "Read-only file system",
    EMLINK: "Too many links", EPIPE: "Broken pipe", EDOM: "Numerical argument out of domain",
    ERANGE: "Numerical result out of range", ENOSYS: "Function not implemented",
    EOVERFLOW: "Value too large for defined data type", EOPNOTSUPP: "Operation not supported",
    ETIMEDOUT: "Connection timed out",
}


def strerror(errno: int) -> str:
    """glibc's ``strerror`` of a (positive) Linux errno; "Unknown error N" for one not defined here."""
    return _MESSAGES.get(errno, f"Unknown error {errno}")
