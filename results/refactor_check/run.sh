#!/bin/bash
# usage: run.sh REPO OUT [after]  -- short runs of every experiment; metrics to OUT/metrics.json
# "after": the tree with --warmup fractions, so the ViT's old warm-up epochs are passed as
# fractions of these 2-epoch runs (0.5 epoch = 0.25 for fast, 1 epoch = 0.5 for best).
set -e
REPO=$1; OUT=$2; D=$HOME/.cache/jaxhw-data
PY=${PY:-python}
FAST=""; BEST=""
if [ "$3" = after ]; then FAST="--warmup 0.25"; BEST="--warmup 0.5"; fi
cd $REPO; export PYTHONPATH=$REPO
C="--compile-cache off"
$PY -m experiments.cifar_simple_cnn --data-dir $D --train-limit 4000 --test-limit 1000 --epochs 1 --checkpoint-dir $OUT/simple $C > $OUT/simple.log 2>&1
$PY -m experiments.cifar_inception --data-dir $D --train-limit 1024 --test-limit 500 --epochs 2 --checkpoint-dir $OUT/incep $C > $OUT/incep.log 2>&1
$PY -m experiments.cifar_inception --preset gpu --data-dir $D --train-limit 2048 --test-limit 300 --epochs 2 --widths 16,16,16 --batch-size 256 --seeds 2 --checkpoint-dir $OUT/gpu $C > $OUT/gpu.log 2>&1
$PY -m experiments.vit_fashion_mnist --preset fast --data-dir $D --train-limit 4000 --test-limit 1000 --epochs 2 $FAST --checkpoint-dir $OUT/vitfast $C > $OUT/vitfast.log 2>&1
$PY -m experiments.vit_fashion_mnist --data-dir $D --train-limit 4000 --test-limit 1000 --epochs 2 $BEST --embed-dim 32 --depth 2 --checkpoint-dir $OUT/vitbest $C > $OUT/vitbest.log 2>&1
$PY -m experiments.transformer_toy --task reverse --train-limit 4000 --test-limit 500 --epochs 1 --checkpoint-dir $OUT/reverse $C > $OUT/reverse.log 2>&1
$PY -m experiments.transformer_toy --preset small --steps 5 --checkpoint-dir $OUT/demo $C > $OUT/demo.log 2>&1
$PY -m experiments.bert_imdb --model minilm --data-dir $D --train-limit 256 --val-limit 64 --test-limit 128 --epochs 1 --max-len 64 --checkpoint-dir $OUT/bert $C > $OUT/bert.log 2>&1
$PY - $OUT <<'PYEOF'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1]); m = {}
for p in sorted(out.glob("*/results.json")) + sorted(out.glob("*/seed_*/results.json")):
    r = json.loads(p.read_text())
    keep = {k: r[k] for k in ("test_accuracy", "test_loss", "exact_sequence_accuracy", "losses", "mean_accuracy") if k in r}
    keep["history"] = [{k: h[k] for k in ("train_loss", "eval_loss", "eval_accuracy")} for h in r.get("history", [])]
    m[str(p.relative_to(out))] = keep
(out / "metrics.json").write_text(json.dumps(m, indent=1))
print(json.dumps(m)[:3000])
PYEOF
