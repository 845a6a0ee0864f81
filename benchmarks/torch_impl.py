"""PyTorch side of the benchmark; runs only inside the optional torch environment
(benchmarks/setup_torch_env.sh), never imported by jebm or by the jebm side of the benchmark.

``benchmarks/run.py --torch`` starts ``python benchmarks/torch_impl.py`` with that environment's
interpreter and talks to it over stdin/stdout in JSON lines, so that torch and jebm repetitions
can be interleaved round-robin. Requests: {"op": "setup", "workloads": [spec, ...], "weights_dir":
DIR, "extra": bool} -> {"tasks": [...], "energy_check": {...}, "info": {...}}; {"op": "warmup" |
"run", "impl", "workload"} -> {"seconds": s} (warm-up: a 2-step chain); {"op": "quit"}. Replies
are prefixed with "@@" so that anything a library prints is ignored.

The networks are the jebm ones with jebm's float32 weights copied in: ``ConvEnergy`` with 'SAME'
padding (XLA pads strided 'SAME' convolutions more at the bottom/right, so those layers pad
explicitly before an unpadded convolution) and ``MLPEnergy``. Implementations:
  "torch eager NCHW", "torch eager channels_last": a hand-written Langevin loop (IGEBM order:
      noise, gradient at the noisy point, elementwise clip, step, clamp);
  "torch eager channels_last (sym. pad)" (with --extra): the same with torch's own symmetric
      padding=1 in the strided layers: same FLOPs, not the same function (timing reference);
  "torch bf16 autocast": channels_last under ``torch.autocast("cpu", torch.bfloat16)``; the state,
      the gradient and the update stay float32;
  "torchebm": torchebm's ``LangevinDynamics`` (noise_scale chosen so that its
      sqrt(2 * step) * noise_scale equals the workload's noise std) on a ``BaseModel`` whose
      ``gradient`` clips elementwise (torchebm has no clipping option); its step takes the gradient
      before adding the noise, the same work per step.
Training ("torch eager NCHW", "torch eager channels_last", "torch bf16 autocast"): uint8 replay
buffer (5% fresh uniform starts), the chain, CD + L2 loss, and the IGEBM optimiser (per-element
clip to 3 sqrt(nu) + 0.1, then Adam with b1 = 0), as ``jebm.train.make_train_step``.
"""

