"""The README's examples run as written (and docs/embedding.md's, its longer version)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
EMBEDDING = (ROOT / "docs" / "embedding.md").read_text()  # the README's longer version
BLOCKS = re.findall(r"```python\n(.*?)```", README + EMBEDDING, re.S)


def _block(marker: str) -> str:
    (code,) = [b for b in BLOCKS if marker in b]
    return code


def _prints_what_it_says(call: str) -> None:
    """Run the block that ends with ``print(call)  # expected``; it must print that."""
    code = _block(f"print({call})")
    expected = re.search(re.escape(f"print({call})") + r"\s+# (.*)", code)
    assert expected is not None
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == expected.group(1)


def test_the_taste_prints_what_it_says():
    _prints_what_it_says("mnsched.run(main(), procs=4)")


def test_the_shared_count_loses_nothing_between_two_awaits():
    _prints_what_it_says("mnsched.run(main(), procs=2)")


def test_the_group_example_prints_what_it_says():
    _prints_what_it_says("mnsched.run(main(), procs=3)")


def test_the_starlette_service_serves_through_its_lifespan_runtime():
    from starlette.testclient import TestClient

    namespace: dict[str, object] = {}
    exec(compile(_block("Starlette("), "README.md", "exec"), namespace)
    with TestClient(namespace["app"]) as client:  # runs the lifespan: the runtime starts
        answers = [client.get("/square", params={"n": n}).json() for n in range(5)]
    assert answers == [{"square": n * n} for n in range(5)]


def test_the_per_p_clients_block_defines_one_perp_per_client():
    # Their use against real servers, the documented way, is tests/test_clients.py.
    import mnsched

    namespace: dict[str, object] = {}
    exec(compile(_block("mnsched.PerP(httpx.AsyncClient)"), "README.md", "exec"), namespace)
    perps = [k for k, v in namespace.items() if isinstance(v, mnsched.PerP)]
    assert sorted(perps) == ["cache", "engine", "http", "pools", "sessions"]
