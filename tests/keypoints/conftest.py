from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def udp_fixture(shared: Path) -> dict:
    """The reference UDP codec golden tensors (``shared`` skips when ../shared is absent)."""
    case = shared / "fixtures" / "udp_codec"
    if not (case / "input.safetensors").is_file():
        pytest.skip("udp_codec fixture not available")
    from safetensors.numpy import load_file

    return {
        "input": load_file(str(case / "input.safetensors")),
        "expected": load_file(str(case / "expected.safetensors")),
    }
