"""An NVMe namespace's media timing: flash dies and channels behind a write cache.

What the controller's NVM command set (models/_nvme_io.py) asks of the media: when is a
read's data in the controller, when is a write's data safe enough to complete the command,
and when has a Flush nothing left to commit.  The data itself lives in the namespace store
(models/_nvme_namespace.py); this room is time only.

* **Internal parallelism.** The namespace's bytes are striped over ``units`` parallel units in
  ``page_bytes`` pieces (unit = page index mod units; units sit on ``channels`` buses, unit mod
  channels): the dies of a NAND SSD (Agrawal et al., "Design Tradeoffs for SSD Performance",
  USENIX ATC 2008: channel/die/plane parallelism and striping), or QEMU's AIO worker threads
  for an emulated device.  A read occupies each unit its range touches for one sense time
  (``tR``), then the unit's channel for the transfer (bytes / channel bandwidth).  A unit does
  one sense at a time and a channel one transfer at a time, first come first served
  (reservations, as the controller's data link in models/_nvme_core.py), so latency is flat
  while the units are idle and queues form once they are busy.
* **Service-time distribution.** Each sense and each cache insert takes ``base + Exp(tail)``:
  a shifted exponential (minimum ``base``, mean ``base + tail``, median ``base + tail*ln 2``,
  99th percentile ``base + tail*ln 100``), the usual first model of an SSD's latency tail
  (firmware, ECC retries, read-retry levels), drawn from the simulator's seeded stream
  ``nvme.media`` (``sim.rng``), so a run is a function of its seed.
* **Sequential vs random.** A die's page register still holds the page it sensed last: a
  read of the same page again (the next 4 KiB of a sequential 4 KiB stream inside one 16 KiB
  page) needs only the channel transfer, no sense (NAND "cache read"; ONFI 4.0 section 5.17
  Read Cache).  A write to that page forgets it.  Larger reads (a page or more) cost the same
  sequential or random, and so do writes: the model has no garbage collection, so the
  steady-state random small-write penalty of a full drive (write amplification) is absent.
  The emulated device has no page register (``sense_cache`` False): its reads are page-cache
  copies, sequential or not.
* **Write cache.** A write completes once its data is in the cache (one insert time); the
  cache drains to the media at ``drain_bytes_per_s`` (the flash program rate, or the host's
  writeback rate), first in first out.  A write that does not fit waits until the drain has
  made room.  Occupancy is exact without a drain task: while the drain is busy it removes
  bytes at a constant rate, so the bytes still cached at time t are
  ``(drain_end - t) * rate``.  A Flush waits for ``drain_end`` when the cache is *volatile*
  (Identify Controller VWC bit 0, NVMe 1.4 section 5.15.2) and enabled (Set Features 06h
  Volatile Write Cache, section 5.21.1.6); with it disabled writes are write-through
  (complete at their drain end).  A non-volatile cache (the PM1733 reports VWC 0: its write
  buffer is power-loss protected) keeps completing writes from the cache and its Flush
  returns at once (section 6.8: a Flush commits what a volatile cache holds).

Not modelled: program/erase suspension and read-program interference on a die (writes reach
the dies only as the drain rate), garbage collection and write amplification, SLC caching,
thermal throttling, multi-plane operations.  Parameter values are in models/_cost.py, with
their sources; ``media_spec`` picks the physical (``nvme_flash_*``) or emulated
(``qemu_nvme_*``) set.
"""

from __future__ import annotations

import random

import attrs

from sim import PS_PER_S

from ._cost import CostModel


@attrs.frozen(kw_only=True)
class MediaSpec:
    """The media geometry and timing of one namespace (picked from the cost model by ``media_spec``)."""

    #: parallel units (flash dies / AIO workers) and the channels (buses) they sit on
    units: int
    channels: int
    #: striping unit in bytes (the flash page): unit = (byte offset // page_bytes) % units
    page_bytes: int
    #: one sense (read) of a page: base and exponential-tail mean, ps
    read_ps: int
    read_tail_ps: int
    #: one channel's transfer rate, bytes/s
    channel_bytes_per_s: int
    #: one write's insert into the cache: base and exponential-tail mean, ps
    write_ps: int
    write_tail_ps: int
    #: the cache's drain to the media, bytes/s, and its capacity in bytes
    drain_bytes_per_s: int
    cache_bytes: int
    #: the cache loses data on power loss (Identify VWC bit 0): Flush must wait for the drain
    volatile: bool
    #: a die's page register serves a re-read of the page it last sensed
    sense_cache: bool


def media_spec(cost: CostModel, *, emulated: bool, volatile: bool) -> MediaSpec:
    """The media of a physical SSD (``nvme_flash_*``) or of QEMU's emulated NVMe (``qemu_nvme_*``)."""
    if emulated:
        workers = cost.qemu_nvme_aio_workers
        return MediaSpec(units=workers, channels=workers, page_bytes=4096,
                         read_ps=cost.qemu_nvme_aio_read_ps, read_tail_ps=cost.qemu_nvme_aio_read_tail_ps,
                         channel_bytes_per_s=cost.qemu_nvme_copy_bytes_per_s,
                         write_ps=cost.qemu_nvme_aio_write_ps, write_tail_ps=cost.qemu_nvme_aio_write_tail_ps,
                         drain_bytes_per_s=cost.qemu_nvme_writeback_bytes_per_s,
                         cache_bytes=cost.qemu_nvme_dirty_bytes, volatile=volatile, sense_cache=False)
    channels = cost.nvme_flash_channels
    return MediaSpec(units=channels * cost.nvme_flash_dies_per_channel, channels=channels,
                     page_bytes=cost.nvme_flash_page_bytes,
                     read_ps=cost.nvme_flash_read_ps, read_tail_ps=cost.nvme_flash_read_tail_ps,
                     channel_bytes_per_s=cost.nvme_flash_channel_bytes_per_s,
                     write_ps=cost.nvme_cache_write_ps, write_tail_ps=cost.nvme_cache_write_tail_ps,
                     drain_bytes_per_s=cost.nvme_flash_program_bytes_per_s,
                     cache_bytes=cost.nvme_write_cache_bytes, volatile=volatile, sense_cache=True)


