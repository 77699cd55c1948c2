from pathlib import Path

import pytest

from fournil.pretrain.memory import estimate_memory
from fournil.recipe import RecipeError, apply_overrides, load_recipe
from fournil.stages import STAGE_NAMES

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


@pytest.mark.parametrize("name", sorted(p.stem for p in RECIPES.glob("*.toml")))
def test_bundled_recipes_validate(name):
    """Every recipe under recipes/ loads, and names the folders it reads."""
    recipe = load_recipe(RECIPES / f"{name}.toml")
    assert recipe.name == name
    for source in recipe.ingest.sources:
        assert recipe.resolve(source.path).is_dir(), source.path


def _write(tmp_path, text):
    path = tmp_path / "r.toml"
    path.write_text('name = "t"\n[ingest]\nsources = [{ path = "." }]\n' + text)
    return path


def test_unknown_key_names_the_key(tmp_path):
    with pytest.raises(RecipeError, match=r"pretrain\.learning_rate: unknown key"):
        load_recipe(_write(tmp_path, "[pretrain]\nlearning_rate = 0.1\n"))


def test_bad_type_names_the_key(tmp_path):
    with pytest.raises(RecipeError, match=r"pretrain\.max_steps: expected an integer"):
        load_recipe(_write(tmp_path, '[pretrain]\nmax_steps = "many"\n'))


def test_bad_value_names_the_key(tmp_path):
    with pytest.raises(RecipeError, match=r"pretrain\.optimizer\.lr: must be > 0"):
        load_recipe(_write(tmp_path, "[pretrain.optimizer]\nlr = -1.0\n"))
    with pytest.raises(RecipeError, match=r"pretrain\.lr: unknown key"):
        load_recipe(_write(tmp_path, "[pretrain]\nlr = 0.1\n"))  # it moved to [pretrain.optimizer]
    with pytest.raises(RecipeError, match=r"pretrain\.decay_fraction: warmup and decay"):
        load_recipe(_write(tmp_path, '[pretrain]\nmax_steps = 100\nwarmup_steps = 50\n'
                                     'schedule = "wsd"\ndecay_fraction = 0.6\n'))
    with pytest.raises(RecipeError, match=r"model\.num_kv_heads: must divide"):
        load_recipe(_write(tmp_path, "[model]\nnum_heads = 4\nnum_kv_heads = 3\n"))
    with pytest.raises(RecipeError, match=r"curate\.allowed_licenses\[0\]: unknown license"):
        load_recipe(_write(tmp_path, '[curate]\nallowed_licenses = ["my own terms"]\n'))
    with pytest.raises(RecipeError, match=r"pretrain\.seq_len: must be <= model\.max_seq_len"):
        load_recipe(_write(tmp_path, "[model]\nmax_seq_len = 64\n[pretrain]\nseq_len = 128\n"))


