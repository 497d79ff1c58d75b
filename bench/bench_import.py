"""How long `%load_ext peft_magic` takes, as a ratio to `import peft` (issue: lazy imports).

Each measurement runs in a fresh interpreter (imports are cached per process) and times
only the step itself: the IPython shell is created first, then `%load_ext peft_magic` is
timed; in a separate fresh interpreter `import peft` is timed. Alternating the two, N
times each, keeps machine noise from favouring either side.
"""

from __future__ import annotations

import subprocess
import sys

from _results import median, write_section

LOAD_EXT = r"""
import time, sys
from IPython.testing.globalipapp import start_ipython
ip = start_ipython()
t = time.perf_counter()
ip.run_line_magic("load_ext", "peft_magic")
dt = time.perf_counter() - t
assert not any(m in sys.modules for m in ("torch", "transformers", "peft"))
print(dt)
"""

IMPORT_PEFT = r"""
import time
t = time.perf_counter()
import peft
print(time.perf_counter() - t)
"""


def run(code: str) -> float:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(n: int = 7) -> None:
    ext, peft = [], []
    for _ in range(n):
        ext.append(run(LOAD_EXT))
        peft.append(run(IMPORT_PEFT))
    m_ext, m_peft = median(ext), median(peft)
    body = (
        "## `%load_ext peft_magic` vs `import peft`\n\n"
        f"| step | median (s), n={n} |\n|---|---|\n"
        f"| `%load_ext peft_magic` | {m_ext:.4f} |\n| `import peft` | {m_peft:.3f} |\n\n"
        f"Ratio load_ext / import peft: **{m_ext / m_peft:.4f}** ({m_peft / m_ext:.0f}× faster); "
        "torch, transformers and peft are not imported by `%load_ext`."
    )
    write_section("import", body)
    print(body)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 7)
