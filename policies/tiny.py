"""Small models built on the spot: a character tokenizer and randomly initialised HF causal LMs.

The arith world trains its own tiny LMs (no download possible here); tests and benchmarks need
throw-away models of a given shape. Both save real HF directories (safetensors + tokenizer.json)
that vLLM and transformers load like any hub model.
"""
from __future__ import annotations

import json
import string
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

PAD, EOS, UNK = "<pad>", "<|endoftext|>", "<unk>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
DEFAULT_CHARS = string.ascii_letters + string.digits + string.punctuation + " \n"

# ChatML, as Qwen2 uses: a message-list prompt renders to "<|im_start|>role\ncontent<|im_end|>\n".
CHAT_TEMPLATE = (
    "{% for m in messages %}" + IM_START + "{{ m['role'] }}\n{{ m['content'] }}" + IM_END + "\n{% endfor %}"
    "{% if add_generation_prompt %}" + IM_START + "assistant\n{% endif %}"
)

# Shapes: name -> (architecture, config kwargs). "smollm2-135m" is SmolLM2-135M's published
# configuration (Llama, 30 layers, hidden 576, 9 heads / 3 KV heads, vocab 49152, tied embeddings).
SHAPES = {
    "tiny": ("qwen2", dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                           num_attention_heads=4, num_key_value_heads=2)),
    "micro": ("qwen2", dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                            num_attention_heads=2, num_key_value_heads=1)),
    "smollm2-135m": ("llama", dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                                   num_attention_heads=9, num_key_value_heads=3, vocab_size=49152,
                                   rope_theta=100000.0, rms_norm_eps=1e-5)),
}


def char_tokenizer(chars: str = DEFAULT_CHARS, vocab_size: int | None = None) -> PreTrainedTokenizerFast:
    """One token per character plus specials; padded with filler tokens up to `vocab_size`."""
    specials = [PAD, EOS, UNK, IM_START, IM_END]
    vocab = {tok: i for i, tok in enumerate(specials)}
    # Byte-level symbols (space is "Ġ", newline "Ċ"), as in Qwen2's own tokenizer: transformers
    # rebuilds any tokenizer of a qwen2 model as byte-level BPE, so a plain character vocabulary
    # would silently lose its spaces and newlines when loaded with AutoTokenizer.
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    for ch in dict.fromkeys(chars):
        for sym in byte_level.pre_tokenize_str(ch)[0][0]:
            vocab.setdefault(sym, len(vocab))
    for i in range(len(vocab), vocab_size or 0):
        vocab[f"<f{i}>"] = i
    # BPE without merges: one token per character.
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK))
    tok.pre_tokenizer = byte_level
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(specials)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS, unk_token=UNK,
                                   chat_template=CHAT_TEMPLATE, model_max_length=4096)


def random_model(path: str | Path, shape: str = "tiny", seed: int = 0, tokenizer=None,
                 max_position_embeddings: int = 1024) -> Path:
    """Save a randomly initialised causal LM of a named shape, with its tokenizer, to `path`."""
    if shape not in SHAPES:
        raise ValueError(f"unknown model shape {shape!r}; expected one of {sorted(SHAPES)}")
    arch, kwargs = SHAPES[shape]
    kwargs = dict(kwargs)
    tokenizer = tokenizer or char_tokenizer(vocab_size=kwargs.pop("vocab_size", None))
    kwargs.pop("vocab_size", None)
    config = AutoConfig.for_model(
        arch, vocab_size=len(tokenizer), tie_word_embeddings=True,
        max_position_embeddings=max_position_embeddings, bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **kwargs)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    path = Path(path)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    # vLLM reads the stop token from generation_config.json; keep it explicit.
    (path / "generation_config.json").write_text(json.dumps(
        {"eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}))
    return path
