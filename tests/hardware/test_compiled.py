import numpy as np
import pytest

from hardware.compiled import copy_into, kernel, wrapped_angle32


def test_kernel_compiles_where_no_cache_directory_can_be_found():
    # source without a file (as in a frozen or read-only install) has no cache locator: compile in memory
    namespace: dict = {}
    exec("def twice(x):\n    return 2.0 * x\n", namespace)
    assert kernel(namespace["twice"])(1.5) == 3.0


def test_wrapped_angle_keeps_cos_and_sin_of_many_turns():
    angles = np.array([0.3, np.pi - 1e-3, -7.0, 1000.0 + 0.25, -12345.6])
    wrapped = np.array([wrapped_angle32(a) for a in angles], dtype=np.float32)
    assert (np.abs(wrapped) <= np.float32(np.pi)).all()
    np.testing.assert_allclose(np.cos(wrapped), np.cos(angles), atol=1e-6)
    np.testing.assert_allclose(np.sin(wrapped), np.sin(angles), atol=1e-6)


def test_copy_into_casts_and_refuses_a_shape_mismatch():
    out = np.zeros((2, 3), dtype=np.float32)
    copy_into(np.arange(6.0).reshape(2, 3), out)
    assert out.tolist() == [[0, 1, 2], [3, 4, 5]]
    with pytest.raises(ValueError, match="shape"):
        copy_into(np.zeros((2, 2)), out)
