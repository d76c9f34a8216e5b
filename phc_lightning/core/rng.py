"""Random streams on the device they serve: every random draw of the package goes through this module.

A ``torch.Generator`` lives on one device, and a draw for tensors on another raises on a GPU ("Expected a 'cuda'
device type for generator") but never on the CPU, where CI runs. So every sampler creates its generator with
:func:`new_generator` on the device of the tensors it draws for, and every draw below first checks, with
:func:`check_generator`, that the generator is on the draw's device: the same mistake then fails on the CPU too, at
the draw, naming the sampler. ``generator=None`` draws from torch's default generator of that device (always the
right device, not reproducible on its own).

On the CPU each function is exactly the torch call it wraps (the same numbers from the same generator state).
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

Tensor = torch.Tensor
Device = Union[str, torch.device]


def canonical_device(device: Device) -> torch.device:
    """``device`` with an accelerator's index filled in (``cuda`` -> ``cuda:0``), so that equal devices compare
    equal; the CPU stays ``cpu``."""
    device = torch.device(device)
    if device.type == "cpu" or device.index is not None:
        return device
    if device.type == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(device.type, 0)


def new_generator(seed: int, device: Device) -> torch.Generator:
    """A generator on ``device`` seeded with ``seed``: the stream of a sampler that draws for tensors there."""
    return torch.Generator(device=canonical_device(device)).manual_seed(int(seed))


def check_generator(generator: Optional[torch.Generator], device: Device, who: str) -> None:
    """Raise ValueError unless ``generator`` (None: the device's default) lives on ``device``.

    Torch checks this itself only on accelerators; checking here makes a generator on the wrong device fail on the
    CPU as well, and names the sampler.
    """
    if generator is None:
        return
    expected = canonical_device(device)
    if canonical_device(generator.device) != expected:
        raise ValueError(f"{who}: its random generator lives on {generator.device} but draws for tensors on "
                         f"{expected}; create it with phc_lightning.core.rng.new_generator(seed, {str(expected)!r})")


def rand(shape: Sequence[int], generator: Optional[torch.Generator], device: Device, who: str) -> Tensor:
    """``torch.rand(shape)`` on ``device``: uniform in [0, 1), float32."""
    check_generator(generator, device, who)
    return torch.rand(tuple(shape), generator=generator, device=device)


def randn(shape: Sequence[int], generator: Optional[torch.Generator], device: Device, who: str,
          dtype: Optional[torch.dtype] = None) -> Tensor:
    """``torch.randn(shape)`` on ``device`` (``dtype`` default float32)."""
    check_generator(generator, device, who)
    return torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)


def randint(high: int, shape: Sequence[int], generator: Optional[torch.Generator], device: Device,
            who: str) -> Tensor:
    """``torch.randint(0, high, shape)`` on ``device`` (long)."""
    check_generator(generator, device, who)
    return torch.randint(0, high, tuple(shape), generator=generator, device=device)


def randperm(n: int, generator: Optional[torch.Generator], device: Device, who: str) -> Tensor:
    """``torch.randperm(n)`` on ``device`` (long)."""
    check_generator(generator, device, who)
    return torch.randperm(n, generator=generator, device=device)


def multinomial(weights: Tensor, num_samples: int, generator: Optional[torch.Generator], who: str,
                replacement: bool = True) -> Tensor:
    """``torch.multinomial(weights, num_samples)`` on the device of ``weights`` (``[M]`` or ``[R, M]``, long)."""
    check_generator(generator, weights.device, who)
    return torch.multinomial(weights, num_samples, replacement=replacement, generator=generator)
