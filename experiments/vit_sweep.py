"""Part 1-3: a hyperparameter study of the ViT on Fashion-MNIST.

    python -m experiments.vit_sweep --data-dir ~/.cache/jaxhw-data

Trains a small base ViT and one variant per hyperparameter (patch size, embed dim, depth,
heads, MLP ratio), everything else fixed, with the same recipe and epoch budget. Writes
``table.md``, ``results.json`` and ``sweep.png`` (accuracy vs parameters and vs training
time, and the learning curves) to ``--out``; each setting's checkpoints and plots go to
``--checkpoint-dir``/<setting>. With ``--resume``, settings already finished in
``--out`` are kept and skipped. The committed study is ``results/vit_sweep``; to refresh it,
pass ``--out results/vit_sweep`` (the default writes under ``checkpoints/``, so a quick try
never overwrites it).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from jaxhw import cli, config
from jaxhw.config import Items, flag
from jaxhw.experiment import MAX_SEED, EngineConfig, check_batch
from jaxhw.files import read_json
from jaxhw.train import write_json
from jaxhw.train.divergence import Diverged, SeedsDiverged

from experiments import vit_fashion_mnist

BASE = dict(patch_size=7, embed_dim=64, depth=4, num_heads=4, mlp_ratio=2.0)
SETTINGS = {  # name -> what differs from BASE
    "base": {},
    "patch4": dict(patch_size=4),
    "dim128": dict(embed_dim=128),
    "depth8": dict(depth=8),
    "heads1": dict(num_heads=1),
    "mlp4": dict(mlp_ratio=4.0),
}


@dataclasses.dataclass
class Config(EngineConfig):
    data_dir: str | None = flag(None, "local dataset directory (else $JAXHW_DATA_DIR, else TFDS)")
    out: str = flag("checkpoints/vit_sweep_results", "folder for table.md, results.json and "
                                                     "sweep.png (the committed study is in "
                                                     "results/vit_sweep)")
    checkpoint_dir: str = flag("checkpoints/vit_sweep", "each setting's checkpoints and plots "
                                                        "go to <checkpoint-dir>/<setting>")
    only: str = flag("", "the settings to run", items=Items(names=tuple(SETTINGS),
                                                             allow_empty=True))
    epochs: int = flag(3, "epochs per setting (the same for all)", ge=1)
    lr: float = flag(3e-3, "peak AdamW learning rate (the same for all)", gt=0)
    batch_size: int = flag(128, "images per step (the same for all)", ge=1)
    resume: bool = flag(False, "keep and skip settings already finished in --out")
    seed: int = flag(0, "seed of every setting", ge=0, le=MAX_SEED)
    train_limit: int = flag(0, "train on a random subset of this many images (0 = all)", ge=0)
    test_limit: int = flag(0, "evaluate on a random subset of this many images (0 = all)",
                           ge=0)

    def rules(self) -> None:
        super().rules()
        check_batch(self, "fashion_mnist")


def _row(name: str, r: dict) -> dict:
    cfg = r["config"]
    return {"setting": name, **{k: cfg[k] for k in BASE}, "parameters": r["parameters"],
            "test_accuracy": r["test_accuracy"], "train_time_s": r["train_time_s"],
            "curve": [h["eval_accuracy"] for h in r["history"]]}


def write_table(rows: list[dict], path: Path) -> None:
    lines = ["| setting | patch | dim | depth | heads | mlp | parameters | test accuracy | train time |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['setting']} | {r['patch_size']} | {r['embed_dim']} | {r['depth']} | "
                     f"{r['num_heads']} | {r['mlp_ratio']:g} | {r['parameters']:,} | "
                     f"{100 * r['test_accuracy']:.2f} % | {r['train_time_s']:.0f} s |")
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> None:
    cfg = config.parse(Config, __doc__, argv)
    names = [n for n in cfg.only.split(",") if n] or list(SETTINGS)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    done = {}
    if cfg.resume and (out / "results.json").is_file():
        kept = read_json(out / "results.json", "delete it to run every setting again")
        done = {r["setting"]: r for r in kept if "test_accuracy" in r}
    rows, diverged = [], []
    for name in names:
        if name in done:
            print(f"== {name}: kept from {out / 'results.json'}")
            rows.append(done[name])
            continue
        run_cfg = vit_fashion_mnist.Config(
            **{**BASE, **SETTINGS[name]}, epochs=cfg.epochs, lr=cfg.lr, seed=cfg.seed,
            batch_size=cfg.batch_size, warmup=0.5 / cfg.epochs, tta=False,  # as committed:
            # half an epoch of warm-up, no flip averaging
            weight_decay=0.05,
            data_dir=cfg.data_dir, checkpoint_dir=f"{cfg.checkpoint_dir}/{name}", overwrite=True,
            train_limit=cfg.train_limit, test_limit=cfg.test_limit,
            **{f.name: getattr(cfg, f.name) for f in dataclasses.fields(EngineConfig)})
        print(f"== {name}: {SETTINGS[name] or 'the base setting'}")
        try:
            rows.append(_row(name, vit_fashion_mnist.run(run_cfg, name=f"vit_sweep/{name}")))
        except Diverged as e:  # reported; the other settings go on
            print(f"== {name}: {e}")
            diverged.append(name)
            continue
        write_json(out / "results.json", rows)  # after every setting: an interruption loses one
    if not rows:
        raise SeedsDiverged(f"diverged: every setting ({', '.join(diverged)}); see their lines "
                            f"above")
    write_table(rows, out / "table.md")
    from jaxhw.plotting import plot_sweep
    plot_sweep(rows, out / "sweep.png")
    print((out / "table.md").read_text())
    print(f"written: {out / 'table.md'}, {out / 'results.json'}, {out / 'sweep.png'}")
    if diverged:
        raise SeedsDiverged(f"diverged: setting{'s' if len(diverged) > 1 else ''} "
                            f"{', '.join(diverged)} (their lines above say where and what to "
                            f"try); the table holds the others")


if __name__ == "__main__":
    cli.run(main)
