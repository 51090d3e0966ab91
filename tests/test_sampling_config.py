"""SamplingConfig and PreprocessConfig: the one place their defaults live, checked values, and the checkpoint's
sampling_config.json read and written in its format."""

import dataclasses
import inspect
import json
from pathlib import Path

import pytest

from vat.errors import VatError
from vat.preprocess_config import DEFAULT_PREPROCESS, REMOVE_BACKGROUND, PreprocessConfig
from vat.sampling_config import (CFG_SCHEDULES, DEFAULT_SAMPLING, SAMPLING_CONFIG, SAMPLING_DEFAULTS, SamplingConfig,
                                 check_sampling, read_sampling)

SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints"


def test_the_shipped_file_loads_and_is_written_back_in_its_format(tmp_path):
    shipped = (SHIPPED / SAMPLING_CONFIG).read_text()
    config = SamplingConfig.read(SHIPPED)
    assert config.to_dict() == json.loads(shipped) == read_sampling(SHIPPED)
    config.save(tmp_path)
    assert (tmp_path / SAMPLING_CONFIG).read_text() == shipped
    assert SamplingConfig.read(tmp_path / "no-such-folder") == DEFAULT_SAMPLING


def test_values_are_typed_and_checked():
    config = SamplingConfig(cfg=2, top_k=5.0, temperature_last=1)
    assert (config.cfg, config.top_k, config.temperature_last) == (2.0, 5, 1.0)
    assert type(config.cfg) is float and type(config.top_k) is int
    for kwargs, message in (({"cfg": -1}, "cfg=-1.0 is out of range"), ({"cfg_schedule": "cosine"}, "cfg_schedule"),
                            ({"temperature": 0}, "temperature=0.0"), ({"temperature_last": -0.5}, "temperature_last"),
                            ({"top_k": 2.5}, "top_k=2.5 is not a whole number"), ({"top_p": 1.5}, "top_p"),
                            ({"top_p": float("nan")}, "top_p"), ({"temperature": "hot"}, "is not a float")):
        with pytest.raises(VatError, match=message):
            SamplingConfig(**kwargs)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.cfg = 3.0


def test_replace_keeps_what_is_unset_and_refuses_unknown_names():
    changed = DEFAULT_SAMPLING.replace(cfg=3, top_k=None, cfg_schedule="constant")
    assert changed == SamplingConfig(cfg=3.0, cfg_schedule="constant") and DEFAULT_SAMPLING == SamplingConfig()
    with pytest.raises(VatError, match=r"unknown sampling setting\(s\) \['guidance'\]"):
        DEFAULT_SAMPLING.replace(guidance=2)
    assert check_sampling({"cfg": 3, "top_k": None}) == {"cfg": 3.0}
    assert SAMPLING_DEFAULTS == dataclasses.asdict(SamplingConfig()) and CFG_SCHEDULES[0] == SamplingConfig.cfg_schedule


def _defaults(fn) -> dict:
    return {name: p.default for name, p in inspect.signature(fn).parameters.items()
            if p.default is not inspect.Parameter.empty}


def test_the_library_takes_its_defaults_from_the_configs():
    from vat.bench import bench_sampling
    from vat.models.gpt import NextScaleGPT
    from vat.pipeline import Pipeline
    from vat.preprocess import preprocess_image

    sampling = DEFAULT_SAMPLING.to_dict()
    assert {k: v for k, v in _defaults(NextScaleGPT.generate).items() if k in sampling} == sampling
    assert _defaults(bench_sampling)["cfg"] == DEFAULT_SAMPLING.cfg
    assert _defaults(preprocess_image) == dataclasses.asdict(DEFAULT_PREPROCESS)
    generate = _defaults(Pipeline.generate)
    assert (generate["foreground_ratio"], generate["remove_background"]) == \
        (DEFAULT_PREPROCESS.foreground_ratio, DEFAULT_PREPROCESS.remove_background)
    assert all(generate[k] is None for k in sampling)  # unset: the pipeline's own (its checkpoint's) settings


def test_preprocess_config_checks_its_values():
    assert PreprocessConfig() == DEFAULT_PREPROCESS and DEFAULT_PREPROCESS.remove_background in REMOVE_BACKGROUND
    for kwargs, message in (({"foreground_ratio": 0.0}, "foreground_ratio"), ({"foreground_ratio": 1.5}, "foreground"),
                            ({"size": 4}, "size"), ({"size": 8.5}, "size"), ({"remove_background": "magic"}, "magic")):
        with pytest.raises(VatError, match=message):
            PreprocessConfig(**kwargs)
