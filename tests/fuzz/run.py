"""Coverage-guided fuzzing of the batch handler with atheris (libFuzzer's engine).

``python -m tests.fuzz.run -runs=100000 NEW_INPUTS_DIR tests/fuzz/corpus``: the
cityvitals modules are instrumented as they are imported, so the engine sees which
branches an input reaches and keeps the inputs that reach new ones.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["streams", "detectors"]):
    from tests.fuzz.batch import test_one_input


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
