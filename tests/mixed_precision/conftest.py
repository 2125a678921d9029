"""Every mixed-precision test starts and ends with the float32 policy."""

import keras
import pytest


@pytest.fixture(autouse=True)
def _float32_policy():
    keras.config.set_dtype_policy("float32")
    yield
    keras.config.set_dtype_policy("float32")
