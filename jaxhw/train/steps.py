"""Jit-compiled train and eval steps, built from a model, a loss and an optax optimizer.

Data convention: a dataset on the device is a dict ``{"x": inputs, "y": labels}`` (``x``
may be a tuple of arrays for models with several inputs); a step cuts its batch out of it
by index, so no batch ever crosses from host to device.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxhw.config import ConfigError
from jaxhw.data.pipeline import GRID_RADIUS, GRID_SHIFTS, grid_view, pad_images, tta_views
from jaxhw.train.lookahead import Lookahead
from jaxhw.train.loss_scale import all_finite, keep_if
from jaxhw.train.parallel import DATA_AXIS, batch_sharded, replicated
from jaxhw.train.state import TrainState

# preprocess(key, x, train, step=None) -> model inputs: normalisation and (when train)
# augmentation; training steps pass their step number (an epoch-dependent augmentation
# such as alternating flips needs it), other callers do not.
Preprocess = Callable[..., Any]
# loss(logits, labels, mask) -> (sum of per-example losses, sum of weights).
LossFn = Callable[[jax.Array, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]


def identity_preprocess(key: jax.Array, x: Any, train: bool, step: Any = None) -> Any:
    del key, train, step
    return x


def classification_loss(label_smoothing: float = 0.0) -> LossFn:
    """Softmax cross-entropy on ``[B, C]`` logits and ``[B]`` int labels, with optional
    label smoothing; ``mask`` ``[B]`` weights the examples (0 for padding)."""

    def loss(logits, labels, mask):
        targets = jax.nn.one_hot(labels, logits.shape[-1])
        if label_smoothing:
            targets = optax.smooth_labels(targets, label_smoothing)
        per_example = optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)
        return jnp.sum(per_example * mask), jnp.sum(mask)

    return loss


def sequence_loss(pad_id: int = 0) -> LossFn:
    """Token-level cross-entropy on ``[B, L, V]`` logits and ``[B, L]`` labels, ignoring
    label ``pad_id``; ``mask`` ``[B]`` weights whole sequences (0 for padding rows)."""

    def loss(logits, labels, mask):
        weights = (labels != pad_id).astype(jnp.float32) * mask[:, None]
        per_token = optax.softmax_cross_entropy_with_integer_labels(
            logits.astype(jnp.float32), labels)
        return jnp.sum(per_token * weights), jnp.sum(weights)

    return loss


def _apply(model: nn.Module, variables: dict, x: Any, train: bool, dropout_key=None):
    """Run the model; returns (logits, new batch_stats or {})."""
    args = x if isinstance(x, tuple) else (x,)
    if train and "batch_stats" in variables:
        logits, updates = model.apply(variables, *args, train=True,
                                      rngs={"dropout": dropout_key}, mutable=["batch_stats"])
        return logits, updates["batch_stats"]
    rngs = {"dropout": dropout_key} if train else {}
    return model.apply(variables, *args, train=train, rngs=rngs), variables.get("batch_stats", {})


def _take(data: dict, idx: jax.Array, mesh: Mesh) -> dict:
    batch = jax.tree.map(lambda a: jnp.take(a, idx, axis=0), data)
    return jax.lax.with_sharding_constraint(batch, batch_sharded(mesh))


def per_device_gradients(model: nn.Module, mesh: Mesh) -> bool:
    """Whether the train step computes each device's gradient under ``shard_map`` and sums
    them in float32 itself: on several devices with a 16-bit compute dtype. There, XLA's
    partitioner would all-reduce the weight gradients' dots in their own 16-bit type
    before the cast to the float32 parameters (NCCL sums float16 and bfloat16 in that
    type); in float32 the partitioned step already sums float32."""
    return mesh.size > 1 and jnp.dtype(getattr(model, "dtype", jnp.float32)).itemsize < 4


def sync_batch_norm(model: nn.Module) -> nn.Module:
    """``model`` with every batch norm averaging its statistics over the ``data`` mesh axis
    (for steps under ``shard_map``), through the ``norm`` layer it is given; a model with
    no ``norm`` field is returned as it is."""
    if not hasattr(model, "norm"):
        return model
    return model.clone(norm=functools.partial(model.norm, axis_name=DATA_AXIS))


def _micro_batches(tree: Any, n: int, constrain: Callable[[Any], Any]) -> Any:
    """``[n * B, ...]`` rows as ``n`` micro-batches ``[n, B, ...]`` (micro-batch ``k``: rows
    ``k, n + k, 2n + k, ...``, so each keeps the rows' split over the devices)."""
    def split(a):
        a = a.reshape(a.shape[0] // n, n, *a.shape[1:])
        return jnp.swapaxes(a, 0, 1)
    return constrain(jax.tree.map(split, tree))


def _gradients(model: nn.Module, loss_fn: LossFn, mesh: Mesh, accumulate: int = 1):
    """``(params, variables, x, y, dropout_key, scaler) -> (loss, batch_stats, grads)``: the
    mean loss of the batch ``x``, ``y`` and its gradient (of the scaled loss, with a
    ``scaler``; float32 like the parameters).

    With ``accumulate`` > 1 the batch is cut into that many micro-batches, differentiated
    one after the other in a ``lax.scan`` (the memory of one micro-batch) and their float32
    gradients summed, each weighted by its share of the batch's loss weight: one optimizer
    update then follows, as for the whole batch at once.

    The batch is one partitioned program or, where :func:`per_device_gradients`,
    ``shard_map`` over the rows: each device differentiates its own rows, and the float32
    gradients are summed with ``psum``. Each device then draws its own dropout masks and
    batch norms average their statistics over the devices (:func:`sync_batch_norm`)."""
    per_device = per_device_gradients(model, mesh)
    if per_device:
        model = sync_batch_norm(model)

    def micro(params, variables, x, y, key, scaler):
        """One micro-batch: its loss sum and weight, batch stats and the mean's gradient."""
        def loss_of(params):
            logits, batch_stats = _apply(model, {**variables, "params": params}, x, True, key)
            total, count = loss_fn(logits, y, jnp.ones(y.shape[0], jnp.float32))
            loss = total / count
            return (loss if scaler is None else scaler.scale_loss(loss)), (total, count,
                                                                           batch_stats)

        (_, (total, count, batch_stats)), grads = jax.value_and_grad(
            loss_of, has_aux=True)(params)
        return total, count, batch_stats, grads

    def summed(params, variables, x, y, key, scaler, constrain):
        """The micro-batches' loss sum, weight, batch stats and weight-times-gradient."""
        f32 = lambda g: g.astype(jnp.float32)  # noqa: E731

        def add(carry, inputs):
            total, count, batch_stats, grads = carry
            k, xk, yk = inputs
            kk = jax.random.fold_in(key, k) if accumulate > 1 else key
            t, c, batch_stats, g = micro(params, {**variables, "batch_stats": batch_stats},
                                         xk, yk, kk, scaler)
            grads = jax.tree.map(lambda a, b: a + c * f32(b), grads, g)
            return (total + t, count + c, batch_stats, grads), None

        zero = jnp.zeros((), jnp.float32)
        start = (zero, zero, variables.get("batch_stats", {}),
                 jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params))
        inputs = (jnp.arange(accumulate), _micro_batches(x, accumulate, constrain),
                  _micro_batches(y, accumulate, constrain))
        return jax.lax.scan(add, start, inputs)[0]

    rows = NamedSharding(mesh, P(None, DATA_AXIS))  # [micro-batch, rows of it, ...]
    on_rows = lambda t: jax.lax.with_sharding_constraint(t, rows)  # noqa: E731

    def whole(params, variables, x, y, key, scaler):
        if accumulate == 1:  # the batch's mean and its gradient, no scan
            total, count, batch_stats, grads = micro(params, variables, x, y, key, scaler)
            return total / count, batch_stats, grads
        total, count, batch_stats, grads = summed(params, variables, x, y, key, scaler,
                                                  on_rows)
        return total / count, batch_stats, jax.tree.map(lambda g: g / count, grads)

    if not per_device:
        return whole

    def per_device_fn(params, variables, x, y, dropout_key, scaler):
        if variables.get("batch_stats") and not hasattr(model, "norm"):
            raise ConfigError(f"{type(model).__name__} has batch norms but no `norm` field, so "
                              f"they cannot average over devices; train it on one device or "
                              f"in float32")
        key = jax.random.fold_in(dropout_key, jax.lax.axis_index(DATA_AXIS))
        total, count, batch_stats, grads = summed(params, variables, x, y, key, scaler,
                                                  lambda t: t)
        total, count, grads = jax.lax.psum((total, count, grads), DATA_AXIS)
        return total / count, batch_stats, jax.tree.map(lambda g: g / count, grads)

    # check_vma=False: gradients stay per device until the psum above (with JAX's
    # replication typing, it would sum each weight's gradient where the weight meets the
    # rows, in the compute dtype).
    split = P(DATA_AXIS)
    return jax.shard_map(per_device_fn, mesh=mesh, in_specs=(P(), P(), split, split, P(), P()),
                         out_specs=(P(), P(), P()), check_vma=False)


def _step_fn(model: nn.Module, tx: optax.GradientTransformation, loss_fn: LossFn, mesh: Mesh,
             preprocess: Preprocess, lookahead: Lookahead | None = None, accumulate: int = 1):
    """The pure optimizer step ``(state, data, idx [B]) -> (state, loss)`` on the examples
    ``idx`` of ``data`` (``accumulate`` micro-batches of them, see :func:`_gradients`),
    followed by ``lookahead``'s weight averaging when given."""
    gradients = _gradients(model, loss_fn, mesh, accumulate)

    def step(state: TrainState, data: dict, idx: jax.Array):
        batch = _take(data, idx, mesh)
        aug_key, dropout_key = jax.random.split(jax.random.fold_in(state.rng, state.step))
        x = preprocess(aug_key, batch["x"], True, step=state.step)
        scaler = state.loss_scale  # float16: the loss is scaled, the gradients unscaled
        variables = {k: v for k, v in state.variables().items() if k != "params"}
        loss, batch_stats, grads = gradients(state.params, variables, x, batch["y"],
                                             dropout_key, scaler)
        if scaler is not None:
            grads = scaler.unscale(grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        new_state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                                  batch_stats=batch_stats, opt_state=opt_state)
        if scaler is not None:  # a step with a non-finite gradient changes nothing but the scale
            finite = all_finite(grads)
            kept = keep_if(finite, (new_state.params, new_state.batch_stats, new_state.opt_state),
                           (state.params, state.batch_stats, state.opt_state))
            new_state = new_state.replace(params=kept[0], batch_stats=kept[1], opt_state=kept[2],
                                          loss_scale=scaler.adjust(finite))
        if lookahead is not None:
            new_state = lookahead(new_state)
        return new_state, loss.astype(jnp.float32)

    return step


def make_train_step(model: nn.Module, tx: optax.GradientTransformation, loss_fn: LossFn,
                    mesh: Mesh, preprocess: Preprocess = identity_preprocess,
                    compiler_options: dict[str, str] | None = None,
                    lookahead: Lookahead | None = None, accumulate: int = 1):
    """``step(state, data, batches, i) -> (state, loss)``: one optimizer step on batch
    ``batches[i]`` (indices into ``data``; ``accumulate`` micro-batches of its rows, see
    :func:`_gradients`). The old state's buffers are donated.
    ``compiler_options`` go to ``jax.jit`` (e.g. ``jaxhw.train.xla_options.cpu_conv_options``)."""
    body = _step_fn(model, tx, loss_fn, mesh, preprocess, lookahead, accumulate)

    def step(state: TrainState, data: dict, batches: jax.Array, i: jax.Array):
        return body(state, data, batches[i])

    return jax.jit(step, donate_argnums=0, compiler_options=compiler_options)


def make_train_steps(model: nn.Module, tx: optax.GradientTransformation, loss_fn: LossFn,
                     mesh: Mesh, preprocess: Preprocess = identity_preprocess,
                     compiler_options: dict[str, str] | None = None, block: int = 1,
                     lookahead: Lookahead | None = None, accumulate: int = 1):
    """``steps(state, data, batches, start, valid) -> (state, losses [block])``: the
    optimizer steps on batches ``batches[start]``, ..., ``batches[start + valid - 1]`` in
    one device call, as a plain ``lax.scan`` of ``block`` slots; the slots from ``valid``
    on keep the state as it was (a select, no conditional) and their losses mean nothing.

    One call per block instead of one per step keeps a fast device busy when steps are
    short (the host's dispatch of each call then costs more than the step). There is no
    conditional in the loop, because a GPU evaluates a conditional's predicate on the
    host, a round trip per step; masking the last call's unused slots lets every call of a
    run share one program (see :func:`jaxhw.train.loop.plan_calls`). The steps are the
    ones :func:`make_train_step` takes, in the same order with the same keys. The old
    state's buffers are donated."""
    if block < 1:
        raise ValueError(f"block must be at least 1, got {block}")
    body = _step_fn(model, tx, loss_fn, mesh, preprocess, lookahead, accumulate)

    def steps(state: TrainState, data: dict, batches: jax.Array, start: jax.Array,
              valid: jax.Array):
        if block == 1:  # no loop at all (XLA's CPU backend runs loop bodies slower)
            state, loss = body(state, data, batches[start])
            return state, loss[None]

        def slot(s, k):
            new, loss = body(s, data, batches[jnp.minimum(start + k, len(batches) - 1)])
            keep = k < valid  # a masked slot leaves the state as it was
            return jax.tree.map(lambda a, b: jnp.where(keep, a, b), new, s), loss

        return jax.lax.scan(slot, state, jnp.arange(block))

    return jax.jit(steps, donate_argnums=0, compiler_options=compiler_options)


def eval_logits(model: nn.Module, variables: dict, x: Any, tta: int = 0) -> jax.Array:
    """The model's logits at evaluation on preprocessed inputs ``x`` (with ``tta`` > 0, the
    weighted mean over the test-time views, as float32)."""
    if tta == 3:
        return _grid_logits(model, variables, x)
    if tta:  # every view in one forward pass of [views * B, ...]
        views = tta_views(x, tta)
        logits = _apply(model, variables, jnp.concatenate([v for _, v in views]), False)[0]
        logits = logits.astype(jnp.float32).reshape(len(views), x.shape[0], -1)
        weights = jnp.asarray([w for w, _ in views], jnp.float32)
        return jnp.einsum("v,vbc->bc", weights, logits)
    return _apply(model, variables, x, False)[0]


def _grid_logits(model: nn.Module, variables: dict, x: jax.Array) -> jax.Array:
    """Level 3 of :func:`jaxhw.data.pipeline.tta_views` (50 views of ``[B, H, W, C]``), as a
    loop over the 25 shifts, each forward pass on a shift and its mirror (``[2B, ...]``):
    one forward pass in the program instead of 50, so it compiles as fast as level 1."""
    r, b = GRID_RADIUS, x.shape[0]
    padded = pad_images(x, r)

    def add(total: jax.Array, k: jax.Array):
        view = grid_view(padded, k, r)
        logits = _apply(model, variables, jnp.concatenate([view, view[:, :, ::-1]]),
                        False)[0].astype(jnp.float32)
        return total + logits[:b] + logits[b:], None

    first = jax.eval_shape(lambda v: _apply(model, variables, v, False)[0], x)
    total, _ = jax.lax.scan(add, jnp.zeros(first.shape, jnp.float32), jnp.arange(GRID_SHIFTS))
    return total / (2 * GRID_SHIFTS)


def make_eval_step(model: nn.Module, loss_fn: LossFn, mesh: Mesh,
                   preprocess: Preprocess = identity_preprocess, tta: int = 0,
                   compiler_options: dict[str, str] | None = None):
    """``step(state, batch, mask) -> (loss_sum, count, predictions)`` on a batch
    ``{"x", "y"}`` of ``[B, ...]`` rows (not the whole split, so that every split of the
    same example shape shares one compiled program), where the predictions are the argmax
    of the logits (``[B]`` for a classifier, ``[B, L]`` per token). ``tta`` > 0 averages
    the logits of several views of each image (:func:`jaxhw.data.pipeline.tta_views`:
    1 = the image and its mirror, 2 = also 1-pixel translations, 3 = every shift of up to
    2 pixels and its mirror); ``compiler_options`` go
    to ``jax.jit``."""

    def step(state: TrainState, batch: dict, mask: jax.Array):
        batch = jax.lax.with_sharding_constraint(batch, batch_sharded(mesh))
        x = preprocess(jax.random.key(0), batch["x"], False)
        logits = eval_logits(model, state.variables(), x, tta)
        total, count = loss_fn(logits, batch["y"], mask)
        # Replicated, so every host can read all predictions (an all-gather of [B] ints).
        return total, count, jax.lax.with_sharding_constraint(jnp.argmax(logits, axis=-1),
                                                              replicated(mesh))

    return jax.jit(step, compiler_options=compiler_options)
