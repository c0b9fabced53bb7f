"""Rule-based mapping of a free-text answer to an option letter (no LLM judge).

The reference judged answers longer than 3 characters with an unavailable internal model and only
knew letters A-E; here every answer is mapped deterministically, letters go up to the number of
options (MMLU-Pro: J), and what cannot be mapped unambiguously is reported as None.

Order of evidence in `map_to_option`: the whole answer is a letter ("B", "(B)", "Answer: B") -> the
whole answer is an option's text, or a labelled one ("B. text", unless a later statement corrects
it) -> the last explicit statement ("the answer is C", "答案是C", "\\boxed{C}") -> labelled letters
("(B)", "option B", "选项B") agreeing with the options whose text the answer contains -> the answer
is part of exactly one option's text. Ambiguity at any step gives None, never a guess.
Shared by eval/extract.py (answers in `<answer>` tags) and eval/untagged.py (outputs without).
"""
from __future__ import annotations

import re
import unicodedata

_CJK = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"


# ------------------------------------------------------------------------------------------------
# Text normalisation


def _clean(text: str) -> str:
  """NFKC (full-width letters and punctuation become ASCII) and markdown emphasis removed."""
  text = unicodedata.normalize("NFKC", text)
  text = re.sub(r"\*\*|__|`", "", text)
  return text.strip()


def _norm(text: str, level: int = 0) -> str:
  """Text folded for comparison: level 0 drops case, punctuation and articles; level 1 keeps
  case ("Bb" vs "BB"); level 2 keeps punctuation too ("-.27" vs ".27", "v^+").

  "A" is dropped only as a leading article, so "Vitamin A" and "hepatitis A" keep it. Texts made
  only of symbols ("↓ ↑ ↑") are kept as they are.
  """
  raw = unicodedata.normalize("NFKC", text)
  if level >= 2:
    return " ".join(raw.split()).rstrip(".。")
  fold = level == 0
  text = re.sub(r"^\s*(?:a|an|the)\s+", " ", raw, flags=re.I)
  text = re.sub(r"\b(?:a|an|[Tt]he|An)\b", " ", text)
  text = re.sub(rf"[^\w{_CJK}]+|_", " ", text.lower() if fold else text)
  text = " ".join(text.split())
  if not text:
    return " ".join((raw.lower() if fold else raw).split())
  # Spaces between CJK characters carry no meaning.
  return re.sub(rf"(?<=[{_CJK}]) (?=[{_CJK}])", "", text)


_LEVELS = (0, 1, 2)


def _contains(hay: str, needle: str) -> bool:
  """Whole-word containment for Latin text, plain containment when CJK is involved."""
  if not needle:
    return False
  if re.search(rf"[{_CJK}]", needle):
    return needle.replace(" ", "") in hay.replace(" ", "")
  return f" {needle} " in f" {hay} "


# ------------------------------------------------------------------------------------------------
# Letter forms

# Leading phrases that introduce an answer; stripped before looking at the rest.
_PREFIX = re.compile(
    r"^\s*(?:(?:so|thus|therefore|hence|overall|in conclusion)\s*,?\s*)?"
    r"(?:(?:the|my)\s+)?(?:final\s+|correct\s+|best\s+|right\s+|most\s+likely\s+)?"
    r"(?:answer|option|choice)\s*(?:is|would\s+be|should\s+be|will\s+be|=|:|-)?\s*:?\s*"
    r"|^\s*(?:正确|最终|最佳)?(?:答案|选项|选择)\s*(?:应该|应)?(?:是|为|选)?\s*[:：]?\s*"
    r"|^\s*(?:故|所以|因此)?选(?:择)?\s*", re.I)
_OPTION_WORD = re.compile(r"^\s*(?:option|choice|选项)\s*", re.I)
# "(B)", "[B]", "B", optionally followed by punctuation, and nothing else.
_PURE = re.compile(r"^[(\[{]?\s*([A-Za-z])\s*[)\]}]?\s*[.:;,!。、)]*\s*(?:项|选项)?$")
# "B. text", "B) text", "(B) text", "B: text", "B、text".
_LABELLED = re.compile(r"^(?:[(\[]\s*([A-Z])\s*[)\]]|([A-Z])\s*[.:)、．])\s*(.+)$", re.S)
# "B text" where text must then match option B.
_SPACED = re.compile(r"^([A-Z])\s+(.+)$", re.S)