@attrs.frozen
class MediaStats:
    """Counters of one namespace's media at one instant (``NvmeMedia.statistics()``)."""

    #: page senses done, and page reads the die's page register served without one
    senses: int
    sense_hits: int
    #: writes inserted into the cache; of those, writes that waited for room, and the total wait (ps)
    cache_writes: int
    cache_full_waits: int
    cache_wait_ps: int
    #: Flush commands, and the total time they waited for the drain (ps)
    flushes: int
    flush_wait_ps: int


class NvmeMedia:
    """The dies, channels and write cache of one namespace: each call reserves them and returns
    the absolute time (ps) the operation is done; the caller sleeps until then."""

    def __init__(self, spec: MediaSpec, rng: random.Random) -> None:
        self.spec = spec
        self._rng = rng
        self._die_free = [0] * spec.units
        self._die_page = [-1] * spec.units
        self._chan_free = [0] * spec.channels
        #: when every byte admitted to the cache is on the media
        self._drain_end = 0
        self._n = dict.fromkeys(("senses", "hits", "writes", "full", "cache_wait", "flushes", "flush_wait"), 0)

    def __repr__(self) -> str:
        s = self.spec
        return f"<NvmeMedia {s.units} units / {s.channels} channels, cache {s.cache_bytes} B, drain end {self._drain_end}>"

    def statistics(self) -> MediaStats:
        n = self._n
        return MediaStats(n["senses"], n["hits"], n["writes"], n["full"], n["cache_wait"], n["flushes"],
                          n["flush_wait"])

    def _sample(self, base: int, tail: int) -> int:
        """``base + Exp(mean=tail)`` in whole picoseconds."""
        return base + int(self._rng.expovariate(1.0 / tail)) if tail else base

    def _pages(self, offset: int, nbytes: int) -> list[tuple[int, int]]:
        """(page index, bytes of the range in it) for the byte range [offset, offset + nbytes)."""
        pb = self.spec.page_bytes
        out = []
        end = offset + nbytes
        while offset < end:
            page = offset // pb
            upto = min(end, (page + 1) * pb)
            out.append((page, upto - offset))
            offset = upto
        return out

    def read(self, now: int, offset: int, nbytes: int) -> int:
        """Reserve the senses and transfers of a read of ``nbytes`` at byte ``offset``; when its data is in."""
        spec = self.spec
        done = now
        for page, n in self._pages(offset, nbytes):
            die = page % spec.units
            if spec.sense_cache and self._die_page[die] == page:
                sensed = max(now, self._die_free[die])  # the register holds it once that sense ends
                self._n["hits"] += 1
            else:
                sensed = max(now, self._die_free[die]) + self._sample(spec.read_ps, spec.read_tail_ps)
                self._die_free[die] = sensed
                self._die_page[die] = page
                self._n["senses"] += 1
            chan = die % spec.channels
            end = max(sensed, self._chan_free[chan]) + -(-n * PS_PER_S // spec.channel_bytes_per_s)
            self._chan_free[chan] = end
            done = max(done, end)
        return done

    def write(self, now: int, offset: int, nbytes: int, *, cache_enabled: bool) -> int:
        """Admit a write of ``nbytes`` at byte ``offset`` to the cache; when the command may complete
        (in the cache, or on the media when a volatile cache is disabled)."""
        spec = self.spec
        rate = spec.drain_bytes_per_s
        if spec.sense_cache:
            for page, _ in self._pages(offset, nbytes):
                die = page % spec.units
                if self._die_page[die] == page:
                    self._die_page[die] = -1
        # room for nbytes once the cached bytes (drain_end - t) * rate <= cache_bytes - nbytes
        room_ps = max(0, spec.cache_bytes - nbytes) * PS_PER_S // rate
        admit = max(now, self._drain_end - room_ps)
        if admit > now:
            self._n["full"] += 1
            self._n["cache_wait"] += admit - now
        self._n["writes"] += 1
        inserted = admit + self._sample(spec.write_ps, spec.write_tail_ps)
        # the drain takes the bytes from their admission on: it stays busy from now to drain_end
        self._drain_end = max(admit, self._drain_end) + -(-nbytes * PS_PER_S // rate)
        if spec.volatile and not cache_enabled:
            return max(inserted, self._drain_end)  # write-through: complete when on the media
        return inserted

    def flush(self, now: int, *, cache_enabled: bool) -> int:
        """When a Flush at ``now`` completes: once a volatile, enabled cache has drained."""
        self._n["flushes"] += 1
        if not (self.spec.volatile and cache_enabled) or self._drain_end <= now:
            return now
        self._n["flush_wait"] += self._drain_end - now
        return self._drain_end
