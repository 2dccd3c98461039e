"""``import sparseformer as sf`` gives every part, ``sf.hf`` included, without importing transformers."""

import subprocess
import sys


def test_sf_hf_without_a_separate_import():
    code = (
        "import sys; import sparseformer as sf; "
        "assert 'sparseformer.hf' not in sys.modules; "
        "f = sf.hf.sparsify; assert callable(f) and sf.hf.__name__ == 'sparseformer.hf'; "
        "assert 'transformers' not in sys.modules; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_unknown_attribute_names_itself():
    import pytest

    import sparseformer as sf

    with pytest.raises(AttributeError, match="no_such_part"):
        sf.no_such_part  # noqa: B018


def test_native_kernel_builds_where_a_compiler_is():
    """On Linux with a C++ compiler the native kernel must build: the kernel, ONNX Runtime and
    ExecuTorch op tests skip without it, and a broken build must fail the suite, not skip them."""
    import os
    import shutil

    import pytest

    from sparseformer.kernels import cpu

    if not sys.platform.startswith("linux") or shutil.which(os.environ.get("CXX", "c++")) is None:
        pytest.skip("no C++ compiler on Linux here: the native kernel is optional")
    assert cpu.is_available(), cpu.unavailable_reason()
