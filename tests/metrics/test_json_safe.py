import json
import math

import numpy as np
import pytest

from synthmed.metrics.json_safe import json_safe


def test_non_finite_numbers_become_null_and_numpy_scalars_plain():
    doc = json_safe({"p": float("nan"), "hd": [1.5, math.inf, np.float32(-np.inf)], "n": np.int64(3), "ok": (0.5, "x")})
    assert doc == {"p": None, "hd": [1.5, None, None], "n": 3, "ok": [0.5, "x"]}
    text = json.dumps(doc)
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} written")) == doc
