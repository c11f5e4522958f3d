"""KV transports: KV keeps its dtype on the way; shared-memory segments carry their owner's prefix,
are unlinked by whoever reads or discards them, and `sweep` clears what a dead owner left; no
resource-tracker warnings when one process creates and another unlinks."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from wattserve.runtime.transport import (  # noqa: E402
    ShmTransport,
    live_segments,
    make_transport,
    owner_prefix,
    server_prefix,
    sweep,
    transport_for,
)

pytestmark = pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="needs /dev/shm (Linux)")


def kv(dtype: torch.dtype) -> torch.Tensor:
    return torch.randn(2, 2, 5, 2, 4, generator=torch.Generator().manual_seed(0)).to(dtype)


@pytest.fixture
def prefix() -> str:
    p = owner_prefix(os.getpid(), 900 + os.getpid() % 97)
    yield p
    sweep(p)


@pytest.mark.parametrize("name", ["shm", "tcp"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float16])
def test_kv_round_trips_in_its_own_dtype(name: str, dtype: torch.dtype, prefix: str) -> None:
    t = make_transport(name, prefix)
    x = kv(dtype)
    handle, payload = t.put(x)
    assert handle["dtype"] == str(dtype).removeprefix("torch.")
    if name == "tcp":
        assert payload == b"" and {"host", "port", "key"} <= set(handle)
    else:
        assert payload == b"" and handle["name"].startswith(prefix) and live_segments(prefix) == [handle["name"]]
    y = transport_for(handle).get(handle, payload)
    assert y.dtype == dtype and torch.equal(y, x)
    assert live_segments(prefix) == []


def test_discard_unlinks_and_tolerates_a_missing_segment(prefix: str) -> None:
    t = ShmTransport(prefix)
    h1, _ = t.put(kv(torch.bfloat16))
    h2, _ = t.put(kv(torch.bfloat16))
    assert h1["name"] != h2["name"] and len(live_segments(prefix)) == 2
    transport_for(h1).discard(h1)
    transport_for(h1).discard(h1)
    assert live_segments(prefix) == [h2["name"]]
    assert sweep(prefix, keep={h2["name"]}) == [] and live_segments(prefix) == [h2["name"]]
    assert sweep(prefix) == [h2["name"]] and live_segments(prefix) == []
    transport_for(h2).discard(h2)


def test_sweep_takes_only_its_owners_segments(prefix: str) -> None:
    other = prefix[:-1] + "0-"
    mine, theirs = ShmTransport(prefix), ShmTransport(other)
    mine.put(kv(torch.float32))
    h, _ = theirs.put(kv(torch.float32))
    try:
        assert len(sweep(prefix)) == 1 and live_segments(prefix) == [] and live_segments(other) == [h["name"]]
    finally:
        sweep(other)
    assert owner_prefix(12, 3).startswith(server_prefix(12)) and not owner_prefix(123, 3).startswith(server_prefix(12))


def test_no_resource_tracker_warnings_across_processes(prefix: str) -> None:
    """A segment created in one process and read in another: neither tracker complains or unlinks
    twice; one never read is swept when its creator exits."""
    code = textwrap.dedent(f"""
        import json, subprocess, sys, torch
        from wattserve.runtime.transport import ShmTransport
        h, _ = ShmTransport({prefix!r}).put(torch.ones(3, dtype=torch.bfloat16))
        h2, _ = ShmTransport({prefix!r}).put(torch.ones(3))
        ShmTransport({prefix!r}).put(torch.ones(2))
        reader = "import json, sys; from wattserve.runtime.transport import transport_for; "
        reader += "h, h2 = json.loads(sys.argv[1]); print(transport_for(h).get(h, b'').sum().item()); "
        reader += "transport_for(h2).discard(h2)"
        r = subprocess.run([sys.executable, "-c", reader, json.dumps([h, h2])], capture_output=True, text=True)
        sys.stdout.write(r.stdout)
        sys.stderr.write(r.stderr)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "3.0"
    assert "resource_tracker" not in r.stderr and "leaked" not in r.stderr, r.stderr
    assert live_segments(prefix) == []


def test_a_worker_killed_holding_segments_leaves_its_server_no_tracker_warning(prefix: str, tmp_path: Path) -> None:
    """A server's workers share the server's resource tracker. A worker killed while it holds a
    segment it created and one it attached to must leave no registration behind: the server sweeps
    the segments, and a registered one would make the tracker warn of a "leaked" segment at exit."""
    code = textwrap.dedent(f"""
        import multiprocessing as mp, os, signal, sys
        from wattserve.runtime.transport import sweep

        def worker(prefix, ready):
            from wattserve.runtime.shm_segment import Segment
            Segment(prefix + "0", create=True, size=64)
            other = Segment(prefix + "1")
            ready.send(other.name)
            signal.pause()

        if __name__ == "__main__":
            from wattserve.runtime.shm_segment import Segment
            Segment({prefix!r} + "1", create=True, size=64).close()
            ctx = mp.get_context("spawn")
            a, b = ctx.Pipe(duplex=False)
            p = ctx.Process(target=worker, args=({prefix!r}, b))
            p.start()
            a.recv()
            os.kill(p.pid, signal.SIGKILL)
            p.join()
            print(len(sweep({prefix!r})))
    """)
    script = tmp_path / "killed_worker.py"
    script.write_text(code)
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "2"
    assert "resource_tracker" not in r.stderr and "leaked" not in r.stderr, r.stderr
    assert live_segments(prefix) == []


def test_tcp_kv_is_pulled_once_from_its_owner_and_never_rides_the_handle() -> None:
    """The pull model: the handle (what the router carries) is a few hundred bytes of JSON whatever
    the KV's size; the receiver pulls the bytes from the owner's store, once."""
    import json

    t = make_transport("tcp")
    x = torch.randn(2, 4, 64, 2, 16, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    handle, payload = t.put(x)
    assert payload == b"" and len(json.dumps(handle)) < 300 < x.numel() * x.element_size()
    assert torch.equal(transport_for(handle).get(handle, b""), x)
    with pytest.raises(KeyError, match="pulled, dropped or expired"):
        transport_for(handle).get(handle, b"")
    t.close()


def test_unpulled_kv_expires() -> None:
    import time

    from wattserve.runtime.kv_store import KvStore

    store = KvStore(ttl_s=0.01)
    first = store.put(b"abc")
    time.sleep(0.05)
    store.put(b"def")
    assert store.take(first) is None
    assert len(store) == 1
    store.close()
