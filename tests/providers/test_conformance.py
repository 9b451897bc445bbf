"""Every provider adapter against its recorded cases (see tests/providers/conformance.py for the format)."""

from __future__ import annotations

import pytest

from tests.providers.conformance import Case, load_cases, replay

CASES = load_cases()


def test_every_provider_has_cases() -> None:
    providers = {case.name.split("/")[0] for case in CASES}
    assert {"openai", "gemini", "azure", "anthropic"} <= providers


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
async def test_conformance(case: Case) -> None:
    await replay(case)
