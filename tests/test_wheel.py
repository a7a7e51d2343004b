"""``pip install .`` (not editable) ships what the kit and the tools read from the package: the
configs (vild_d2.model_zoo) and the prompt templates; an installed copy finds them without the
checkout."""
import os
import zipfile

from .helpers import REPO, run


def test_the_wheel_carries_configs_and_templates_and_finds_them_installed(tmp_path):
    run(["-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(REPO), "-w",
         str(tmp_path / "wheel")], cwd=tmp_path)
    wheel = next((tmp_path / "wheel").glob("vild_d2-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {p.relative_to(REPO / "configs").as_posix() for p in (REPO / "configs").rglob("*.yaml")}
    assert {f"vild_d2/model_zoo/configs/{n}" for n in shipped} <= names
    assert "vild_d2/data/prompt_templates.txt" in names
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "vild_d2").rglob("*.py")}
    assert modules <= names, sorted(modules - names)  # a folder without __init__.py is left out
    run(["-m", "pip", "install", "-q", "--no-deps", "--target", str(tmp_path / "site"), str(wheel)],
        cwd=tmp_path)
    code = ("import vild_d2, vild_d2.model_zoo as z, vild_d2.text_classifier as t; "
            "print(vild_d2.__file__); print(z.get_config_file('toy/ViLD-Toy-ensemble.yaml')); "
            "print(len(t.read_templates()))")
    out = run(["-c", code], cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(tmp_path / "site"))).stdout.split()
    assert all(line.startswith(str(tmp_path / "site")) for line in out[:2]), out
    assert int(out[2]) > 0
