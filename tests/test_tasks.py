"""The file-backed tasks (gsm8k, math500, prompts): splits, determinism, parsing, formats, bad rows.
Pure data code: no models, no Ray."""
import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from omegaconf import OmegaConf

from rl.tasks import REPO, SPLITS, make_task

CONF = REPO / "conf" / "task"


def task(name, **overrides):
    """The task as a run makes it: the shipped YAML plus overrides (a DictConfig, as Hydra hands it)."""
    return make_task(OmegaConf.merge(OmegaConf.load(CONF / f"{name}.yaml"), overrides))


@pytest.fixture(scope="module")
def gsm8k():
    return task("gsm8k")


@pytest.fixture(scope="module")
def math500():
    return task("math500")


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


@pytest.fixture
def prompts_file(tmp_path):
    rows = [{"q": f"question {i}", "ref": i * 10, "cat": "even" if i % 2 == 0 else "odd", "src": f"s{i}"}
            for i in range(200)]
    return write_jsonl(tmp_path / "p.jsonl", rows)


def prompts_task(path, **overrides):
    return task("prompts", path=path, prompt_key="q", answer_key="ref", kind_key="cat", meta_keys=["src"], **overrides)


def prompt_text(it):
    return json.dumps(it.prompt)


def each_task(gsm8k, math500, prompts_file):
    return {"gsm8k": gsm8k, "math500": math500, "prompts": prompts_task(prompts_file)}


# --- every task -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["gsm8k", "math500", "prompts"])
def test_items_are_deterministic_per_seed(name, gsm8k, math500, prompts_file):
    t = each_task(gsm8k, math500, prompts_file)[name]
    for split in SPLITS:
        n = min(8, len(t.pools[split]))
        a, b = t.items(split, n, seed=3), t.items(split, n, seed=3)
        assert [x.prompt for x in a] == [x.prompt for x in b] and [x.answer for x in a] == [x.answer for x in b]
        assert [x.prompt for x in a] != [x.prompt for x in t.items(split, n, seed=4)]
        assert len({prompt_text(x) for x in a}) == n  # distinct
    # with replacement (training batches): reproducible too, and may exceed the split
    big = len(t.pools["eval"]) + 5
    draws = [[x.prompt for x in t.items("eval", big, 7, distinct=False)] for _ in range(2)]
    assert draws[0] == draws[1] and len(draws[0]) == big
    # a fresh task object (a resumed run) replays the same data
    again = prompts_task(prompts_file) if name == "prompts" else task(name)
    assert [x.prompt for x in again.items("train", 8, 11)] == [x.prompt for x in t.items("train", 8, 11)]


@pytest.mark.parametrize("name", ["gsm8k", "math500", "prompts"])
def test_splits_are_disjoint_and_distinct_overflow_is_a_clear_error(name, gsm8k, math500, prompts_file):
    t = each_task(gsm8k, math500, prompts_file)[name]
    texts = {s: {prompt_text(it) for it in t.pools[s]} for s in SPLITS}
    assert all(len(texts[s]) == len(t.pools[s]) > 0 for s in SPLITS)
    assert not texts["train"] & texts["eval"] and not texts["train"] & texts["bench"]
    assert not texts["eval"] & texts["bench"]
    n = len(t.pools["bench"])
    assert len(t.items("bench", n, 0)) == n
    with pytest.raises(ValueError, match=rf"task '{name}': {n + 1} distinct bench items asked, the split has {n}"):
        t.items("bench", n + 1, 0)
    with pytest.raises(ValueError, match="unknown split 'test'"):
        t.items("test", 1, 0)


@pytest.mark.parametrize("name", ["gsm8k", "math500", "prompts"])
def test_chat_and_plain_formats_and_the_instruction(name, tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"What is {i}?"} for i in range(200)])
    extra = {"path": path} if name == "prompts" else {}
    chat = task(name, **extra, instruction="Think.")
    plain = task(name, **extra, format="plain", instruction="Think.")
    bare = task(name, **extra, format="plain", instruction="")
    for c, p, b in zip(chat.items("eval", 5, 0), plain.items("eval", 5, 0), bare.items("eval", 5, 0)):
        assert isinstance(p.prompt, str) and p.prompt == b.prompt + "\n\nThink."
        assert c.prompt == ({"role": "user", "content": p.prompt},) and c.text == p.text == p.prompt
        assert c.engine_prompt == [{"role": "user", "content": p.prompt}]
    # the instruction does not move rows between splits (the split hashes the raw question)
    assert [b.prompt for b in bare.pools["bench"]] == [p.prompt[:-len("\n\nThink.")] for p in plain.pools["bench"]]
    with pytest.raises(ValueError, match=r"unknown prompt format 'html' \(config key task.format\)"):
        task(name, **extra, format="html")