import contextlib
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def same_padding(size, kernel, stride):
  """(before, after) padding and output size of a 'SAME' convolution, as XLA computes them."""
  out = -(-size // stride)
  pad = max((out - 1) * stride + kernel - size, 0)
  return (pad // 2, pad - pad // 2), out


class ConvEnergyTorch(nn.Module):
  """jebm's ConvEnergy (unconditional, no spectral norm, swish): x [B, C, H, W] -> [B]."""

  def __init__(self, shape, features, symmetric_pad=False):
    super().__init__()
    height, width, channels = shape
    self.convs, self.pads = nn.ModuleList(), []
    sizes = [(channels, features[0], 1)] + [
      (a, b, 2) for a, b in zip([features[0], *features[:-1]], features)
    ]
    for c_in, c_out, stride in sizes:
      (top, bottom), out_h = same_padding(height, 3, stride)
      (left, right), out_w = same_padding(width, 3, stride)
      symmetric = top == bottom and left == right
      pad = top if symmetric else 0
      if symmetric_pad and not symmetric:
        pad, symmetric = 1, True
      self.convs.append(nn.Conv2d(c_in, c_out, 3, stride, padding=pad))
      self.pads.append(None if symmetric else (left, right, top, bottom))
      height, width = out_h, out_w
    self.dense = nn.Linear(features[-1], features[-1])
    self.energy = nn.Linear(features[-1], 1)

  def forward(self, x):
    h = x
    for conv, pad in zip(self.convs, self.pads):
      h = F.silu(conv(h if pad is None else F.pad(h, pad)))
    h = F.silu(self.dense(h.float().mean(dim=(2, 3))))
    return self.energy(h.float())[:, 0].float()

  def load_jax(self, weights):
    """Copies jebm's HWIO kernels / [in, out] dense kernels in."""
    names = ["stem"] + [f"conv_{i}" for i in range(len(self.convs) - 1)]
    with torch.no_grad():
      for conv, name in zip(self.convs, names):
        conv.weight.copy_(torch.from_numpy(weights[f"{name}/kernel"].transpose(3, 2, 0, 1)))
        conv.bias.copy_(torch.from_numpy(weights[f"{name}/bias"]))
      for layer, name in ((self.dense, "dense"), (self.energy, "energy")):
        layer.weight.copy_(torch.from_numpy(weights[f"{name}/kernel"].T))
        layer.bias.copy_(torch.from_numpy(weights[f"{name}/bias"]))
    return self


class MLPEnergyTorch(nn.Module):
  """jebm's MLPEnergy (swish, no spectral norm): x [B, D] -> [B]."""

  def __init__(self, dim, hidden):
    super().__init__()
    widths = [dim, *hidden]
    self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
    self.energy = nn.Linear(widths[-1], 1)

  def forward(self, x):
    h = x
    for layer in self.hidden:
      h = F.silu(layer(h))
    return self.energy(h.float())[:, 0].float()

  def load_jax(self, weights):
    """Copies jebm's [in, out] dense kernels in."""
    names = [f"dense_{i}" for i in range(len(self.hidden))] + ["energy"]
    with torch.no_grad():
      for layer, name in zip([*self.hidden, self.energy], names):
        layer.weight.copy_(torch.from_numpy(weights[f"{name}/kernel"].T))
        layer.bias.copy_(torch.from_numpy(weights[f"{name}/bias"]))
    return self


def build_net(spec, weights, channels_last, symmetric_pad=False):
  """The workload's network with jebm's weights, frozen for sampling."""
  if spec["net"] == "conv":
    net = ConvEnergyTorch(spec["shape"], spec["features"], symmetric_pad).load_jax(weights)
    if channels_last:
      net = net.to(memory_format=torch.channels_last)
  else:
    net = MLPEnergyTorch(spec["shape"][0], spec["hidden"]).load_jax(weights)
  net.requires_grad_(False)
  return net


def to_torch_layout(x_nhwc, spec, channels_last):
  """NHWC numpy/torch images -> [B, C, H, W] torch tensor in the chosen memory format."""
  x = torch.as_tensor(x_nhwc)
  if spec["net"] != "conv":
    return x.contiguous()
  x = x.permute(0, 3, 1, 2)
  layout = torch.channels_last if channels_last else torch.contiguous_format
  return x.contiguous(memory_format=layout)


def autocast(enabled):
  """bf16 autocast on CPU, or nothing."""
  if enabled:
    return torch.autocast("cpu", dtype=torch.bfloat16)
  return contextlib.nullcontext()


def langevin_chain(net, x, spec, bf16=False, num_steps=None):
  """The IGEBM chain: x += noise; g = clip(dE/dx); x = clamp(x - step * g). Returns float32 x.
  ``num_steps`` overrides the workload's (warm-up runs use a short chain)."""
  cfg = spec["langevin"]
  clip, lo, hi = cfg["grad_clip"], cfg["x_min"], cfg["x_max"]
  for _ in range(spec["num_steps"] if num_steps is None else num_steps):
    x = (x + cfg["noise_scale"] * torch.randn_like(x)).requires_grad_(True)
    with autocast(bf16):
      energy = net(x)
    (grad,) = torch.autograd.grad(energy.sum(), x)
    with torch.no_grad():
      if clip is not None:
        grad = grad.clamp_(-clip, clip)
      x = x.detach().sub_(cfg["step_size"] * grad)
      if lo is not None or hi is not None:
        x = x.clamp_(lo, hi)
  return x.detach()


def torchebm_sampler(net, spec):
  """torchebm's LangevinDynamics on ``net``, with elementwise gradient clipping in the model."""
  from torchebm.core import BaseModel
  from torchebm.samplers import LangevinDynamics

  cfg = spec["langevin"]

  class ClippedEnergy(BaseModel):
    """``net`` as a torchebm model whose gradient is clipped elementwise to ±grad_clip."""

    def __init__(self):
      super().__init__()
      self.net = net

    def forward(self, x):
      return self.net(x)

    def gradient(self, x, model_kwargs=None):
      grad = super().gradient(x, model_kwargs)
      return grad if cfg["grad_clip"] is None else grad.clamp_(-cfg["grad_clip"], cfg["grad_clip"])

  clamp = None if cfg["x_min"] is None else (cfg["x_min"], cfg["x_max"])
  noise = cfg["noise_scale"] / math.sqrt(2 * cfg["step_size"])
  sampler = LangevinDynamics(
    ClippedEnergy(), step_size=cfg["step_size"], noise_scale=noise, clamp=clamp
  )
  return lambda x, num_steps=None: sampler.sample(
    x=x, n_steps=spec["num_steps"] if num_steps is None else num_steps
  )


class IgebmAdam:
  """jebm.optim.igebm_adam in torch: clip each element to clip_std * sqrt(nu_hat) + offset, then
  Adam(b1=0, b2) scaled by the learning rate."""

  def __init__(self, params, spec):
    self.params, self.spec, self.count = list(params), spec, 0
    self.clip_nu = [torch.zeros_like(p) for p in self.params]
    self.adam_nu = [torch.zeros_like(p) for p in self.params]

  @torch.no_grad()
  def step(self, grads):
    s, b2 = self.spec, self.spec["adam_b2"]
    correction = max(1.0 - b2**self.count, s["eps"])
    self.count += 1
    for p, g, cnu, anu in zip(self.params, grads, self.clip_nu, self.adam_nu):
      bound = s["clip_std"] * torch.sqrt(cnu / correction) + s["clip_offset"]
      g = torch.maximum(torch.minimum(g, bound), -bound)
      cnu.mul_(b2).add_((1 - b2) * g * g)
      anu.mul_(b2).add_((1 - b2) * g * g)
      nu_hat = anu / (1.0 - b2**self.count)
      p.sub_(s["learning_rate"] * g / (torch.sqrt(nu_hat) + s["eps"]))


class Trainer:
  """One IGEBM training step per call, on a uint8 replay buffer stored NHWC."""

  def __init__(self, spec, weights, channels_last, bf16):
    self.spec, self.channels_last, self.bf16 = spec, channels_last, bf16
    self.net = build_net(spec, weights, channels_last)
    self.opt = IgebmAdam(self.net.parameters(), spec)
    self.buffer = torch.zeros((spec["buffer_capacity"], *spec["shape"]), dtype=torch.uint8)
    self.size = self.position = 0
    self.images = torch.as_tensor(weights["images"])

  def _layout(self, x_nhwc):
    return to_torch_layout(x_nhwc, self.spec, self.channels_last)

  def _chain_starts(self, batch):
    index = torch.randint(0, max(self.size, 1), (batch,))
    fresh = (torch.rand(batch) < self.spec["reinit_prob"]) | (self.size == 0)
    stored = self.buffer[index].float()
    replayed = ((stored + torch.rand_like(stored) - 0.5) / 255.0).clamp_(0.0, 1.0)
    noise = torch.rand_like(replayed)
    return torch.where(fresh.view(-1, 1, 1, 1), noise, replayed)

  def _push(self, x):
    batch, capacity = x.shape[0], self.buffer.shape[0]
    index = (self.position + torch.arange(batch)) % capacity
    nhwc = x.permute(0, 2, 3, 1) if x.dim() == 4 else x
    self.buffer[index] = torch.round(nhwc.clamp(0.0, 1.0) * 255.0).to(torch.uint8)
    self.size, self.position = min(self.size + batch, capacity), (self.position + batch) % capacity

  def step(self, num_steps=None):
    """One training step (``num_steps`` overrides the chain length, for warm-up)."""
    images = self.images.float()
    x_pos = self._layout((images + torch.rand_like(images)) / 256.0)
    x_neg = langevin_chain(
      self.net, self._layout(self._chain_starts(images.shape[0])), self.spec, self.bf16, num_steps
    )
    params = list(self.net.parameters())
    self.net.requires_grad_(True)
    with autocast(self.bf16):
      e_pos, e_neg = self.net(x_pos), self.net(x_neg)
    l2 = self.spec["l2_coeff"]
    loss = e_pos.mean() - e_neg.mean() + l2 * (e_pos.square().mean() + e_neg.square().mean())
    grads = torch.autograd.grad(loss, params)
    self.net.requires_grad_(False)
    self.opt.step(grads)
    self._push(x_neg)
    return float(loss)


SAMPLE_IMPLS = {  # name: (channels_last, bf16, symmetric_pad)
  "torch eager NCHW": (False, False, False),
  "torch eager channels_last": (True, False, False),
  "torch bf16 autocast": (True, True, False),
}
EXTRA_SAMPLE_IMPLS = {"torch eager channels_last (sym. pad)": (True, False, True)}
TRAIN_IMPLS = {
  "torch eager NCHW": (False, False),
  "torch eager channels_last": (True, False),
  "torch bf16 autocast": (True, True),
}


def sample_runner(spec, weights, impl):
  """``run(num_steps=None)`` running one chain of the workload with implementation ``impl``."""
  if spec["net"] == "mlp":
    channels_last, bf16, symmetric = False, False, False
  elif impl == "torchebm":
    channels_last, bf16, symmetric = True, False, False
  else:
    channels_last, bf16, symmetric = {**SAMPLE_IMPLS, **EXTRA_SAMPLE_IMPLS}[impl]
  net = build_net(spec, weights, channels_last, symmetric)
  x0 = to_torch_layout(weights["x0"], spec, channels_last)
  if impl == "torchebm":
    sample = torchebm_sampler(net, spec)
    return lambda num_steps=None: sample(x0, num_steps)
  return lambda num_steps=None: langevin_chain(net, x0, spec, bf16, num_steps)


def impls_for(spec, extra=False):
  """The torch implementations that apply to a workload (``extra``: timing references too)."""
  if spec["kind"] == "train":
    return list(TRAIN_IMPLS)
  if spec["net"] == "mlp":
    return ["torch eager", "torchebm"]
  return [*SAMPLE_IMPLS, *(EXTRA_SAMPLE_IMPLS if extra else {}), "torchebm"]


def energy_check(spec, weights):
  """Max |E_torch - E_jebm| over the chain starts, for NCHW and channels_last float32."""
  out = {}
  for channels_last in (False, True):
    net = build_net(spec, weights, channels_last)
    with torch.no_grad():
      energy = net(to_torch_layout(weights["x0"], spec, channels_last)).numpy()
    error = float(np.abs(energy - weights["jebm_energy"]).max())
    out["channels_last" if channels_last else "NCHW"] = error
  return out


WARMUP_STEPS = 2


def matmul_runner(size):
  """torch's float32 matmul of size x size matrices, for reference next to jax's."""
  a = torch.randn(size, size)
  return lambda: a @ a


class Server:
  """Holds the runners and answers the parent's requests."""

  def __init__(self):
    self.runners, self.specs = {}, {}

  def setup(self, request):
    torch.manual_seed(0)
    tasks, checks = [], {}
    for spec in request["workloads"]:
      weights = dict(np.load(os.path.join(request["weights_dir"], spec["name"] + ".npz")))
      self.specs[spec["name"]] = spec
      if spec["kind"] == "sample":
        checks[spec["name"]] = energy_check(spec, weights)
      for impl in impls_for(spec, request.get("extra", False)):
        self.runners[(spec["name"], impl)] = self._make_runner(spec, weights, impl)
        tasks.append({"impl": impl, "workload": spec["name"]})
    matmul = matmul_runner(request["matmul_size"])
    self.runners[("matmul", "torch matmul")] = lambda num_steps=None: matmul()
    tasks.append({"impl": "torch matmul", "workload": "matmul"})
    info = {
      "torch": torch.__version__,
      "threads": torch.get_num_threads(),
      "mkldnn": torch.backends.mkldnn.is_available(),
    }
    try:
      import torchebm

      info["torchebm"] = getattr(torchebm, "__version__", "?")
    except ImportError as e:
      info["torchebm_error"] = str(e)
    return {"tasks": tasks, "energy_check": checks, "info": info}

  def _make_runner(self, spec, weights, impl):
    if spec["kind"] == "sample":
      return sample_runner(spec, weights, impl)
    trainer = Trainer(spec, weights, *TRAIN_IMPLS[impl])
    return trainer.step

  def run(self, request):
    """Times one repetition; a "warmup" request runs a short chain (WARMUP_STEPS) instead."""
    runner = self.runners[(request["workload"], request["impl"])]
    num_steps = WARMUP_STEPS if request["op"] == "warmup" else None
    start = time.perf_counter()
    runner(num_steps)
    return {"seconds": time.perf_counter() - start}

  def handle(self, request):
    return self.setup(request) if request["op"] == "setup" else self.run(request)


if __name__ == "__main__":
  from jsonl_server import serve  # this script's folder is on sys.path

  serve(Server().handle, sys.stdin, sys.stdout)
