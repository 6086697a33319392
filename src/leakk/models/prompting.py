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


def answer_logprob(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-example log π(answer | prompt), summed over answer tokens (labels ≠ −100)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logits = logits[:, :-1].float()
    labels = batch["labels"][:, 1:]
    mask = labels != -100
    token_lp = torch.log_softmax(logits, dim=-1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (token_lp * mask).sum(-1)


def answer_nll(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean token-level NLL over answer tokens of the batch (the SFT loss)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), batch["labels"][:, 1:].flatten(), ignore_index=-100
    )