def test_shipped_yaml_defaults():
    assert task("gsm8k").items("eval", 1, 0)[0].prompt[0]["content"].endswith(
        "\n\nSolve the problem step by step. Put the final answer in \\boxed{}.")
    assert OmegaConf.load(CONF / "prompts.yaml").instruction == ""
    for name in ("gsm8k", "math500"):
        t = task(name)
        assert t.verifier == {"name": "math", "type": "math_verify", "extract": "auto"}
        assert t.default_gold == {"name": "gold", "type": "math_verify", "extract": "auto"} and t.dropped == {}


# --- gsm8k ----------------------------------------------------------------------------------------

def test_gsm8k_splits_and_answers(gsm8k):
    assert {s: len(p) for s, p in gsm8k.pools.items()} == {"train": 7473, "eval": 660, "bench": 659}
    train_q = {it.meta["question"] for it in gsm8k.pools["train"]}
    test_q = {it.meta["question"] for s in ("eval", "bench") for it in gsm8k.pools[s]}
    with gzip.open(REPO / "data/real/gsm8k/test.jsonl.gz", "rt") as f:
        assert test_q == {json.loads(line)["question"] for line in f}  # eval + bench = GSM8K test exactly
    assert len(train_q) == 7473 and not train_q & test_q
    by_q = {it.meta["question"]: it for p in gsm8k.pools.values() for it in p}
    # checked by hand against the raw files: train line 1, train line 346 (a comma), test line 2
    natalia = by_q["Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
                   "How many clips did Natalia sell altogether in April and May?"]
    assert natalia.answer == "72" and natalia.kind == "gsm8k"
    assert natalia.meta["solution"] == ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
                                        "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.")
    assert gsm8k.pools["train"][0] is natalia  # pools keep file order
    adam = [it for q, it in by_q.items() if q.startswith("Adam earns $40 daily in his job.")]
    assert [it.answer for it in adam] == ["1,080"]
    robe = by_q["A robe takes 2 bolts of blue fiber and half that much white fiber.  How many bolts in total does it take?"]
    assert robe.answer == "3" and robe in gsm8k.pools["eval"] + gsm8k.pools["bench"]


# --- math500 --------------------------------------------------------------------------------------

def test_math500_splits_kinds_and_meta(math500):
    sizes = {s: len(p) for s, p in math500.pools.items()}
    assert sizes == {"train": 400, "eval": 50, "bench": 50} and sum(sizes.values()) == 500
    items = [it for p in math500.pools.values() for it in p]
    assert sorted(it.meta["id"] for it in items) == list(range(500))
    assert {it.kind for it in items} == {"Algebra", "Intermediate Algebra", "Prealgebra", "Number Theory",
                                         "Precalculus", "Geometry", "Counting & Probability"}
    assert {it.meta["level"] for it in items} == {1, 2, 3, 4, 5}
    first = next(it for it in items if it.meta["id"] == 0)  # raw row 1, by hand
    assert first.answer == "\\left( 3, \\frac{\\pi}{2} \\right)" and first.kind == "Precalculus" and first.meta["level"] == 2
    assert first.text.startswith("Convert the point $(0,3)$ in rectangular coordinates to polar coordinates.")


# --- prompts --------------------------------------------------------------------------------------

def test_prompts_maps_columns(prompts_file):
    t = prompts_task(prompts_file)
    assert sum(len(p) for p in t.pools.values()) == 200 and t.dropped == {}
    it = next(it for p in t.pools.values() for it in p if it.text == "question 7")
    assert (it.answer, it.kind, it.meta) == ("70", "odd", {"src": "s7"})
    assert it.prompt == ({"role": "user", "content": "question 7"},)
    assert t.verifier is None and t.default_gold is None
    t = prompts_task(prompts_file, verifier={"name": "math", "type": "math_verify", "extract": "last_number"})
    assert t.verifier == {"name": "math", "type": "math_verify", "extract": "last_number"}
    # no answer_key: no reference
    assert all(it.answer is None and it.kind == "" for it in task("prompts", path=prompts_file, prompt_key="q").pools["eval"])


