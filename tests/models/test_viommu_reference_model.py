"""Random request streams against a small, independent reference model (plain dicts and lists)."""

from hypothesis import given, settings
from hypothesis import strategies as st

from models import MachineConfig
from models._viommu import VirtioIommu
from models._viommu_wire import AttachReq, DetachReq, MapReq, UnmapReq
from sim import Simulator

MANAGED = (0x20, 0xFA, 0xFB)
ENDPOINTS = (0x20, 0xFA, 0xFB, 0x28, 0x100FA)  # 0x28: no such function; 0x100FA: high bits set, names no function
MSI_START, MSI_END = 0xFEE00000, 0xFEEFFFFF
OK, INVAL, RANGE, NOENT = 0, 4, 5, 6


class Reference:
    """The device's rules restated over plain data, one flavour at a time."""

    def __init__(self, flavor: str) -> None:
        self.spec = flavor == "spec"
        self.eps: dict[int, int | None] = {}  # endpoint record -> its domain
        self.doms: dict[int, dict] = {}  # domain -> {"bypass", "maps": [(s, e, p, f)], "members": [ep]}

    def _leave(self, ep: int) -> None:
        d = self.eps[ep]
        if d is not None:
            self.doms[d]["members"].remove(ep)
            self.eps[ep] = None
            if not self.doms[d]["members"]:
                del self.doms[d]

    def attach(self, d: int, ep: int, flags: int, reserved: bytes) -> int:
        if self.spec and reserved != bytes(4):
            return INVAL
        if flags & ~1:
            return INVAL
        bypass = bool(flags & 1)
        if self.spec:
            if ep not in MANAGED:
                return NOENT
            if self.eps.get(ep) == d:
                return OK if self.doms[d]["bypass"] == bypass else INVAL
            if d in self.doms and self.doms[d]["bypass"] != bypass:
                return INVAL
        elif ep not in MANAGED:  # an endpoint id is the exact requester id (issue #17)
            return NOENT
        self.eps.setdefault(ep, None)
        self._leave(ep)
        if d not in self.doms:
            self.doms[d] = {"bypass": bypass, "maps": [], "members": []}
        elif self.doms[d]["bypass"] != bypass:
            return INVAL
        self.doms[d]["members"].append(ep)
        self.eps[ep] = d
        return OK

    def detach(self, d: int, ep: int) -> int:
        if self.spec:
            if ep not in MANAGED:
                return NOENT
            if self.eps.get(ep) != d:
                return INVAL
        else:
            if ep not in self.eps:
                return NOENT
            if self.eps[ep] != d:
                return INVAL
        self._leave(ep)
        del self.eps[ep]
        return OK

    def map(self, d: int, s: int, e: int, p: int, f: int) -> int:
        if f & ~7:
            return INVAL
        if d not in self.doms:
            return NOENT
        dom = self.doms[d]
        if dom["bypass"] or e < s:
            return INVAL
        if self.spec:
            if s % 4096 or p % 4096 or (e + 1) % 4096:
                return RANGE
            if s <= MSI_END and MSI_START <= e:
                return INVAL
        if any(ms <= e and s <= me for ms, me, _, _ in dom["maps"]):
            return INVAL
        dom["maps"].append((s, e, p, f))
        return OK

    def unmap(self, d: int, s: int, e: int) -> int:
        if d not in self.doms:
            return NOENT
        dom = self.doms[d]
        if dom["bypass"]:
            return INVAL
        hit = sorted(m for m in dom["maps"] if m[0] <= e and s <= m[1])
        if self.spec and any(m[0] < s or m[1] > e for m in hit):
            return RANGE
        for m in hit:
            if m[0] < s or m[1] > e:
                return RANGE
            dom["maps"].remove(m)
        return OK


PAGE = 0x1000
bases = st.sampled_from([0, MSI_START - 4 * PAGE])
addresses = st.builds(lambda b, pg, off: b + pg * PAGE + off, bases, st.integers(0, 7),
                      st.sampled_from([0, 0, 0, 0, 0, 0x10]))
sizes = st.builds(lambda n, adj: n * PAGE - 1 + adj, st.integers(-1, 5), st.sampled_from([0, 0, 0, 1, 7]))
domains = st.integers(1, 3)
translating = st.sampled_from([1, 1, 1, 2, 2, 3])
endpoints = st.sampled_from(ENDPOINTS)

