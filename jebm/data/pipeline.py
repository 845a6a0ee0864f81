"""Host-side batching of in-memory arrays, and the paper's dequantisation.

Batch k of the stream from `batches` is a pure function of (seed, k) and the data size: epoch
e = k // steps_per_epoch is shuffled by a permutation drawn from ``np.random.default_rng([seed,
e])``, and the global batch (``batch_size * process_count`` examples) is split into
``process_count`` contiguous slices, one per process. So a resumed run (``start_step=k``) sees
exactly the batches the uninterrupted run would have, and hosts never overlap.
"""

import jax
import jax.numpy as jnp
import numpy as np


def steps_per_epoch(num_examples, global_batch_size, drop_remainder=True):
  """Number of global batches per epoch: floor (drop_remainder) or ceil of N / global batch."""
  if drop_remainder:
    return num_examples // global_batch_size
  return -(-num_examples // global_batch_size)


def epoch_permutation(num_examples, seed, epoch, shuffle=True):
  """The example order of one epoch: int64 [num_examples], a pure function of (seed, epoch)."""
  if not shuffle:
    return np.arange(num_examples)
  return np.random.default_rng([seed, epoch]).permutation(num_examples)


def batch_indices(
  num_examples,
  batch_size,
  step,
  *,
  seed,
  shuffle=True,
  drop_remainder=True,
  process_index=0,
  process_count=1,
):
  """Example indices of this process's part of global batch `step`.

  Args:
    num_examples: N, the size of the data.
    batch_size: per-process batch size B; the global batch has B * process_count examples.
    step: global batch number k >= 0, counted from the start of epoch 0.
    seed: non-negative int.
    shuffle: reshuffle every epoch (else the natural order every epoch).
    drop_remainder: drop each epoch's last incomplete global batch; if False, that batch is
      split as evenly as possible across processes (so its shape varies: for evaluation).
    process_index, process_count: this process and the number of processes.

  Returns:
    int64 [B] indices (fewer only in a kept remainder batch).
  """
  global_batch = batch_size * process_count
  per_epoch = steps_per_epoch(num_examples, global_batch, drop_remainder)
  if per_epoch == 0:
    raise ValueError(
      f"Global batch {global_batch} (= {batch_size} x {process_count} processes)"
      f" exceeds the {num_examples} examples with drop_remainder=True"
    )
  epoch, within = divmod(step, per_epoch)
  order = epoch_permutation(num_examples, seed, epoch, shuffle)
  global_ids = order[within * global_batch : (within + 1) * global_batch]
  return np.array_split(global_ids, process_count)[process_index]


def batches(
  data,
  batch_size,
  *,
  seed,
  num_epochs=None,
  shuffle=True,
  drop_remainder=True,
  process_index=None,
  process_count=None,
  start_step=0,
):
  """Iterates over batches of in-memory arrays, deterministically and resumably.

  Args:
    data: dict of numpy arrays sharing the leading size N, e.g. `jebm.data.arrays(...)`:
      ``{"image": [N, H, W, C] uint8, "label": [N] int32}``.
    batch_size: per-process batch size B (the global batch is B * process_count).
    seed: non-negative int; epoch e is shuffled from (seed, e).
    num_epochs: stop after this many epochs (counted from step 0), or None for an endless stream.
    shuffle: reshuffle every epoch.
    drop_remainder: see `batch_indices`.
    process_index, process_count: default to jax.process_index() / jax.process_count().
    start_step: the first global batch to yield (to resume: the number of batches consumed).

  Yields:
    dicts with the keys of `data`, each [B, ...] (a numpy copy); batch k (k >= start_step) is
    the same whatever `start_step` was.
  """
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  num_examples = _num_examples(data)
  per_epoch = steps_per_epoch(num_examples, batch_size * process_count, drop_remainder)
  end = None if num_epochs is None else num_epochs * per_epoch
  step = start_step
  while end is None or step < end:
    ids = batch_indices(
      num_examples,
      batch_size,
      step,
      seed=seed,
      shuffle=shuffle,
      drop_remainder=drop_remainder,
      process_index=process_index,
      process_count=process_count,
    )
    yield {k: v[ids] for k, v in data.items()}
    step += 1


def _num_examples(data):
  sizes = {len(v) for v in data.values()}
  if len(sizes) != 1:
    raise ValueError(f"Arrays in `data` have different leading sizes {sorted(sizes)}")
  return sizes.pop()


def dequantize(rng_key, images):
  """The paper's dequantisation: (x + u) / 256 with u ~ U[0, 1), i.e. x/255 * 255/256 + U(0, 1/256).

  Args:
    rng_key: a jax PRNG key.
    images: uint8 (or integer-valued) array of any shape, e.g. [B, H, W, C], values 0..255.

  Returns:
    float32 array of the same shape in [0, 1]; |result - images/255| <= 1/255. Jit-able.
  """
  noise = jax.random.uniform(rng_key, jnp.shape(images), dtype=jnp.float32)
  return (jnp.asarray(images, jnp.float32) + noise) / 256.0


def random_crop(rng_key, images, pad):
  """Each image [B, H, W, C] cropped at a random offset from its ``pad``-pixel zero padding, i.e.
  translated by up to ±pad pixels per axis, the uncovered border zero. Jit-able."""
  if pad == 0:
    return images
  _, height, width, channels = images.shape
  padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  offsets = jax.random.randint(rng_key, (images.shape[0], 2), 0, 2 * pad + 1)
  crop = lambda image, o: jax.lax.dynamic_slice(image, (o[0], o[1], 0), (height, width, channels))
  return jax.vmap(crop)(padded, offsets)


def crop_flip(rng_key, images, pad=4):
  """The usual CIFAR augmentation: ``random_crop`` with ``pad``, then a left-right flip of each
  image with probability 1/2. images [B, H, W, C] -> same shape and dtype. Jit-able."""
  crop_key, flip_key = jax.random.split(rng_key)
  images = random_crop(crop_key, images, pad)
  flip = jax.random.bernoulli(flip_key, 0.5, (images.shape[0], 1, 1, 1))
  return jnp.where(flip, images[:, :, ::-1, :], images)


def to_float(images):
  """uint8 images -> float32 images / 255 in [0, 1], same shape, no noise. Jit-able."""
  return jnp.asarray(images, jnp.float32) / 255.0
