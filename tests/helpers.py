"""Small helpers shared by several test files."""
import os
import struct

from tensorboardX.proto import event_pb2


def with_generation_tags(template, fmt):
  """The same template with transformers' {% generation %} around assistant content + eot."""
  if fmt == "llama3":
    old = "{{- message['content'] | trim }}{{- '<|eot_id|>' }}"
    new = ("{%- if message['role'] == 'assistant' %}{% generation %}{{- message['content'] | trim"
           " + '<|eot_id|>' }}{% endgeneration %}{%- else %}" + old + "{%- endif %}")
  else:
    old = "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    new = ("{%- if message['role'] == 'assistant' %}{{- '<|im_start|>assistant\\n' }}"
           "{% generation %}{{- message['content'] + '<|im_end|>' }}{% endgeneration %}"
           "{{- '\\n' }}{%- else %}" + old + "{%- endif %}")
  assert old in template
  return template.replace(old, new)


def write_word_corpus(d, words, n_docs, seed=0):
  """n_docs random documents of 5-39 `words` as d/corpus.jsonl ({"text"} lines) and
  d/corpus.txt (one per line, for a tokenizer); returns the RandomState for further draws."""
  import json
  import numpy as np
  rng = np.random.RandomState(seed)
  docs = [" ".join(rng.choice(words, size=rng.randint(5, 40))) for _ in range(n_docs)]
  with open(d / "corpus.jsonl", "w") as f:
    for doc in docs:
      f.write(json.dumps({"text": doc}) + "\n")
  (d / "corpus.txt").write_text("\n".join(docs))
  return rng


def tensorboard_events(workdir: str) -> list:
  """Every Event in a run's TensorBoard files, oldest file first (TFRecord framing read here, so
  tests do not trust the writer they test)."""
  tb = os.path.join(workdir, "tensorboard")
  out = []
  for name in sorted(os.listdir(tb)):
    with open(os.path.join(tb, name), "rb") as f:
      while header := f.read(8):
        (length,) = struct.unpack("<Q", header)
        f.read(4)
        out.append(event_pb2.Event.FromString(f.read(length)))
        f.read(4)
  return out


def tensorboard_scalars(workdir: str) -> list[tuple[int, str, float]]:
  return [(e.step, v.tag, round(v.simple_value, 6))
          for e in tensorboard_events(workdir) for v in e.summary.value]
