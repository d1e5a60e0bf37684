# Setup (the same cell in every notebook; its source is experiments/notebooks/setup_cell.py).
# Finds the jaxhw clone (the current folder, a parent, or ./jaxhw after an earlier run or a
# kernel restart) or clones REPO_URL; then installs only the packages this Python lacks or
# has in a version jaxhw cannot use, from the clone's pyproject.toml. jax and numpy stay as
# they are (Colab's jax has CUDA), and so do TensorFlow and TFDS, except a jax older than
# jaxhw's range, which is replaced by jax[cuda12] inside it.
import importlib.metadata, os, shutil, subprocess, sys, tempfile, tomllib
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

KEEP = ("jax", "numpy")  # kept when present: the runtime's own builds (Colab's jax has CUDA)


def installed(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def older_than(have: str, req: Requirement) -> bool:
    """``have`` lies below one of ``req``'s lower bounds."""
    return any(not spec.contains(have, prereleases=True)
               for spec in req.specifier if spec.operator in (">=", ">"))


def plan(deps: list[str]) -> tuple[list[str], list[str]]:
    """(what pip installs, what it must leave as it is). A jax older than jaxhw's range is
    replaced by a jax[cuda12] inside it (before anything imports jax); a newer one, and
    numpy in any version, stays, with a note."""
    install = missing([d for d in deps if Requirement(d).name not in KEEP])
    pinned = []
    for d in deps:
        req = Requirement(d)
        have = installed(req.name)
        if req.name not in KEEP:
            continue
        if have is None:
            install.append(d)  # not Colab: a Python without jax gets the CPU build
        elif not missing([d]):
            pinned.append(req.name)
        elif req.name == "jax" and older_than(have, req):
            extra = "[cuda12]" if shutil.which("nvidia-smi") else ""
            print(f"replacing jax {have}, older than jaxhw's range ({req.specifier}), with "
                  f"jax{extra}{req.specifier}")
            install.append(f"jax{extra}{req.specifier}")
        else:
            print(f"note: keeping {req.name} {have} (jaxhw is tested with {d})")
            pinned.append(req.name)
    if "jax" in pinned:
        pinned.append("jaxlib")
    return install, pinned


deps = tomllib.loads((repo / "pyproject.toml").read_text())["project"]["dependencies"]
install, pinned = plan(deps)
if "jax" in sys.modules and any(d.startswith("jax") for d in install):
    raise RuntimeError("jax is already imported in this kernel, so it cannot be replaced: "
                       "restart the kernel (Runtime > Restart session) and run this cell first")
if install:
    print("installing:", " ".join(install))
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as pins:
        for name in pinned:  # pip may not move these to satisfy the others
            if installed(name):
                pins.write(f"{name}=={installed(name)}\n")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", *install, "-c", pins.name],
                   check=True)
    importlib.invalidate_caches()

import jax
import jaxhw
print(f"jaxhw from {Path(jaxhw.__file__).parent}; jax {jax.__version__} on {jax.devices()}")