def test_prompts_split_key_and_fractions(tmp_path):
    rows = [{"prompt": f"p{i}", "split": SPLITS[i % 3]} for i in range(30)]
    t = task("prompts", path=write_jsonl(tmp_path / "s.jsonl", rows), split_key="split")
    assert {s: sorted(it.text for it in t.pools[s]) for s in SPLITS} == \
        {s: sorted(r["prompt"] for r in rows if r["split"] == s) for s in SPLITS}
    path = write_jsonl(tmp_path / "h.jsonl", [{"prompt": f"p{i}"} for i in range(1000)])
    sizes = [len(task("prompts", path=path).pools[s]) for s in SPLITS]
    assert sum(sizes) == 1000 and 740 < sizes[0] < 860 and 60 < sizes[1] < 140
    assert [len(task("prompts", path=path, split_fractions=[0, 0, 1]).pools[s]) for s in SPLITS] == [0, 0, 1000]
    with pytest.raises(ValueError, match="task.split_fractions must be 3 non-negative numbers"):
        task("prompts", path=path, split_fractions=[0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="task 'prompts' has no train items"):
        task("prompts", path=path, split_fractions=[0, 0, 1]).items("train", 1, 0)


def test_prompts_file_kinds_and_chat_messages(tmp_path):
    msgs = [{"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"Hi {i}"}],
             "answer": f"a{i}"} for i in range(20)]
    pq.write_table(pa.Table.from_pylist(msgs), tmp_path / "m.parquet")
    (tmp_path / "l.json").write_text(json.dumps([{"prompt": f"json {i}"} for i in range(20)]))
    with gzip.open(tmp_path / "g.jsonl.gz", "wt") as f:
        f.write("".join(json.dumps({"prompt": f"gz {i}"}) + "\n" for i in range(20)))
    t = task("prompts", path=[str(tmp_path / n) for n in ("m.parquet", "l.json", "g.jsonl.gz")], answer_key=None,
             instruction="Answer.")
    items = [it for p in t.pools.values() for it in p]
    assert len(items) == 60
    chat = next(it for it in items if it.text.startswith("Hi 3"))
    assert chat.prompt == ({"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi 3\n\nAnswer."})
    assert {it.text for it in items if it.text.startswith("gz")} == {f"gz {i}\n\nAnswer." for i in range(20)}
    with pytest.raises(ValueError, match=r"m.parquet: row 1: field 'prompt' holds chat messages; task.format=plain"):
        task("prompts", path=str(tmp_path / "m.parquet"), format="plain")


BAD_ROWS = [  # (row, reason, message)
    ('["a", "list"]', "not_object", "not an object (a list)"),
    ({"other": "x"}, "prompt_missing", "field 'prompt' is missing (task.prompt_key)"),
    ({"prompt": "  "}, "prompt_empty", "field 'prompt' is empty"),
    ({"prompt": []}, "prompt_empty", "field 'prompt' is empty"),
    ({"prompt": 42}, "prompt_type", "field 'prompt' is not a str or a list of chat messages (a int)"),
    ({"prompt": [{"role": "bot", "content": "x"}]}, "prompt_type", "field 'prompt': chat messages need a str role"),
    ({"prompt": [{"role": "system", "content": "x"}]}, "prompt_type", "at least one user turn"),
    ({"prompt": "q", "answer": None}, "answer_missing", "field 'answer' is missing or empty (task.answer_key)"),
    ({"prompt": "q"}, "answer_missing", "field 'answer' is missing or empty (task.answer_key)"),
    ({"prompt": "q", "answer": ["1"]}, "answer_type", "field 'answer' is not a str or a number (a list)"),
    ({"prompt": "q", "answer": True}, "answer_type", "field 'answer' is not a str or a number (a bool)"),
    ({"prompt": "q", "answer": "1", "split": "test", "kind": "k", "topic": "t"}, "split_value",
     "field 'split' is 'test', expected one of train, eval, bench (task.split_key)"),
    ({"prompt": "q", "answer": "1", "split": "eval", "topic": "t"}, "kind_missing", "field 'kind' is missing (task.kind_key)"),
    ({"prompt": "q", "answer": "1", "split": "eval", "kind": "k"}, "meta_missing", "field 'topic' is missing (task.meta_keys)"),
]
STRICT = dict(answer_key="answer", split_key="split", kind_key="kind", meta_keys=["topic"])


@pytest.mark.parametrize("bad, reason, message", BAD_ROWS, ids=[f"{i}-{r}" for i, (_, r, _) in enumerate(BAD_ROWS)])
def test_prompts_bad_row_error_names_file_row_and_field(tmp_path, bad, reason, message):
    good = {"prompt": "fine", "answer": 3.0, "split": "train", "kind": "k", "topic": "t"}
    path = write_jsonl(tmp_path / "bad.jsonl", [good, good | {"prompt": "also fine"}, bad])
    with pytest.raises(ValueError) as e:
        task("prompts", path=path, **STRICT)
    assert str(e.value).startswith(f"{path}: row 3: ") and message in str(e.value)
    t = task("prompts", path=path, on_bad_row="skip", **STRICT)
    assert t.dropped == {reason: 1} and t.pools["train"][0].answer == "3"  # an integral float reads as an int


def test_prompts_skip_counts_per_reason_and_duplicates(tmp_path):
    rows = [{"prompt": "ok 1"}, {"prompt": ""}, {"prompt": ""}, {"x": 1}, '"a string"', {"prompt": "ok 1"},
            {"prompt": "ok 2"}]
    t = task("prompts", path=write_jsonl(tmp_path / "d.jsonl", rows), on_bad_row="skip", split_fractions=[1, 0, 0])
    assert t.dropped == {"prompt_empty": 2, "prompt_missing": 1, "not_object": 1, "duplicate_prompt": 1}
    assert [it.text for it in t.pools["train"]] == ["ok 1", "ok 2"]
    with pytest.raises(ValueError, match="no usable rows"):
        task("prompts", path=write_jsonl(tmp_path / "e.jsonl", [{"prompt": ""}]), on_bad_row="skip")
    with pytest.raises(ValueError, match="unknown task.on_bad_row 'ignore'"):
        task("prompts", path=write_jsonl(tmp_path / "f.jsonl", rows), on_bad_row="ignore")


def test_prompts_source_errors(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"task.path: file '/no/such.jsonl' does not exist"):
        task("prompts", path="/no/such.jsonl")
    with pytest.raises(ValueError, match=r"task.path: file 'nope.jsonl' does not exist"):
        task("prompts", path=[write_jsonl(tmp_path / "a.jsonl", [{"prompt": "x"}]), "nope.jsonl"])
    with pytest.raises(ValueError, match="exactly one of task.path .* and task.hf_name"):
        task("prompts")
    (tmp_path / "x.csv").write_text("prompt\nx\n")
    with pytest.raises(ValueError, match=r"is not .jsonl, .jsonl.gz, .json, .json.gz or .parquet"):
        task("prompts", path=str(tmp_path / "x.csv"))
    (tmp_path / "o.json").write_text('{"prompt": "x"}')
    with pytest.raises(ValueError, match="a .json file must hold a list of records"):
        task("prompts", path=str(tmp_path / "o.json"))
    (tmp_path / "j.jsonl").write_text('{"prompt": "x"}\n{not json\n')
    with pytest.raises(ValueError, match=r"j.jsonl: row 2 is not JSON"):
        task("prompts", path=str(tmp_path / "j.jsonl"))
    # a repository-relative path works from any working directory
    monkeypatch.chdir(tmp_path)
    assert len(task("prompts", path="data/real/math/math500_test.jsonl.gz", prompt_key="problem",
                    answer_key="answer").pools["train"]) > 300


def test_prompts_hugging_face_errors(monkeypatch):
    import sys
    import types

    def offline(*a, **k):
        raise ConnectionError("Couldn't reach 'org/some_set' on the Hub (LocalEntryNotFoundError)")
    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=offline))
    with pytest.raises(ValueError, match=r"cannot load Hugging Face dataset 'org/some_set' \(task.hf_name\) split "
                                         r"'train': ConnectionError: .*offline.*set task.path"):
        task("prompts", hf_name="org/some_set")
    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(
        load_dataset=lambda name, config, split: [{"prompt": f"{name}/{config}/{split} {i}"} for i in range(10)]))
    t = task("prompts", hf_name="org/set", hf_config="main", hf_split="test", split_fractions=[1, 0, 0])
    assert sorted(it.text for it in t.pools["train"]) == sorted(f"org/set/main/test {i}" for i in range(10))
    monkeypatch.setitem(sys.modules, "datasets", None)  # not installed
    with pytest.raises(ValueError, match=r"task.hf_name='org/set' needs the `datasets` library"):
        task("prompts", hf_name="org/set")
