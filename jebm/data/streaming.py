"""Training batches streamed from a random-access source through grain, for data too large to
hold in memory.

``stream(source, ...)`` yields exactly the batches of ``jebm.data.batches`` over the same
examples: batch k's indices are the same pure function of (seed, k) (``batch_indices``), so a run
resumed at ``start_step`` (the step its orbax checkpoint stores) sees the batches an uninterrupted
run would, and the processes of a multi-process run read disjoint shards of each global batch.
grain (``grain.MapDataset`` over the batch numbers, read in threads, optionally in worker
processes) does the reading and prefetching; only the batches in flight are in memory, whatever
the size of the dataset.
"""

import functools
from typing import Callable, Dict, Iterator, Optional, Sequence

import grain
import jax
from absl import flags
import numpy as np

from jebm.data.loading import stack_records
from jebm.data.pipeline import batch_indices

_ENDLESS = 2**62  # batch numbers: grain's range needs an end


def read_batch(
  source,
  step: int,
  *,
  batch_size: int,
  seed: int,
  process_index: int,
  process_count: int,
  keys: Sequence[str] = ("image", "label"),
  transform: Optional[Callable[[Dict], Dict]] = None,
) -> Dict[str, np.ndarray]:
  """This process's part of global batch ``step`` (the examples ``batch_indices`` picks), read
  from ``source``; the arguments are ``stream``'s.

  Returns:
    {key: [B, ...] numpy} stacked from the records (each passed through ``transform`` first, if
    given); "label" as int32 (float condition vectors as they are), zeros when the records have none.

  Raises:
    DataError: records whose arrays differ in shape (images of varying size).
  """
  ids = batch_indices(
    len(source),
    batch_size,
    step,
    seed=seed,
    process_index=process_index,
    process_count=process_count,
  )
  get_many = getattr(source, "__getitems__", None)
  records = get_many([int(i) for i in ids]) if get_many else [source[int(i)] for i in ids]
  if transform is not None:
    records = [transform(r) for r in records]
  batch = {k: stack_records(records, k) for k in keys if k in records[0]}
  if "label" in keys and "label" not in batch:
    batch["label"] = np.zeros((len(records),), np.int32)
  elif np.issubdtype(batch["label"].dtype, np.integer):
    batch["label"] = batch["label"].astype(np.int32)
  return batch


def stream(
  source,
  batch_size: int,
  *,
  seed: int,
  start_step: int = 0,
  num_workers: int = 0,
  num_threads: int = 2,
  prefetch: int = 4,
  process_index: Optional[int] = None,
  process_count: Optional[int] = None,
  keys: Sequence[str] = ("image", "label"),
  transform: Optional[Callable[[Dict], Dict]] = None,
) -> Iterator[Dict[str, np.ndarray]]:
  """Endless stream of batches from a random-access source, read by grain.

  Args:
    source: a sequence of record dicts with ``len`` and ``[i]`` (``__getitems__`` is used when
      present), e.g. ``jebm.data.load(name, "train")`` (a ``tfds`` data source over ArrayRecord).
    batch_size: per-process batch size B (the global batch is B * process_count).
    seed: non-negative int; epoch e is shuffled from (seed, e), as in ``jebm.data.batches``.
    start_step: the first global batch (to resume: the number of batches consumed).
    num_workers: grain worker processes that read and transform batches (0: in this process).
    num_threads, prefetch: grain's reading threads and prefetch buffer (in batches).
    process_index, process_count: default to jax.process_index() / jax.process_count().
    keys: record keys to keep.
    transform: optional per-record function run where the records are read (e.g. decoding or
      augmentation); it must be picklable when ``num_workers`` > 0.

  Yields:
    dicts {key: [B, ...] numpy}, batch k (k >= start_step) equal to ``jebm.data.batches``'s
    batch k over ``source`` read into arrays.

  Raises:
    ValueError: a global batch larger than the source.
  """
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  # Batch indices now, so that a global batch larger than the source fails here, not in grain.
  batch_indices(
    len(source),
    batch_size,
    start_step,
    seed=seed,
    process_index=process_index,
    process_count=process_count,
  )
  read = functools.partial(
    read_batch,
    source,
    batch_size=batch_size,
    seed=seed,
    process_index=process_index,
    process_count=process_count,
    keys=tuple(keys),
    transform=transform,
  )
  dataset = grain.MapDataset.range(start_step, _ENDLESS).map(read)
  options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)
  batches = dataset.to_iter_dataset(options)
  if num_workers:
    if not flags.FLAGS.is_parsed():  # grain's workers read its absl flags: outside an absl app,
      flags.FLAGS.mark_as_parsed()  # (a notebook) they keep their defaults
    batches = batches.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  return iter(batches)