_END = r"(?=\s*(?:$|[.!;,)]|\s(?i:because|since|as|given)\b))"  # the letter ends a clause
_L = r"(?<![A-Za-z0-9])\(?\s*([A-Z])\s*\)?(?![A-Za-z0-9'’-])"
_LL = r"(?<![A-Za-z0-9])\(?\s*([A-Za-z])\s*\)?(?![A-Za-z0-9'’-])"  # lower case allowed
# Explicit answer statements in prose; the last one in the text wins.
_STATEMENTS = [
    re.compile(r"\b(?:answer|option|choice)\s*(?:is|would\s+be|should\s+be|will\s+be|=|:|：|-)"
               r"\s*:?\s*(?:option\s*|choice\s*)?" + _LL, re.I),
    re.compile(r"\b(?:answer|option|choice)\s+(?:is\s+)?(?:most\s+likely|probably|clearly)\s+"
               r"(?:option\s*)?" + _L, re.I),
    re.compile(r"\b(?:choose|select|pick|go\s+with|opt\s+for)\s+(?:option\s*|choice\s*)?" + _L,
               re.I),
    re.compile(r"(?:^|[\n.;:!?,]\s*|\b(?:so|thus|therefore|hence|option|choice)\s+)" + _L +
               r"\s+(?:is|would\s+be|seems|appears)\s+(?:to\s+be\s+)?(?:the\s+)?"
               r"(?:most\s+likely\s+|best\s+|correct\s+|right\s+)*(?:answer|option|choice|one|"
               r"correct|right|best)\b", re.I),
    re.compile(r"\\boxed\{\s*(?:\\text\{\s*)?" + _LL),
    re.compile(r"答案\s*(?:应该|应|可能|就)?\s*(?:是|为|选)\s*[:：]?\s*(?:选项)?\s*" + _L),
    re.compile(r"答案\s*[:：]\s*(?:选项)?\s*" + _L),
    re.compile(r"(?<![不未])选(?:择)?\s*(?:选项)?\s*" + _L),
    re.compile(_L + r"\s*(?:选项|项)?\s*(?:是|为)?\s*(?:正确|最佳|最可能|最合适)"),
    # Corrections and eliminations: "Not A; it is B", "Not A, but B", "B and C are wrong, so D".
    re.compile(r"(?i:\bit\s+(?:is|must\s+be)|\bit[’']s)\s+(?i:option\s*)?" + _L + _END),
    re.compile(r"(?i:\bnot\s+(?:option\s*)?)[A-Z]\s*(?:[,;]\s*|\s+)(?i:but\s+)(?i:rather\s+)?"
               r"(?i:option\s*)?" + _L + _END),
    re.compile(r"(?i:\b(?:so|thus|therefore|hence|leaving|which\s+leaves|that\s+leaves))\s*,?\s*"
               r"(?i:only\s+)?(?i:option\s*)?" + _L + _END),
]
# A following letter makes the statement a hedge: "the answer is C or D".
_HEDGE = re.compile(r"^\s*\)?\s*(?:,|/|&|(?i:and|or)|和|或|与)\s*(?i:option\s*)?"
                    r"\(?\s*[A-Z]\s*\)?(?![A-Za-z])")
# "E. coli", "S. aureus": an abbreviated genus, not a letter.
_GENUS = re.compile(r"\.\s*[a-z]{3,}")
_LINE_LABEL = re.compile(r"^\s*\(?([A-Z])\s*[.:)、]\s", re.M)
# Labelled letters anywhere: "(B)", "option B", "选项B", "B项", a line starting "B." / "B)".
_WEAK = [
    re.compile(r"[(\[]\s*([A-Z])\s*[)\]]"),
    re.compile(r"\b(?:option|choice)\s*\(?\s*([A-Z])\b(?![A-Za-z0-9'’-])", re.I),
    re.compile(r"选项\s*([A-Z])(?![A-Za-z])|(?<![A-Za-z])([A-Z])\s*(?:项|选项)"),
    _LINE_LABEL,
]
# Words that may follow a bare "A"/"I" when it is a letter; any other word makes it an article
# ("A 45-year-old man ...") or a pronoun ("I think ...").
_AFTER_LETTER = {"is", "was", "because", "since", "as", "which", "and", "or", "but", "given",
                 "due", "here", "seems", "appears", "would", "should", "fits", "best", "for",
                 "with", "correct", "right", "in", "from", "-"}


