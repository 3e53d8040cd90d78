"""replay echoes each request's fields as the input wrote them: hex stays hex, decimal stays decimal."""

from __future__ import annotations

from pathlib import Path

import pytest

from viommu_sim.cli import main

ATTACH = '{"op": "attach", "domain": 1, "endpoint": 16}\n'


def replay(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str], name: str = "in.jsonl") -> list[str]:
    path = tmp_path / name
    path.write_text(text)
    assert main(["replay", str(path)]) == 0
    return capsys.readouterr().out.splitlines()


def test_replay_echoes_hex_fields_as_the_input_spelt_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A JSON Lines field given as "0x1000" prints as "0x1000"; one given as a number (or a decimal
    string, or absent) prints as a number."""
    out = replay(tmp_path, ATTACH + '{"op": "map", "domain": 1, "virt_start": "0x1000", "virt_end": 8191, '
                 '"phys_start": "0X00A0000", "flags": "3"}\n', capsys)
    assert out[1] == ('{"op": "map", "domain": 1, "endpoint": 0, "virt_start": "0x1000", "virt_end": 8191, '
                      '"phys_start": "0X00A0000", "flags": 3, "status": "OK", "status_code": 0}')


def test_replay_of_decimal_input_prints_as_before(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Decimal input gives the same bytes as replay always printed: JSON numbers."""
    out = replay(tmp_path, ATTACH + '{"op": "map", "domain": 1, "virt_start": 4096, "virt_end": 8191, '
                 '"phys_start": 655360, "flags": 3}\n', capsys)
    assert out == [
        '{"op": "attach", "domain": 1, "endpoint": 16, "virt_start": 0, "virt_end": 0, "phys_start": 0, "flags": 0, '
        '"status": "OK", "status_code": 0}',
        '{"op": "map", "domain": 1, "endpoint": 0, "virt_start": 4096, "virt_end": 8191, "phys_start": 655360, '
        '"flags": 3, "status": "OK", "status_code": 0}',
    ]


def test_replay_of_a_qemu_log_echoes_its_hex_addresses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """QEMU's trace prints addresses as 0x...: they are echoed so, its %d fields as numbers."""
    out = replay(tmp_path, "4242@1700000000.000001:virtio_iommu_attach domain=1 endpoint=16\n"
                 "4242@1700000000.000002:virtio_iommu_map domain=1 virt_start=0x1000 virt_end=0x1fff "
                 "phys_start=0xa0000 flags=3\n", capsys, "qemu.log")
    assert out[1] == ('{"op": "map", "domain": 1, "endpoint": 0, "virt_start": "0x1000", "virt_end": "0x1fff", '
                      '"phys_start": "0xa0000", "flags": 3, "status": "OK", "status_code": 0}')
