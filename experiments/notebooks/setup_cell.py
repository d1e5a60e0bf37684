# Setup (the same cell in every notebook; its source is experiments/notebooks/setup_cell.py).
# Finds the jaxhw clone (the current folder, a parent, or ./jaxhw after an earlier run or a
# kernel restart) or clones REPO_URL; then installs only the packages this Python lacks or
# has in a version jaxhw cannot use, from the clone's pyproject.toml. jax and numpy stay as
# they are (Colab's jax has CUDA), and so do TensorFlow and TFDS.
import importlib.metadata, os, subprocess, sys, tempfile, tomllib
from pathlib import Path

from packaging.requirements import Requirement


def find_clone() -> Path | None:
    here = Path.cwd().resolve()
    for folder in (here, *here.parents, here / "jaxhw"):
        if (folder / "jaxhw" / "__init__.py").is_file() and (folder / "pyproject.toml").is_file():
            return folder
    return None


def missing(requirements: list[str]) -> list[str]:
    out = []
    for text in requirements:
        req = Requirement(text)
        try:
            have = importlib.metadata.version(req.name)
        except importlib.metadata.PackageNotFoundError:
            out.append(text)
            continue
        if req.specifier and not req.specifier.contains(have, prereleases=True):
            out.append(text)
    return out


repo = find_clone()
if repo is None:
    if not REPO_URL:
        raise RuntimeError(
            "This notebook is not inside a jaxhw clone. Set REPO_URL in the parameters cell "
            "to the git address of your copy (for example "
            "'https://github.com/<your-account>/jaxhw.git'), or open the notebook from a clone.")
    subprocess.run(["git", "clone", "-q", REPO_URL, "jaxhw"], check=True)
    repo = Path("jaxhw").resolve()
os.chdir(repo)
if str(repo) not in sys.path:
    sys.path.insert(0, str(repo))  # jaxhw and experiments from the clone, not installed

KEEP = ("jax", "numpy")  # never replaced when present: the runtime's own builds
deps = tomllib.loads((repo / "pyproject.toml").read_text())["project"]["dependencies"]
install = missing([d for d in deps if Requirement(d).name not in KEEP])
for d in deps:
    if Requirement(d).name in KEEP and missing([d]):
        try:  # present but outside the tested range: keep it, and say so
            have = importlib.metadata.version(Requirement(d).name)
            print(f"note: keeping {Requirement(d).name} {have} (jaxhw is tested with {d})")
        except importlib.metadata.PackageNotFoundError:
            install.append(d)  # not Colab: a Python without jax gets the CPU build
if install:
    print("installing:", " ".join(install))
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as pins:
        for name in (*KEEP, "jaxlib"):  # pip may not move these to satisfy the others
            try:
                pins.write(f"{name}=={importlib.metadata.version(name)}\n")
            except importlib.metadata.PackageNotFoundError:
                pass
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", *install, "-c", pins.name],
                   check=True)
    importlib.invalidate_caches()

import jax
import jaxhw
print(f"jaxhw from {Path(jaxhw.__file__).parent}; jax {jax.__version__} on {jax.devices()}")
