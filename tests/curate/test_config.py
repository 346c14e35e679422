import pytest

from sapiens2.curate.config import CurateConfig, DecodeConfig, fingerprint, load_config


def test_defaults_are_the_papers_size_rule():
    assert CurateConfig().decode.min_short_side == 384
    assert load_config(None) == CurateConfig()


def test_toml_overrides_only_what_it_names(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[decode]\nmin_short_side = 256\n[dedup]\ncosine_threshold = 1\ndeep = false\n")
    cfg = load_config(p)
    assert cfg.decode.min_short_side == 256 and cfg.dedup.cosine_threshold == 1.0 and cfg.dedup.deep is False
    assert cfg.person == CurateConfig().person


@pytest.mark.parametrize("text, words", [
    ("[decod]\nx = 1\n", "unknown table [decod]"),
    ("[decode]\nmin_side = 1\n", "unknown key decode.min_side"),
    ("[decode]\nmin_short_side = 'big'\n", "decode.min_short_side must be a int"),
    ("[person]\nenabled = 1\n", "person.enabled must be a bool"),
    ("[cluster]\ntarget = -1\n", "cluster.target must be >= 0"),
    ("[decode\n", "not valid TOML"),
    ("[clip]\nphoto_prompts = []\n", "clip.photo_prompts must be a non-empty list of non-empty strings"),
    ("[clip]\ntext_prompts = [1, 2]\n", "clip.text_prompts must be a list of strings"),
    ("[clip]\nno_text_prompts = 'no text'\n", "clip.no_text_prompts must be a list of strings"),
    ("[clip]\nmin_photo_score = 1.5\n", "clip.min_photo_score must be in [0, 1]"),
    ("[clip]\nmax_text_score = -0.1\n", "clip.max_text_score must be in [0, 1]"),
    ("[clip]\ntext_detector = 'ocr'\n", "clip.text_detector must be one of clip, strokes, got 'ocr'"),
    ("[clip]\nbatch_size = 0\n", "clip.batch_size must be >= 1"),
    ("[clip]\nmodel = ''\n", "clip.model must name"),
    ("[clip]\naesthetic_file = ''\n", "clip.aesthetic_file must name"),
    ("[clip]\nthreshold = 1\n", "unknown key clip.threshold"),
    ("[embed]\nsource = 'dino'\n", "embed.source must be one of sapiens2, clip"),
    ("[head]\nmin_landmarks = 3\n", "head.min_landmarks must be in [4, 11]"),
    ("[head]\nmax_abs_yaw = 200\n", "head.max_abs_yaw must be in [0, 180]"),
    ("[head]\nmax_abs_pitch = -1\n", "head.max_abs_pitch must be in [0, 90]"),
    ("[head]\nmax_fit_error = 0\n", "head.max_fit_error must be > 0"),
    ("[head]\nenabled = 'yes'\n", "head.enabled must be a bool"),
])
def test_bad_config_names_file_and_problem(tmp_path, text, words):
    p = tmp_path / "c.toml"
    p.write_text(text)
    with pytest.raises(ValueError, match=r".*c\.toml.*") as err:
        load_config(p)
    assert words in str(err.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ValueError, match="cannot read the config"):
        load_config(tmp_path / "nope.toml")


def test_fingerprint_follows_settings():
    assert fingerprint(DecodeConfig()) == fingerprint(DecodeConfig())
    assert fingerprint(DecodeConfig()) != fingerprint(DecodeConfig(min_short_side=256))


def test_readme_states_the_defaults():
    """Every `[table] key = value` the README's curation section names is the code's default."""
    import re
    import tomllib

    from tests.test_readme import section

    text = section("Data curation")
    defaults = CurateConfig()
    found = 0
    for table, body in re.findall(r"`\[(\w+)\] ([^|\n]+?)(?=\s*\||;|\n)", text):
        for key, value in re.findall(r"(\w+) = ([^`,]+?)`", body):
            got = getattr(getattr(defaults, table), key)
            got = list(got) if isinstance(got, tuple) else got  # TOML arrays are lists
            assert tomllib.loads(f"v = {value}")["v"] == got, f"README says [{table}] {key} = {value}, code {got}"
            found += 1
    assert found >= 15