attach = st.tuples(st.just("attach"), domains, endpoints, st.sampled_from([0, 0, 0, 1, 2]),
                   st.sampled_from([bytes(4), bytes(4), bytes(4), b"\x01\x00\x00\x00"]))
detach = st.tuples(st.just("detach"), domains, endpoints)
map_ = st.tuples(st.just("map"), translating, addresses, sizes, st.sampled_from([0, 0x10, 0x1000]),
                 st.sampled_from([0, 1, 2, 3, 3, 3, 4, 8]))
unmap = st.tuples(st.just("unmap"), translating, addresses, st.one_of(sizes, st.integers(2, 8).map(lambda n: n * PAGE - 1)))
#: every stream starts with three domains (one bypass) and a few mappings, so most requests reach the deep checks
PREFIX = [
    ("attach", 1, 0xFA, 0, bytes(4)), ("attach", 2, 0xFB, 0, bytes(4)), ("attach", 3, 0x20, 1, bytes(4)),
    ("map", 1, 0x0, PAGE - 1, 0x1000, 3), ("map", 1, PAGE, 2 * PAGE - 1, 0x8000, 1),
    ("map", 1, 4 * PAGE, 2 * PAGE - 1, 0x20000, 2), ("map", 2, 2 * PAGE, 2 * PAGE - 1, 0x40000, 3),
]
streams = st.lists(st.one_of(attach, detach, map_, map_, map_, map_, unmap, unmap, unmap), min_size=1, max_size=40).map(
    lambda ops: PREFIX + ops)


def apply(dev: VirtioIommu, ref: Reference, op: tuple) -> tuple[int | None, int]:
    kind = op[0]
    if kind == "attach":
        _, d, ep, flags, reserved = op
        req = AttachReq(d, ep, flags, reserved)
        expected = ref.attach(d, ep, flags, reserved)
    elif kind == "detach":
        _, d, ep = op
        req = DetachReq(d, ep)
        expected = ref.detach(d, ep)
    elif kind == "map":
        _, d, s, size, p, f = op
        e = max(s + size, 0)
        req = MapReq(d, s, e, p + (s & 0xFFF), f)
        expected = ref.map(d, s, e, p + (s & 0xFFF), f)
    else:
        _, d, s, size = op
        e = max(s + size, 0)
        req = UnmapReq(d, s, e)
        expected = ref.unmap(d, s, e)
    status = dev.process_request(req.pack(), 4).status
    return (None if status is None else int(status)), expected


def state(dev: VirtioIommu) -> tuple:
    doms = {d: (dom.bypass, sorted((m.virt_start, m.virt_end, m.phys_start, m.flags) for m in dom.mappings.values()),
                sorted(ep.id for ep in dom.endpoints))
            for d, dom in dev.domains.items()}
    eps = {ep_id: ep.domain.id if ep.domain else None for ep_id, ep in dev.endpoints.items()}
    return doms, eps


def ref_state(ref: Reference) -> tuple:
    doms = {d: (dom["bypass"], sorted(dom["maps"]), sorted(dom["members"])) for d, dom in ref.doms.items()}
    return doms, dict(ref.eps)


def check(flavor: str, ops: list[tuple]) -> None:
    dev = VirtioIommu(Simulator(), MachineConfig(flavor=flavor), endpoints=MANAGED)
    ref = Reference(flavor)
    for i, op in enumerate(ops):
        got, expected = apply(dev, ref, op)
        assert got == expected, f"request {i} {op}: device {got}, reference {expected}"
    assert state(dev) == ref_state(ref), "final domains/mappings/endpoints differ from the reference"


@settings(max_examples=500, deadline=None, derandomize=True, database=None)
@given(streams)
def test_random_streams_match_the_reference_model_qemu_flavour(ops):
    """Same statuses and same final domains, mappings and endpoint records as the reference (qemu)."""
    check("qemu", ops)


@settings(max_examples=500, deadline=None, derandomize=True, database=None)
@given(streams)
def test_random_streams_match_the_reference_model_spec_flavour(ops):
    """Same statuses and same final domains, mappings and endpoint records as the reference (spec)."""
    check("spec", ops)
