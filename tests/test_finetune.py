"""A built dataset trains a (tiny) GPT-2: the loss goes down. Needs torch and transformers."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("symusic")
pytest.importorskip("datasets")

import helpers as h  # noqa: E402

import varemi  # noqa: E402
from varemi.demo import write_demo_corpus  # noqa: E402

WINDOW = 64


def batches(rows: list[list[int]], pad_id: int, size: int):
    """Pad each batch to its longest example; padding is masked and ignored by the loss."""
    for start in range(0, len(rows), size):
        chunk = rows[start : start + size]
        length = max(len(r) for r in chunk)
        ids = torch.full((len(chunk), length), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), length), dtype=torch.long)
        for k, r in enumerate(chunk):
            ids[k, : len(r)] = torch.tensor(r)
            mask[k, : len(r)] = 1
        labels = ids.masked_fill(mask == 0, -100)
        yield ids, mask, labels


def test_tiny_gpt2_loss_goes_down_on_the_demo_dataset(tmp_path):
    from varemi.vocab import ids_to_tokens

    torch.manual_seed(0)
    torch.set_num_threads(2)
    midi = tmp_path / "midi"
    write_demo_corpus(midi)
    out = tmp_path / "out"
    h.build(midi, out, window_size=WINDOW, stride=48, min_window_tokens=16)

    tok = varemi.load_tokenizer(out)
    train = h.load(out)["train"]
    rows = list(train["input_ids"])[:64]
    assert any(len(r) < WINDOW + 2 for r in train["input_ids"])  # padding is needed
    assert max(max(r) for r in rows) < len(tok)
    pad_id = tok.vocab["PAD_None"]

    config = transformers.GPT2Config(
        n_layer=1,
        n_head=2,
        n_embd=32,
        vocab_size=len(tok),
        n_positions=WINDOW + 2,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        pad_token_id=pad_id,
    )
    model = transformers.GPT2LMHeadModel(config)
    fixed = list(batches(rows, pad_id, 16))

    def mean_loss() -> float:
        model.eval()
        with torch.no_grad():
            losses = [model(input_ids=i, attention_mask=m, labels=y).loss for i, m, y in fixed]
        return float(torch.stack(losses).mean())

    before = mean_loss()
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(8):
        for ids, mask, labels in fixed:
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    after = mean_loss()
    print(f"loss {before:.3f} -> {after:.3f}")
    assert after < 0.8 * before, (before, after)

    # generation starts from a mood's two conditioning ids
    prompt = torch.tensor([list(varemi.conditioning_ids(out, 2, -3))])
    model.eval()
    generated = model.generate(
        prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=8, do_sample=False,
        pad_token_id=pad_id,
    )  # fmt: skip
    tokens = ids_to_tokens(tok, generated[0].tolist())
    assert tokens[:2] == ["[VAL=+2]", "[ARO=-3]"]
    assert len(tokens) >= 10