def _is_article(text: str, start: int, end: int, letter: str) -> bool:
  """A bare "A"/"I" followed by an ordinary word is an article or pronoun, not an option."""
  if letter not in "AaIi" or text[:start].rstrip().endswith(("(", "[")):
    return False
  m = re.match(r"\s+([A-Za-z0-9-]+)", text[end:])
  return bool(m) and m.group(1).lower() not in _AFTER_LETTER


def _strip_prefix(text: str) -> str:
  for _ in range(3):
    new = _PREFIX.sub("", text, count=1)
    if new == text:
      break
    text = new
  return _OPTION_WORD.sub("", text, count=1).strip()


def _text_matches(answer: str, options: dict[str, str]) -> list[str]:
  """Letters of options whose normalised text equals the answer; finer levels break ties."""
  for level in _LEVELS:
    a = _norm(answer, level)
    hits = [k for k, v in options.items() if a and _norm(v, level) == a]
    if len(hits) <= 1:
      return hits
  return hits


def _agrees(rest: str, option: str) -> bool:
  a, o = _norm(rest), _norm(option)
  return bool(a) and (a == o or _contains(a, o) or _contains(o, a))


def _abbreviation(option: str) -> re.Pattern | None:
  """Pattern of "S. aureus" for the option "Staphylococcus aureus" (binomial names)."""
  words = option.split()
  if len(words) != 2 or not re.fullmatch(r"[A-Z][a-z]+", words[0]) or \
      not re.fullmatch(r"[a-z]+", words[1]):
    return None
  return re.compile(rf"(?<![A-Za-z]){words[0][0]}\.\s*{words[1]}\b")


def _abbreviated(text: str, options: dict[str, str]) -> list[str]:
  return [k for k, v in options.items() if (p := _abbreviation(v)) and p.search(text)]


def _labelled_form(body: str, options: dict[str, str]) -> tuple[bool, str | None]:
  """(matched, letter) for "B. text" / "(B) text" / "B text"; the text may not name another."""
  if len(set(_LINE_LABEL.findall(body))) > 1:  # a list going through the options
    return False, None
  m = _LABELLED.match(body)
  if m:
    letter = m.group(1) or m.group(2)
    lines = m.group(3).strip().splitlines()
    rest = lines[0] if lines else ""
    if m.group(2) and _is_genus(body, m.end(2), letter, options):
      return False, None
  else:
    m = _SPACED.match(body)
    if not m or m.group(1) not in options:
      return False, None
    letter, rest = m.group(1), m.group(2).strip().splitlines()[0]
    r, o = _norm(rest), _norm(options[letter])
    if not (r == o or f"{r} ".startswith(f"{o} ")):  # "A 45-year-old ...": an article
      return False, None
  if letter in options and _agrees(rest, options[letter]):
    return True, letter
  others = [k for k, v in options.items()
            if k != letter and (_norm(v) == _norm(rest) or _contains(_norm(v), _norm(rest)))]
  if others:  # "B. <text of C>" or "E. coli" when E is something else: contradictory
    return (True, None) if letter in options else (False, None)
  return True, letter if letter in options else None


def _is_genus(text: str, end: int, letter: str, options: dict[str, str]) -> bool:
  """ "C. difficile", "E. coli": a letter, a period and a lower-case word not of that option."""
  if not _GENUS.match(text, end):
    return False
  rest = text[end:].lstrip(" .").splitlines()[0]
  return letter not in options or not _agrees(rest, options[letter])


def _last_statement(text: str, options: dict[str, str]) -> tuple[int, str] | None:
  """(position, letter) of the last explicit answer statement; letters may be invalid."""
  best = None
  for pat in _STATEMENTS:
    for m in pat.finditer(text):
      letter = m.group(1)
      if letter.islower() and letter in "ai" and not re.match(r"\s*(?:$|[.,;:!?)])",
                                                                 text[m.end():]):
        continue
      if _is_article(text, m.start(1), m.end(1), letter) or \
          _is_genus(text, m.end(1), letter.upper(), options):
        continue
      # A hedge ("C or D") names several letters: "?" is never an option.
      letter = "?" if _HEDGE.match(text[m.end():]) else letter.upper()
      if best is None or m.start() > best[0]:
        best = (m.start(), letter)
  return best


