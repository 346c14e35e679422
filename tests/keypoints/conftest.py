from pathlib import Path

import pytest

# The shared fixtures live beside the repository: <repo>/../shared/fixtures.
_FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures"


@pytest.fixture(scope="session")
def shared_fixtures() -> Path:
    if not _FIXTURES.is_dir():
        pytest.skip("shared fixtures (../shared/fixtures) not available")
    return _FIXTURES


@pytest.fixture(scope="session")
def udp_fixture(shared_fixtures: Path) -> dict:
    case = shared_fixtures / "udp_codec"
    if not (case / "input.safetensors").is_file():
        pytest.skip("udp_codec fixture not available")
    from safetensors.numpy import load_file

    return {
        "input": load_file(str(case / "input.safetensors")),
        "expected": load_file(str(case / "expected.safetensors")),
    }
