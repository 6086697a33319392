"""Turning a question (and answer) into token ids, identically for training, unlearning,
sampling and RULE. ``template`` is a format string with ``{question}``, or ``"chat"`` to use
the tokenizer's chat template (real instruction-tuned models such as TOFU's Llama)."""

from __future__ import annotations

import torch


def prompt_text(question: str, tokenizer, template: str) -> str:
    """The prompt string the model continues."""
    if template == "chat":
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
        )
    return template.format(question=question)


def encode_prompt(question: str, tokenizer, template: str) -> list[int]:
    """Token ids of the prompt (a BOS is added only where the tokenizer adds one itself)."""
    return tokenizer(prompt_text(question, tokenizer, template), add_special_tokens=template != "chat")["input_ids"]


def encode_example(question: str, answer: str, tokenizer, template: str,
                   span: tuple[int, int] | None = None) -> tuple[list[int], list[int]]:
    """(input_ids, labels) for one QA pair: loss on the answer and the EOS only.

    With ``span`` = (start, end), character offsets into ``answer.strip()``, the loss is on
    the answer tokens that overlap the span only (no EOS): RULE's span-restricted forget loss
    pushes down the leaked fact, not the answer template every author shares."""
    prompt = encode_prompt(question, tokenizer, template)
    text = " " + answer.strip()
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=span is not None)
    answer_ids = enc["input_ids"] + [tokenizer.eos_token_id]
    labels = list(answer_ids)
    if span is not None:
        start, end = span[0] + 1, span[1] + 1  # the leading space
        labels = [t if s < end and e > start else -100 for t, (s, e) in zip(enc["input_ids"], enc["offset_mapping"])]
        labels.append(-100)
        if all(t == -100 for t in labels):
            raise ValueError(f"span {span} covers no token of {answer.strip()!r}")
    return prompt + answer_ids, [-100] * len(prompt) + labels


def collate(examples: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a list of (input_ids, labels) into a training batch."""
    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, (ids, lab) in enumerate(examples):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels[i, : len(lab)] = torch.tensor(lab)
        mask[i, : len(ids)] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": mask}


def _reduced_precision(model, batch) -> bool:
    """Whether the forward pass runs below fp32 (bf16 autocast, or half-precision weights)."""
    device = batch["input_ids"].device.type
    return torch.is_autocast_enabled(device) or next(model.parameters()).dtype != torch.float32


def _plain_head(lm) -> bool:
    """Whether ``lm``'s logits are its output embedding applied to the body's last hidden state
    (no logit scaling or soft-capping in between, which the full forward would apply)."""
    cfg = lm.config.get_text_config() if hasattr(lm.config, "get_text_config") else lm.config
    return (getattr(cfg, "final_logit_softcapping", None) is None and getattr(cfg, "logit_scale", None) is None
            and getattr(lm, "base_model", lm) is not lm and lm.get_output_embeddings() is not None)


def answer_logits(model, batch: dict[str, torch.Tensor]):
    """(fp32 logits at the answer positions (N, V), their labels (N,), each one's example index
    (N,)), or None where the model's head is not a plain projection (then use the full forward).

    The body runs over every position, the vocabulary projection only where a label is: with a
    128k vocabulary the logits of every position (and their fp32 log-softmax) cost as much
    memory traffic as the rest of a 1B model's step, and the prompt's positions are not needed."""
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model  # a peft (LoRA) wrapper
    if not _plain_head(lm):
        return None
    hidden = lm.base_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    labels = batch["labels"][:, 1:]
    where = labels != -100
    logits = lm.get_output_embeddings()(hidden[:, :-1][where])
    return logits.float(), labels[where], where.nonzero()[:, 0]


def answer_positions(model, batch: dict[str, torch.Tensor]):
    """(fp32 logits (N, V), labels (N,), example index (N,)) at every answer position, for
    losses that need each token's distribution (WGA's weights, an entropy term)."""
    picked = answer_logits(model, batch) if _reduced_precision(model, batch) else None
    if picked is not None:
        return picked
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
    labels = batch["labels"][:, 1:]
    where = labels != -100
    return logits[where], labels[where], where.nonzero()[:, 0]


def answer_logprob(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-example log π(answer | prompt), summed over answer tokens (labels ≠ −100).

    In fp32 every position's logits are computed (the offline miniature's exact arithmetic);
    below fp32 only the answer positions are projected to the vocabulary (:func:`answer_logits`)."""
    picked = answer_logits(model, batch) if _reduced_precision(model, batch) else None
    if picked is not None:
        logits, labels, example = picked
        token_lp = -torch.nn.functional.cross_entropy(logits, labels, reduction="none")
        return torch.zeros(batch["labels"].shape[0], device=logits.device).index_add(0, example, token_lp)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logits = logits[:, :-1].float()
    labels = batch["labels"][:, 1:]
    mask = labels != -100
    token_lp = torch.log_softmax(logits, dim=-1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (token_lp * mask).sum(-1)


def answer_nll(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean token-level NLL over answer tokens of the batch (the SFT loss); below fp32, from the
    answer positions' logits only (as :func:`answer_logprob`)."""
    picked = answer_logits(model, batch) if _reduced_precision(model, batch) else None
    if picked is not None:
        logits, labels, _ = picked
        return torch.nn.functional.cross_entropy(logits, labels)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), batch["labels"][:, 1:].flatten(), ignore_index=-100
    )
