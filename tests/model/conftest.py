import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """transformers' common tests compare eager and SDPA attention in fp32, fp16 and bf16. On CPU the
    half-precision variants test PyTorch's emulated kernels, not this model, and take most of the
    mixin's time: they run with `-m slow` (see modeling_gmaivl/README.md)."""
    for item in items:
        half = "_fp16_" in item.name or "_bf16_" in item.name
        if "test_transformers_common" in item.nodeid and "eager_matches_sdpa" in item.name and half:
            item.add_marker(pytest.mark.slow)
