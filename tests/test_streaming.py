"""TextStream: streamed deltas always form a prefix of the final text, whatever the tokens."""
from citrus_jax.infer.streaming import TextStream

# A toy tokenizer: ids are characters, except 9 = half of "é" (shown as U+FFFD until 10 completes
# it) and 0 = a stop id that decodes to nothing.
_PIECES = {1: "a", 2: "b", 3: "<", 4: "/", 5: ">", 6: " ", 9: "", 10: ""}


def _decode(ids):
  out = ""
  for i, t in enumerate(ids):
    if t == 9:
      out += "é" if i + 1 < len(ids) and ids[i + 1] == 10 else "\ufffd"
    else:
      out += _PIECES.get(t, "")
  return out


def _run(tokens, stops, final):
  s = TextStream(_decode, {0}, stops)
  deltas = [s.push(t) for t in tokens]
  for k in range(1, len(deltas) + 1):
    assert final.startswith("".join(deltas[:k])), (deltas, final)
  return deltas, s.finish(final)


def test_plain_tokens_stream_one_by_one():
  deltas, tail = _run([1, 2, 6, 1, 0], [], "ab a")
  assert deltas == ["a", "b", " ", "a", ""] and tail == ""


def test_a_partial_character_is_held_until_complete():
  deltas, tail = _run([1, 9, 10, 2], [], "aéb")
  assert deltas == ["a", "", "é", "b"] and tail == ""


def test_a_possible_stop_string_is_held_and_a_complete_one_ends_the_stream():
  deltas, tail = _run([1, 3, 4, 2, 3, 4, 5, 1], ["</>"], "a</b")
  assert deltas == ["a", "", "", "</b", "", "", "", ""] and tail == ""
  deltas, tail = _run([1, 3, 4], ["</>"], "a</")  # ended at max_tokens: finish sends the rest
  assert "".join(deltas) == "a" and tail == "</"


def test_finish_refuses_a_final_text_the_stream_already_contradicts():
  s = TextStream(_decode, set(), [])
  assert s.push(1) == "a"
  assert s.finish("b") == "" and s.sent == "a"
