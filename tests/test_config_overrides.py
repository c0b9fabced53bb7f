"""Command-line mistakes in --config flags as (field, why): unknown fields with the nearest real
one, bad indices, values absl could not parse, a config file that raised."""
from citrus_jax import config_overrides
from configs import cpt, sft


def test_an_unknown_field_names_the_nearest_real_one():
  config = cpt.get_config("tiny")
  assert config_overrides.unknown_override(config, "optim.lr") is None
  assert config_overrides.unknown_override(config, "optim.lrr") == (
      "config.optim.lrr", "no such field in this config; did you mean config.optim.lr?")
  assert config_overrides.unknown_override(config, "optimm.lr") == (
      "config.optimm", "no such field in this config; did you mean config.optim.lr?")
  assert config_overrides.unknown_override(config, "data.global_batch") == (
      "config.data.global_batch",
      "no such field in this config; did you mean config.data.global_batch_size?")
  field, why = config_overrides.unknown_override(config, "sft.select")  # another stage's
  assert field == "config.sft" and why == "no such field in this config"
  assert config_overrides.unknown_override(config, "optim.lr.x") == (
      "config.optim.lr.x", "config.optim.lr is a value (0.001), not a section")


def test_list_elements_and_their_indices():
  config = sft.get_config("tiny")
  assert config_overrides.unknown_override(config, "sft.stages[0].lr") is None
  assert config_overrides.unknown_override(config, "sft.stages[2].lr") == (
      "config.sft.stages[2]", "index 2 is out of range (config.sft.stages has 1)")
  field, why = config_overrides.unknown_override(config, "sft.stages[0].learning_rate")
  assert field == "config.sft.stages[0].learning_rate" and why.startswith("no such field")
  paths = config_overrides.all_paths(config)
  assert {"sft", "sft.stages", "sft.stages[0]", "sft.stages[0].lr", "optim.lr"} <= set(paths)


def test_the_override_paths_and_the_config_file_are_read_from_argv():
  argv = ["main", "--config=configs/sft.py:tiny", "--config.optim.lr=1", "--noconfig.sft.pack",
          "--config.sft.stages[0].lr", "2", "--verbosity=1"]
  assert config_overrides.override_paths(argv) == ["optim.lr", "sft.pack", "sft.stages[0].lr"]
  assert config_overrides.config_argument(argv) == "configs/sft.py:tiny"
  assert config_overrides.config_argument(["main", "--config", "configs/cpt.py"]) == \
      "configs/cpt.py"
  assert config_overrides.config_argument(["main"]) is None


def test_absl_messages_become_field_and_why():
  flag_error = config_overrides.flag_error
  assert flag_error("flag --config.optim.lr=abc: could not convert string to float: 'abc'") == (
      "config.optim.lr", "could not convert string to float: 'abc' (got 'abc')")
  assert flag_error("Missing value for flag --config.optim.lr") == (
      "config.optim.lr", "missing value (--config.<field>=<value>)")
  raised = ("flag --config=configs/cpt.py:nope: Error whilst parsing config file:\n\nTraceback "
            "(most recent call last):\n  File ...\nValueError: configs/cpt.py: unknown preset "
            "'nope'; known: ['tiny']\n")
  assert flag_error(raised) == ("--config", "configs/cpt.py: unknown preset 'nope'; known: "
                                            "['tiny']")
  assert flag_error("Unknown command line flag 'foo'") is None  # absl reports it itself
