"""The README's example runs as it is, against the daemon (found through
JUNCTION_UNIX, as a user's would be through the default path)."""

import os
import pathlib
import re
import subprocess
import sys

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def test_the_readme_example_runs(target):
    text = README.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks, "no python example in README.md"
    example = blocks[0]
    assert len(example.strip().splitlines()) <= 12
    env = dict(os.environ, JUNCTION_UNIX=target.unix)
    done = subprocess.run([sys.executable, "-c", example], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["pong", "5", "build.done {'ok': True}"], done.stdout
