"""Our TFDS builder: local JSONL/text files -> an array_record text dataset (no TensorFlow).

Built once (validation and skip counting happen here), then read with random access by
`sources.TfdsTextSource` through `builder.as_data_source(split)` into grain. The builder must
live in an importable package (TFDS resolves its code path), hence this module.

Layout: `<data_dir>/citrus_text_corpus/<name>/1.0.0/` with one split, "train"; features `text`,
and provenance `path` and `line` of each document in the source files.
"""
from __future__ import annotations

import inspect
import os

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from citrus_jax.data import sources


class CitrusTextCorpus(tfds.core.GeneratorBasedBuilder):
  """Text documents with provenance; the corpus name is the builder config name."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "text, path, line."}

  def __init__(self, *, src_paths: sources.PathSpec = (), text_field: str = "text",
               text_unit: str = "file", on_error: str = "raise", **kwargs):
    self._src_paths = src_paths
    self._text_field, self._text_unit, self._on_error = text_field, text_unit, on_error
    self.skips = sources.SkipCounter()
    super().__init__(**kwargs)

  # TFDS's default looks the package up via `importlib_resources`, which tfds 4.9.10 does not
  # declare as a dependency; the module file is all it needs.
  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    return epath.Path(inspect.getfile(cls))

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description="Text documents for continued pretraining (citrus_jax).",
        features=tfds.features.FeaturesDict({
            "text": tfds.features.Text(),
            "path": tfds.features.Text(),
            "line": np.int64,
        }),
        disable_shuffling=True,  # the grain pipeline shuffles; keep file order for provenance
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    if not self._src_paths:
      raise ValueError("CitrusTextCorpus: pass src_paths= to build the dataset")
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    for path in sources.expand_paths(self._src_paths):
      if path.endswith(sources.JSONL_SUFFIXES):
        records = sources.read_jsonl(path, text_field=self._text_field,
                                     on_error=self._on_error, skips=self.skips)
      else:
        records = sources.read_text(path, unit=self._text_unit, on_error=self._on_error,
                                    skips=self.skips)
      for rec in records:
        yield f"{path}:{rec['line']}", rec
    self.skips.log(f"CitrusTextCorpus({self.builder_config.name})")


def build_tfds_text(src_paths: sources.PathSpec, data_dir: str | os.PathLike,
                    name: str = "default", *, text_field: str = "text", text_unit: str = "file",
                    on_error: str = "raise", overwrite: bool = False) -> CitrusTextCorpus:
  """Builds (or reuses, unless `overwrite`) the dataset; returns the prepared builder.

  JSONL files (`.jsonl/.json/.ndjson`) take `text_field`; other files are plain text split by
  `text_unit` ("file" or "paragraph"). `builder.skips` holds what this build skipped.
  """
  builder = CitrusTextCorpus(
      src_paths=src_paths, text_field=text_field, text_unit=text_unit, on_error=on_error,
      data_dir=os.fspath(data_dir), config=tfds.core.BuilderConfig(name=name),
      file_format="array_record")
  mode = (tfds.download.GenerateMode.FORCE_REDOWNLOAD if overwrite
          else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(download_mode=mode))
  return builder


def load_tfds_text(data_dir: str | os.PathLike, name: str = "default",
                   split: str = "train") -> sources.TfdsTextSource:
  """Opens a built corpus as a random-access source."""
  builder = CitrusTextCorpus(data_dir=os.fspath(data_dir),
                             config=tfds.core.BuilderConfig(name=name),
                             file_format="array_record")
  if not builder.is_prepared():
    raise FileNotFoundError(f"no built corpus {name!r} under {data_dir} (run build_tfds_text)")
  return sources.TfdsTextSource(builder, split=split)
