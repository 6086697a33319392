"""RMU, representation misdirection for unlearning (Li et al. 2024, "The WMDP benchmark",
arXiv 2403.03218): instead of pushing answer likelihoods down, scramble what one layer
computes on forget data and keep it unchanged on retain data.

    L = mean ‖h_ℓ(x_f) − c·u‖²  +  α · mean ‖h_ℓ(x_r) − h_ℓ^frozen(x_r)‖²

h_ℓ is the output of transformer block ``layer`` (0-based), u a fixed random unit vector
(drawn once from ``seed``: uniform in [0, 1)^d, normalised, as the paper), c the steering
coefficient, and ‖·‖² the mean over hidden dimensions. Only the MLP weights of the
``trained_layers`` blocks ending at ``layer`` train, as in the paper.

For question-answer data the positions are the ones whose next-token prediction is an answer
token (the last prompt token and the answer's own but last): there the model states the fact,
while the prompt's template tokens are shared with every retain question. The retain term is
the registered ``activation`` retain loss (:mod:`leakk.unlearn.retain`), RMU's default.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from leakk.models.activations import answer_position_mask, block_output, masked_mean_sq
from leakk.unlearn.methods import Method, register_method

#: a transformer block's index in a parameter name: GPT-2's ``transformer.h.<i>.``, Llama's
#: (and most decoders') ``model.layers.<i>.``
_BLOCK = re.compile(r"(?:^|\.)(?:h|layers|blocks)\.(\d+)\.")


@register_method("rmu")
class RMU(Method):
    averages = "examples"
    default_retain_loss = "activation"
    params_schema: ClassVar[dict[str, Any]] = {
        "type": "object", "additionalProperties": False,
        "properties": {
            "layer": {"type": "integer", "minimum": 0, "maximum": 1000, "default": 2,
                      "description": "the block (0-based) whose output is steered on forget data and kept on retain"},
            "steering_coef": {"type": "number", "exclusiveMinimum": 0, "maximum": 1.0e6, "default": 20.0,
                              "description": "c: the norm of the random control vector (the paper: 6.5 for "
                                             "Zephyr-7B); it should exceed the layer's activation norms"},
            "trained_layers": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 3,
                               "description": "how many blocks, ending at `layer`, have their MLP weights trained"},
            "seed": {"type": "integer", "minimum": 0, "maximum": 4294967295, "default": 0,
                     "description": "draws the random direction u"}}}

    def __init__(self, *, layer: int, steering_coef: float, trained_layers: int, seed: int) -> None:
        self.layer, self.steering_coef, self.trained_layers, self.seed = layer, steering_coef, trained_layers, seed
        self._control = None

    def trains(self, name: str) -> bool:
        """Only the MLP weights of blocks layer − trained_layers + 1 … layer."""
        found = _BLOCK.search(name)
        return (found is not None and ".mlp." in name
                and self.layer - self.trained_layers < int(found.group(1)) <= self.layer)

    def control(self, width: int, device):
        """c·u, u uniform in [0, 1)^width then normalised; the same for every step and run."""
        import torch

        if self._control is None or self._control.shape[0] != width:
            gen = torch.Generator().manual_seed(self.seed)
            u = torch.rand(width, generator=gen)
            self._control = self.steering_coef * u / u.norm()
        return self._control.to(device)

    def forget_loss(self, model, batch, ref_logp):
        states = block_output(model, batch, self.layer)
        return masked_mean_sq(states - self.control(states.shape[-1], states.device),
                              answer_position_mask(batch)).mean()
