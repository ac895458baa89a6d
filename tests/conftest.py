import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# No persistent compilation cache in the test session: twice on 2026-12-03 a full run segfaulted inside
# JAX's cache write (``executable.serialize()`` in compilation_cache.put_executable_and_time, during
# tests/test_verify.py) after ~280 tests, though the same tests pass alone; without the cache nothing
# is serialised. The cache itself is measured by ``jaxrepair bench cold``.
os.environ.setdefault("JAXREPAIR_NO_COMPILE_CACHE", "1")

import jax  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _release_compiled_programs():
    """Drops JAX's compiled programs after every test module. A full run keeps hundreds of XLA
    executables alive, each with its own code mappings; on 2026-12-03 the full suite segfaulted
    three times inside XLA (compiling or serialising a program in tests/test_verify.py, ~280 tests
    in) while every module passed alone. Within a module programs are still shared (trace counts
    are asserted there)."""
    yield
    import gc

    jax.clear_caches()
    gc.collect()


@pytest.fixture(scope="session")
def key():
    return jax.random.key(0)


#: The modules that take longest (measured 2026-12-03, 2-core CPU), run first: with ``-n auto
#: --dist loadfile`` each module goes to one worker, and a long module started last leaves the
#: other workers idle while it finishes.
LONGEST_FIRST = ("test_readme.py", "test_nsga.py", "test_verify.py", "test_scale.py", "test_sweep_ray.py",
                 "test_spurious.py", "test_repair.py", "test_suite.py", "test_suite_acasxu.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order
