"""Mistakes in `--config` flags, as `(field, why)` problems: main prints them as config errors.

ml_collections raises a bare KeyError/AttributeError (a traceback) for an override of a field the
config lacks (`--config.optim.lrr=1`), and absl wraps a value that does not parse; these turn
both into the field and what to type instead (difflib's nearest real field).
"""
from __future__ import annotations

import difflib
import re
from typing import Any, Iterable, Sequence

import ml_collections

from citrus_jax.config_check import MISSING, Problem, child, tokens



def all_paths(config: Any, prefix: str = "") -> list[str]:
  """Every field path of a config, sections and list elements included ('sft.stages[0].lr')."""
  out = []
  items: Iterable[tuple[str, Any]] = ()
  if isinstance(config, (ml_collections.ConfigDict, dict)):
    items = ((f"{prefix}.{k}" if prefix else str(k), v) for k, v in config.items())
  elif isinstance(config, (list, tuple)):
    items = ((f"{prefix}[{i}]", v) for i, v in enumerate(config))
  for path, value in items:
    out.append(path)
    out += all_paths(value, path)
  return out


def unknown_override(config: ml_collections.ConfigDict, path: str) -> Problem | None:
  """`--config.<path>=...` names no field of `config`: the field and the nearest real ones."""
  node, done = config, ""
  for t in tokens(path):
    nxt = child(node, t)
    here = f"{done}[{t}]" if isinstance(t, int) else f"{done}.{t}" if done else str(t)
    if nxt is MISSING:
      if isinstance(t, int) and isinstance(node, (list, tuple)):
        return f"config.{here}", f"index {t} is out of range (config.{done} has {len(node)})"
      if not isinstance(node, (ml_collections.ConfigDict, dict, list, tuple)):
        return f"config.{here}", f"config.{done} is a value ({node!r}), not a section"
      near = difflib.get_close_matches(path, all_paths(config), n=1, cutoff=0.6)
      if not near and isinstance(node, (ml_collections.ConfigDict, dict)):
        keys = difflib.get_close_matches(str(t), [str(k) for k in node], n=1, cutoff=0.6)
        near = [f"{done}.{k}" if done else k for k in keys]
      hint = f"; did you mean config.{near[0]}?" if near else ""
      return f"config.{here}", "no such field in this config" + hint
    node, done = nxt, here
  return None


def override_paths(argv: Sequence[str], flag: str = "config") -> list[str]:
  """The field paths of `--config.<path>[=value]` (and `--noconfig.<path>`) arguments."""
  out = []
  for a in argv:
    m = re.match(rf"^--?(?:no)?{flag}\.([^=\s]+)", a)
    if m:
      out.append(m.group(1))
  return out


def config_argument(argv: Sequence[str], flag: str = "config") -> str | None:
  """The value of the last `--config=<file>[:preset]` (or `--config <file>`) argument."""
  value = None
  for i, a in enumerate(argv):
    if a in (f"--{flag}", f"-{flag}") and i + 1 < len(argv):
      value = argv[i + 1]
    elif re.match(rf"^--?{flag}=", a):
      value = a.split("=", 1)[1]
  return value


def flag_error(message: str, flag: str = "config") -> Problem | None:
  """absl's message for a bad --config flag (a value that does not parse, a missing value, a
  config file that raised) -> (field, why); None when the message is about another flag."""
  lines = [l.strip() for l in message.strip().splitlines() if l.strip()]
  if not lines:
    return None
  m = re.search(rf"flag --{flag}\.([^=\s:]+)=(.*?): (.*)", lines[0])
  if m:
    return f"{flag}.{m.group(1)}", f"{m.group(3)} (got {m.group(2)!r})"
  m = re.search(rf"Missing value for flag --{flag}\.(\S+)", lines[0])
  if m:
    return f"{flag}.{m.group(1)}", "missing value (--config.<field>=<value>)"
  if re.search(rf"flag --{flag}=", lines[0]):  # the config file raised: its last line says why
    last = re.sub(r"^\w+(Error|Exception): ", "", lines[-1])
    return f"--{flag}", last
  if re.search(rf"--{flag}\b", lines[0]):
    return f"--{flag}", lines[0]
  return None