# Phrases after which an option's text is a commitment ("the most likely diagnosis is X").
_TEXT_CUE = re.compile(
    r"(?i:\b(?:(?:final|correct|best|right)\s+)?(?:answer|choice)\s*(?:is|would\s+be|:)"
    r"|\b(?:most\s+likely|likely|probable|final|working|leading|correct)\s+(?:\w+\s+)?"
    r"(?:diagnosis|cause|answer|explanation|mechanism|organism|pathogen|treatment|choice|option"
    r"|finding|step|management)\s*(?:is|would\s+be|:)"
    r"|\bdiagnosis\s*(?:is|:)"
    r"|\b(?:best|most\s+appropriate|next|first[- ]line|preferred|recommended)\s+(?:\w+\s+){0,3}?"
    r"(?:is|would\s+be)"
    r"|\b(?:I\s+(?:would\s+)?|we\s+(?:should\s+)?)(?:choose|select|pick|go\s+with|opt\s+for)"
    r"|\bshould\s+(?:receive|be\s+given|be\s+treated\s+with|be\s+started\s+on|undergo)"
    r"|\bit\s+(?:is|must\s+be)|\bit[’']s"
    r"|\b(?:so|thus|therefore|hence)\s*,?(?:\s+(?:it\s+is|the\s+answer\s+is))?"
    r"|\bnot\s+[^;,.\n]{1,60}?(?:[,;]\s*|\s+)but\s+(?:rather\s+)?)\s*:?\s*"
    r"|(?:答案|诊断|最可能的诊断)\s*(?:应该|应|可能)?\s*(?:是|为|[:：])\s*")
# Where a stated fragment ends: a sentence end (not "E. coli"), a line, a reason.
_FRAG_END = re.compile(r"(?<![A-Z])[.!?;。；？！](?:\s|$)|\n|,|，|\s(?i:because|since|as|given|"
                       r"which|due)\b")
# What may follow an option's text in a stated fragment ("nitrofurantoin for 5 days").
_TAIL_BAD = re.compile(r"^\s*(?:is|are|was|were|would|could|may|might|can|cannot|should|"
                       r"does|do|did|has|have|seems|appears|or|vs\.?|versus|and/or)\b|"
                       r"\b(?:not|no|unlikely|ruled?|excluded?|wrong|incorrect|"
                       r"contraindicated|avoid)\b|[?？]", re.I)


def fragment_option(frag: str, options: dict[str, str]) -> tuple[bool, str | None]:
  """(decided, letter) for the words after an answer cue: the whole fragment is the answer, or
  it starts with exactly one option's text followed by nothing that hedges, negates or names
  another option ("nitrofurantoin for 5 days" yes, "ampicillin is not appropriate" no)."""
  frag = frag.strip().rstrip(" .。!！")
  if not frag:
    return False, None
  decided, letter = whole_answer(frag, options)
  if decided:
    return decided, letter
  a = _norm(frag)
  starts = [(len(o), k) for k, v in options.items() if (o := _norm(v)) and
            f"{a} ".startswith(f"{o} ") and not re.search(rf"[{_CJK}]", o)]
  starts += [(len(o), k) for k, v in options.items() if (o := _norm(v)) and
             re.search(rf"[{_CJK}]", o) and a.replace(" ", "").startswith(o.replace(" ", ""))]
  if not starts:
    return False, None
  top = max(n for n, _ in starts)
  best = [k for n, k in starts if n == top]
  if len(best) != 1:
    return True, None
  tail = a[top:] if not re.search(rf"[{_CJK}]", a) else a.replace(" ", "")[top:]
  if _TAIL_BAD.search(tail) or _TAIL_BAD.search(frag[len(options[best[0]]):]) or \
      any(j != best[0] and _contains(tail, _norm(v)) for j, v in options.items()):
    return False, None
  return True, best[0]