def test_missing_name_and_bad_toml(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text("[pretrain]\nmax_steps = 10\n")
    with pytest.raises(RecipeError, match="name"):
        load_recipe(path)
    path.write_text("name = \n")
    with pytest.raises(RecipeError, match="not valid TOML"):
        load_recipe(path)


def test_allowed_licenses_are_normalised(tmp_path):
    recipe = load_recipe(_write(tmp_path, '[curate]\nallowed_licenses = ["CC BY-SA 4.0"]\n'))
    assert recipe.curate.allowed_licenses == ["CC-BY-SA-4.0"]


def test_overrides_are_validated():
    recipe = load_recipe(RECIPES / "smoke.toml")
    changed = apply_overrides(recipe, ["pretrain.max_steps=7", "generate.prompt=Bonjour"])
    assert changed.pretrain.max_steps == 7 and changed.generate.prompt == "Bonjour"
    with pytest.raises(RecipeError, match="pretrain.max_steps"):
        apply_overrides(recipe, ["pretrain.max_steps=-3"])
    with pytest.raises(RecipeError, match="unknown key"):
        apply_overrides(recipe, ["pretrain.nope=1"])


@pytest.mark.parametrize("name, low, high", [("gpu-150m", 130e6, 170e6),
                                              ("gpu-350m", 300e6, 380e6)])
def test_gpu_recipes_validate_and_fit_one_80gb_gpu(name, low, high):
    recipe = load_recipe(RECIPES / f"{name}.toml")
    assert recipe.pretrain.optimizer.name == "muon" and recipe.pretrain.schedule == "wsd"
    estimate = estimate_memory(recipe.model, recipe.pretrain, recipe.tokenizer.vocab_size)
    assert low < estimate.parameters < high, estimate.table()
    assert estimate.total_gib < 0.9 * 80, estimate.table()
    assert recipe.pretrain.batch_size * recipe.pretrain.grad_accum * recipe.pretrain.seq_len \
        == 524_288


def test_extends_overrides_table_by_table(tmp_path):
    base = _write(tmp_path, "[pretrain]\nmax_steps = 40\nbatch_size = 4\n[model]\nnum_layers = 3\n")
    child = tmp_path / "child.toml"
    child.write_text(f'extends = "{base.name}"\nname = "child"\n'
                     'stages = ["ingest", "curate", "synth", "tokenizer", "tokens", "pretrain",'
                     ' "eval", "sft", "export"]\n[pretrain]\nmax_steps = 80\n')
    recipe = load_recipe(child)
    assert recipe.name == "child"
    assert (recipe.pretrain.max_steps, recipe.pretrain.batch_size) == (80, 4)  # one key replaced
    assert recipe.model.num_layers == 3  # a table the child does not touch
    assert "sft" in recipe.stages


def test_extends_errors_name_the_file(tmp_path):
    loop = tmp_path / "loop.toml"
    loop.write_text('extends = "loop.toml"\nname = "x"\n')
    with pytest.raises(RecipeError, match="extends itself"):
        load_recipe(loop)
    missing = tmp_path / "orphan.toml"
    missing.write_text('extends = "nowhere.toml"\nname = "x"\n')
    with pytest.raises(RecipeError, match=r"nowhere\.toml: recipe not found"):
        load_recipe(missing)


def test_stages_are_checked(tmp_path):
    with pytest.raises(RecipeError, match=r"stages\[1\]: unknown stage 'distil'"):
        load_recipe(_write_stages(tmp_path, '"distil"'))
    # the core stages always run, named or not; `stages` adds the optional ones
    recipe = load_recipe(_write_stages(tmp_path, '"curate", "tokenizer", "tokens", "sft"'))
    assert [s for s in STAGE_NAMES if recipe.runs(s)] == [
        "ingest", "curate", "tokenizer", "tokens", "pretrain", "eval", "sft", "report", "export"]


def test_old_names_say_the_new_ones(tmp_path):
    with pytest.raises(RecipeError, match=r"stages\[3\]: unknown stage 'tokenize' .*'tokenize' "
                                          r"is now 'tokens'"):
        load_recipe(_write_stages(tmp_path, '"curate", "tokenizer", "tokenize"'))
    with pytest.raises(RecipeError, match=r"r\.toml: tokenize: unknown key .*'tokenize' is now "
                                          r"'tokens'"):
        load_recipe(_write(tmp_path, "[tokenize]\nval_fraction = 0.1\n"))
    with pytest.raises(RecipeError, match=r"no section 'tokenize' .*'tokenize' is now 'tokens'"):
        apply_overrides(load_recipe(RECIPES / "smoke.toml"), ["tokenize.val_fraction=0.1"])


def _write_stages(tmp_path, rest):
    path = tmp_path / "s.toml"
    path.write_text(f'name = "t"\nstages = ["ingest", {rest}]\n'
                    '[ingest]\nsources = [{ path = "." }]\n')
    return path
