"""What kia changes in the transformers training loop, each for a measured cost on small rows.

- `KiaTrainer.floating_point_ops`: the Trainer counts FLOPs at every step by walking every module
  of the model (`num_parameters`); the count never changes, so it is taken once.
- `CPUDropout`: LoRA's dropout draws one 32-bit random number per activation from the CPU
  generator, about 13 % of a training step on the CPU. This draws 16 bits per activation (four
  from each 64-bit draw). On a GPU torch's fused dropout is cheap and is used as is.
- `BF16Head`: when the CPU trains in bf16 (see `kia.inject.model`), the 4-bit layers take bf16 as
  their compute dtype, and the output projection (frozen, often tied to the embeddings, a quarter
  of the toy model's products) multiplies a bf16 copy of its weight. Autocast would cast every
  product's inputs, LoRA's too, and measured no faster than fp32 here.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import Trainer

# 16-bit draws: the drop probability is rounded to a multiple of 1/65536 (0.1 -> 0.1000061).
_LEVELS = 1 << 16


class CPUDropout(torch.nn.Dropout):
    """Inverted dropout: each activation is zeroed with probability p and the rest scaled by 1/(1-p),
    as `torch.nn.Dropout`, with a mask drawn 16 bits per activation on the CPU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or x.device.type != "cpu" or self.inplace:
            return super().forward(x)
        n = x.numel()
        # The full int64 range: every 16-bit lane of every draw is uniform (a draw from
        # [0, 2**63) would leave the top lane's sign bit at zero).
        bits = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), 2**63 - 1)
        lanes = bits.view(torch.int16)[:n].view(x.shape)
        keep = lanes >= round(self.p * _LEVELS) - _LEVELS // 2
        return x * keep.to(x.dtype).mul_(1.0 / (1.0 - self.p))


def use_cpu_dropout(model: Any) -> int:
    """Swap the LoRA layers' `nn.Dropout` modules for `CPUDropout`; the number swapped."""
    swapped = 0
    for module in model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        if not isinstance(dropouts, torch.nn.ModuleDict):
            continue
        for name, d in list(dropouts.items()):
            if type(d) is torch.nn.Dropout:
                dropouts[name] = CPUDropout(d.p)
                swapped += 1
    return swapped


class BF16Head(torch.nn.Module):
    """A frozen output projection computed in bf16, its logits handed back in fp32 for the loss.

    The copy of the weight is a non-persistent buffer: checkpoints and the saved adapter never
    see it, and `restore_head` puts the original module back."""

    def __init__(self, head: torch.nn.Linear):
        super().__init__()
        self.register_buffer("weight", head.weight.detach().to(torch.bfloat16), persistent=False)
        bias = None if head.bias is None else head.bias.detach().to(torch.bfloat16)
        self.register_buffer("bias", bias, persistent=False)
        self.original = (head,)  # a tuple, so the original is not registered as a submodule twice

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x.to(torch.bfloat16), self.weight, self.bias).float()


def use_bf16_head(model: Any) -> bool:
    """Swap the model's output projection for a `BF16Head` when it is a frozen `nn.Linear`
    (a trained head must keep its fp32 weight); whether it was swapped."""
    head = model.get_output_embeddings()
    if type(head) is not torch.nn.Linear or head.weight.requires_grad:
        return False
    model.set_output_embeddings(BF16Head(head))
    return True


def restore_head(model: Any) -> None:
    """Put back the output projection that `use_bf16_head` replaced."""
    head = model.get_output_embeddings()
    if isinstance(head, BF16Head):
        model.set_output_embeddings(head.original[0])


class KiaTrainer(Trainer):
    """The transformers Trainer with the per-step FLOP count's parameter walk done once."""

    _n_params: int | None = None

    def floating_point_ops(self, inputs: dict[str, Any]) -> int:
        """6 x tokens x non-embedding parameters (forward + backward), as the Trainer computes it."""
        ids = inputs.get(getattr(self.model, "main_input_name", "input_ids"))
        if ids is None or not hasattr(self.model, "num_parameters"):
            return 0
        if self._n_params is None:
            self._n_params = self.model.num_parameters(exclude_embeddings=True)
        return 6 * ids.numel() * self._n_params
