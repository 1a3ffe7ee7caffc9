from transformers import AutoTokenizer

from policies.tiny import random_model

TEXTS = ["a b\nc d", "<|im_start|>user\nQ:1<|im_end|>\n", "12+34=46", "  two  spaces!"]


def test_char_tokenizer_round_trips_after_reload(tmp_path):
    path = random_model(tmp_path / "m", "micro")
    tok = AutoTokenizer.from_pretrained(path)  # transformers picks the qwen2 tokenizer class here
    for text in TEXTS:
        ids = tok(text).input_ids
        assert tok.decode(ids) == text
    assert len(tok("a b\nc").input_ids) == 5  # one token per character
    assert tok.eos_token_id == 1 and tok.pad_token_id == 0
