"""The one workaround lava-nc 0.10.0 needs on Python 3.11, kept in this one place.

lava-nc 0.10.0 declares Requires-Python <3.11. On 3.11 it installs with --ignore-requires-python (scripts/setup.sh)
but fails at import: Python 3.11's dataclasses reject an unhashable default, and
lava/magma/compiler/var_model.py declares fields as `x: ByteEncoder = ByteEncoder()`. Replacing each such default
with `field(default_factory=ByteEncoder)` is all it takes; LIF/Dense networks then run on Loihi1SimCfg and
Loihi2SimCfg, floating and fixed point. Idempotent: a patched file is left alone.
"""
import importlib.util
import pathlib
import re
import sys


def main() -> int:
    spec = importlib.util.find_spec("lava")
    if spec is None or not spec.submodule_search_locations:
        print("lava-nc is not installed; nothing to fix", file=sys.stderr)
        return 1
    path = pathlib.Path(list(spec.submodule_search_locations)[0]) / "magma" / "compiler" / "var_model.py"
    text = path.read_text()
    fixed = re.sub(r"(:\s*ByteEncoder\s*=\s*)ByteEncoder\(\)", r"\1field(default_factory=ByteEncoder)", text)
    if fixed != text:
        # `field` joins the module's own dataclasses import (a new first line would precede `from __future__`).
        fixed = re.sub(r"^from dataclasses import dataclass, InitVar$", "from dataclasses import dataclass, InitVar, field",
                       fixed, count=1, flags=re.M)
        path.write_text(fixed)
        print(f"patched {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
