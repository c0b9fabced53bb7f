"""Data statistics: token counts per record kind against hand tokenization, the statistics
against numpy, the markdown table, PNGs and the CLI, bad records named by file:line."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from citrus_jax import chat
from citrus_jax import tokenizer as tk
from citrus_jax.data import stats

HERE = os.path.dirname(__file__)
FIX = os.path.join(HERE, "fixtures")
CORPUS = os.path.join(FIX, "tokenizer", "corpus.txt")
CPT = os.path.join(FIX, "data", "corpus.jsonl")
SFT = os.path.join(FIX, "sft", "citrus.jsonl")
PAIRS = os.path.join(FIX, "preference", "pairs.jsonl")  # first 2 lines are good
TEXT = os.path.join(FIX, "data", "paragraphs.txt")


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
  root = tmp_path_factory.mktemp("stats_tok")
  return tk.load_tokenizer(tk.train_sentencepiece([CORPUS], str(root / "sp"), 600))


def _jsonl(path):
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def test_lengths_match_each_stage_tokenization(tmp_path, tok):
  cpt = _jsonl(CPT)
  lengths, kinds, skipped = stats.token_lengths(CPT, tok)
  assert kinds == {"text": len(cpt)} and skipped == {}
  assert lengths == [len(tok.encode(r["text"])) + 2 for r in cpt]  # BOS + text + EOS
  no_bos, _, _ = stats.token_lengths(CPT, tok, add_bos=False)
  assert [a - b for a, b in zip(lengths, no_bos)] == [1] * len(cpt)

  sft = _jsonl(SFT)
  lengths, kinds, _ = stats.token_lengths(SFT, tok)
  assert kinds == {"chat": len(sft)}
  assert any("system" in r for r in sft)
  assert lengths == [len(chat.render([{"role": "system", "content": r.get("system", "")}] * ("system" in r)
                                     + [{"role": "user", "content": r["input"]},
                                        {"role": "assistant", "content": r["target"]}],
                                     tok).tokens) for r in sft]

  pairs = [json.loads(line) for line in open(PAIRS, encoding="utf-8").readlines()[:2]]
  pair_file = tmp_path / "pairs.jsonl"  # the shipped file also holds deliberately bad lines
  pair_file.write_text("".join(json.dumps(p) + "\n" for p in pairs))
  lengths, kinds, _ = stats.token_lengths(str(pair_file), tok)
  assert kinds == {"pair": len(pairs)}
  first = pairs[0]  # string prompt: the longer of prompt + chosen / prompt + rejected
  want = max(len(chat.render([{"role": "user", "content": first["prompt"]},
                              {"role": "assistant", "content": first[side]}], tok).tokens)
             for side in ("chosen", "rejected"))
  assert lengths[0] == want

  lengths, kinds, _ = stats.token_lengths(TEXT, tok)  # a plain-text file is one document
  assert kinds == {"text": 1}
  assert lengths == [len(tok.encode(open(TEXT, encoding="utf-8").read())) + 2]


def test_length_stats_against_numpy():
  lengths = [5, 1, 9, 300, 12, 12, 40]
  s = stats.length_stats(lengths, seq_len=12)
  assert s["count"] == 7 and s["max"] == 300
  assert s["mean"] == pytest.approx(np.mean(lengths))
  assert s["median"] == 12 and s["p95"] == pytest.approx(np.percentile(lengths, 95))
  assert s["n_over_seq_len"] == 2 and s["share_over_seq_len"] == pytest.approx(2 / 7)  # not 12
  empty = stats.length_stats([], 8)
  assert empty["count"] == 0 and empty["mean"] is None
  with pytest.raises(ValueError, match="seq_len"):
    stats.length_stats([1], 0)


def test_stage_stats_table_and_plots(tmp_path, tok):
  pairs = tmp_path / "pairs.jsonl"
  pairs.write_text("".join(open(PAIRS, encoding="utf-8").readlines()[:2]))
  out = stats.stage_stats({"cpt": CPT, "sft3": f"{SFT},{SFT}", "rl": str(pairs)}, tok, 64,
                          out_dir=str(tmp_path))
  assert list(out) == ["cpt", "sft3", "rl"]
  assert out["sft3"]["count"] == len(_jsonl(SFT)) and len(out["sft3"]["files"]) == 1  # dedup
  for stage, s in out.items():
    assert open(tmp_path / s["plot"], "rb").read(4) == b"\x89PNG"
  table = stats.markdown_table(out)
  lines = table.splitlines()
  assert lines[0].startswith("| stage | files | records | mean | median | p95 | max |")
  row = next(line for line in lines if line.startswith("| cpt |"))
  cells = [c.strip() for c in row.strip("|").split("|")]
  assert cells[2] == str(out["cpt"]["count"]) and cells[6] == str(out["cpt"]["max"])
  assert cells[7].endswith(f"({out['cpt']['n_over_seq_len']})")
  assert "longer than 64 tokens" in table


def test_bad_records_name_file_and_line(tmp_path, tok):
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"text": "fine"}\n{"question": "no text"}\n{"text": "   "}\n'
                 '{"messages": [{"role": "user", "content": "hi"}]}\n')
  with pytest.raises(ValueError, match=r"bad\.jsonl:2: expected a text"):
    stats.token_lengths(str(bad), tok)
  lengths, kinds, skipped = stats.token_lengths(str(bad), tok, on_error="skip")
  assert len(lengths) == 1 and kinds == {"text": 1} and skipped == {"bad_record": 3}
  with pytest.raises(ValueError, match="STAGE=PATH"):
    stats.parse_stage("cpt")


def test_cli(tmp_path, tok):
  out = tmp_path / "stats"
  cmd = [sys.executable, "-m", "citrus_jax.data.stats", f"--tokenizer={tok.model_file}",
         "--seq_len=128", f"--out={out}", f"cpt={CPT}", f"sft={SFT}"]
  res = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                       cwd=os.path.dirname(HERE))
  assert res.returncode == 0, res.stderr[-2000:]
  assert res.stdout.strip().splitlines()[-1] == str(out)
  saved = json.load(open(out / "data_stats.json"))
  assert set(saved) == {"cpt", "sft"} and saved["sft"]["seq_len"] == 128
  assert (out / "data_stats.md").read_text().startswith("| stage |")
  assert (out / "lengths_cpt.png").exists() and (out / "lengths_sft.png").exists()
  bad = subprocess.run(cmd[:-2] + ["cpt=/nonexistent.jsonl"], capture_output=True, text=True,
                       timeout=120, cwd=os.path.dirname(HERE))
  assert bad.returncode == 2 and "nonexistent" in bad.stderr and "Traceback" not in bad.stderr


def test_report_section(tmp_path, tok):
  text = stats.report_section({"cpt": CPT}, tok, 32, str(tmp_path))
  assert text.startswith("## Data statistics\n\n| stage |") and "![cpt](lengths_cpt.png)" in text
  assert (tmp_path / "lengths_cpt.png").exists()


def test_seq_len_per_stage(tok):
  out = stats.stage_stats({"cpt": CPT, "sft": SFT}, tok, {"cpt": 4, "sft": 100000})
  assert out["cpt"]["seq_len"] == 4 and out["cpt"]["share_over_seq_len"] > 0
  assert out["sft"]["n_over_seq_len"] == 0
  assert "(cpt 4, sft 100000)" in stats.markdown_table(out)


def test_the_pipeline_report_has_a_data_statistics_section(tmp_path):
  """demo/report.section_data: the steps' files and tokenizer -> the table and one histogram per
  stage, written next to report.md."""
  from citrus_jax import tokenizer as tokenizer_lib
  from citrus_jax.demo import report
  from citrus_jax import tiny_data
  paths = tiny_data.write_files(str(tmp_path))
  sp = tokenizer_lib.train_sentencepiece([paths["cpt"]], str(tmp_path / "sp"), 600)
  paths["sft3_chat"] = paths["sft1"]
  r = report.Report(workdir=str(tmp_path), steps={"data": {"paths": paths},
                                                  "tokenizer": {"model": sp}},
                    summary={}, demo=True)
  md = report.section_data(r)
  assert md.startswith("## Data statistics")
  for stage in ("cpt", "sft1", "sft2", "sft3"):
    assert f"| {stage} | 1 |" in md and (tmp_path / f"lengths_{stage}.png").exists()
  assert report.section_data(report.Report(str(tmp_path), {}, {}, True)) is None
