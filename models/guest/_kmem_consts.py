"""Constants of the guest kernel's memory management (x86-64 Linux)."""

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
#: smallest kmalloc size class (kmalloc-8)
KMALLOC_MIN = 8