def _stated_text(text: str, options: dict[str, str]) -> tuple[int, str] | None:
  """(position, letter) of the last answer cue whose fragment names exactly one option."""
  best = None
  for m in _TEXT_CUE.finditer(text):
    end = _FRAG_END.search(text, m.end())
    stop = end.start() if end else len(text)
    if end is not None and text[end.start()] in "?？":
      continue  # a question, not an answer
    decided, letter = fragment_option(text[m.end():stop], options)
    if decided and letter is not None:
      best = (m.start(), letter)
  return best


def _weak_letters(text: str, options: dict[str, str]) -> set[str]:
  found = set()
  for pat in _WEAK:
    for m in pat.finditer(text):
      letter = next(g for g in m.groups() if g)
      if letter in options and not _is_article(text, m.start(1), m.end(1), letter):
        found.add(letter)
  return found


def _contained(text: str, options: dict[str, str]) -> set[str]:
  """Options whose text appears in the answer, minus those inside a longer matching option."""
  for level in _LEVELS:
    a = _norm(text, level)
    hits = {k: _norm(v, level) for k, v in options.items() if _contains(a, _norm(v, level))}
    found = {k for k, v in hits.items()
             if not any(o != v and _contains(o, v) for j, o in hits.items() if j != k)}
    if len(found) <= 1 or len({hits[k] for k in found}) > 1:
      return found  # finer levels only separate options equal at this one ("Bb" / "BB")
  return found


def whole_answer(text: str, options: dict[str, str]) -> tuple[bool, str | None]:
  """(decided, letter) when the whole cleaned text is the answer: a letter ("B", "Answer: B"),
  one option's text, "E. coli" for Escherichia coli, or a labelled option ("B. text", unless a
  later statement corrects it). decided=False leaves the text to the other rules."""
  body = _strip_prefix(text).rstrip(" .。!！")
  # 1. The whole answer is a letter ("B", "(B)", "Answer: B", "选项B").
  for candidate in (text.rstrip(" .。!！"), body):
    m = _PURE.match(candidate)
    if m:
      if m.group(1).upper() in options:
        return True, m.group(1).upper()
      exact = _text_matches(candidate, options)  # an option whose text is "M" (cell phase)
      return True, exact[0] if len(exact) == 1 else None
  # 2. The whole answer is one option's text, or a labelled option ("B. text").
  exact = _text_matches(body, options) or _text_matches(text, options)
  if len(exact) == 1:
    return True, exact[0]
  stated = _last_statement(text, options)
  abbrev = _abbreviated(body, options)
  if len(abbrev) == 1 and _abbreviation(options[abbrev[0]]).match(body):
    return True, abbrev[0]  # "E. coli" names Escherichia coli, not option E
  for candidate in (text, body):
    matched, letter = _labelled_form(candidate, options)
    if matched:  # a later statement naming another letter corrects the label
      if letter is not None and stated is not None and stated[1] != letter:
        break
      return True, letter
  return False, None


def map_to_option(answer: str | None, options: dict[str, str]) -> str | None:
  """Option letter named by a free-text answer, or None when absent or ambiguous."""
  if not answer or not options:
    return None
  text = _clean(answer)
  if not text:
    return None
  decided, letter = whole_answer(text, options)
  if decided:
    return letter
  body = _strip_prefix(text).rstrip(" .。!！")
  stated = _last_statement(text, options)
  # 3. The last explicit statement.
  if stated is not None:
    return stated[1] if stated[1] in options else None
  # 3b. A statement naming an option's text ("not ampicillin; it is nitrofurantoin").
  named = _stated_text(text, options)
  if named is not None:
    return named[1]
  # 4. Labelled letters and contained option texts must agree.
  weak = _weak_letters(text, options)
  contained = _contained(text, options) or set(_abbreviated(text, options))
  if len(weak) == 1:
    (letter,) = weak
    return letter if not contained or contained == weak else None
  if len(contained) == 1 and (not weak or contained <= weak):
    return next(iter(contained))
  if weak or contained:
    return None
  # 5. The answer names part of exactly one option's text ("ceftriaxone" -> "Ceftriaxone IV").
  a = _norm(body)
  if len(a.replace(" ", "")) >= 4 or re.search(rf"[{_CJK}]{{2}}", a):
    inside = [k for k, v in options.items() if _contains(_norm(v), a)]
    if len(inside) == 1:
      return inside[0]
  return None
