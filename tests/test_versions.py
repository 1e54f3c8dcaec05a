"""Versions on load (issue 10, item 6): library version mismatches warn, unreadable formats are refused.

The tests edit a saved ensemble's ``manifest.json``; the manifest is the one file its own
checksums do not cover, so only the version checks can object.
"""

import warnings

import pytest

from embedensemble import EmotionEnsemble, EnsembleConfig
from embedensemble import manifest as manifest_module
from embedensemble.config import CVConfig, MemberConfig
from embedensemble.data import load_dataset
from embedensemble.errors import FormatVersionError, InconsistentVersionWarning, UnsafeArtifactError
from embedensemble.fileio import read_json, write_json
from embedensemble.fitting import fit_members
from embedensemble.manifest import CHECKED_LIBRARIES, check_library_versions, library_versions
from embedensemble.stacking import stack_run

from . import simple_member  # noqa: F401  (registers the tiny "test-bow" member)
from .synthetic import write_kaggle


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("versions")
    splits = load_dataset(write_kaggle(tmp / "d", n_train=90, n_test=5))
    config = EnsembleConfig(name="t", members=[MemberConfig(name="bow", kind="test-bow", features="w")], cv=CVConfig(n_folds=2))
    stack_run(fit_members(config, splits.train, tmp / "run"), write_report=False)
    return tmp / "run" / "ensemble"


@pytest.fixture()
def ensemble_dir(saved, tmp_path):
    import shutil

    return shutil.copytree(saved, tmp_path / "ensemble")


def edit_manifest(folder, **changes):
    manifest = read_json(folder / "manifest.json")
    for key, value in changes.items():
        if value is None:
            manifest.pop(key, None)
        else:
            manifest[key] = value
    write_json(folder / "manifest.json", manifest)
    return manifest


def bump(version: str, minor: int = 1, patch: int = 0) -> str:
    major, rest = version.split(".", 1)
    minor_now = int(rest.split(".")[0].split("+")[0])
    return f"{major}.{minor_now + minor}.{patch}"


def test_saved_versions_are_recorded_and_load_silently(ensemble_dir):
    recorded = read_json(ensemble_dir / "manifest.json")["versions"]
    assert recorded == library_versions()
    assert {"torch", "scikit-learn", "numpy"} <= set(recorded)
    with warnings.catch_warnings():
        warnings.simplefilter("error", InconsistentVersionWarning)
        EmotionEnsemble.load(ensemble_dir)


def test_minor_version_mismatch_warns_per_library_and_still_loads(ensemble_dir):
    versions = library_versions()
    edit_manifest(ensemble_dir, versions={**versions, "scikit-learn": bump(versions["scikit-learn"]), "torch": "1.4.0"})
    with pytest.warns(InconsistentVersionWarning) as record:
        ensemble = EmotionEnsemble.load(ensemble_dir)
    caught = {w.message.library: w.message for w in record if issubclass(w.category, InconsistentVersionWarning)}
    assert set(caught) == {"scikit-learn", "torch"}
    assert caught["torch"].saved_version == "1.4.0" and caught["torch"].installed_version == versions["torch"]
    text = str(caught["scikit-learn"])
    assert str(ensemble_dir) in text and bump(versions["scikit-learn"]) in text and versions["scikit-learn"] in text
    assert record[0].filename == __file__  # points at the caller of load(), not at the library
    assert ensemble.predict(["so happy and cheerful"]).shape == (1, 11)


def test_patch_releases_and_unchecked_libraries_do_not_warn(ensemble_dir):
    versions = library_versions()
    edited = {**versions, "scikit-learn": bump(versions["scikit-learn"], minor=0, patch=99), "numpy": "1.0.0", "somelib": "9.9"}
    edited["torch"] = versions["torch"].split("+")[0] + "+cu121"  # another local build of the same release
    edit_manifest(ensemble_dir, versions=edited)
    with warnings.catch_warnings():
        warnings.simplefilter("error", InconsistentVersionWarning)
        EmotionEnsemble.load(ensemble_dir)
    edit_manifest(ensemble_dir, versions=None)  # an old manifest without versions: nothing to compare
    with warnings.catch_warnings():
        warnings.simplefilter("error", InconsistentVersionWarning)
        EmotionEnsemble.load(ensemble_dir)


def test_saved_library_that_is_not_installed_warns(ensemble_dir, monkeypatch):
    installed = {k: v for k, v in library_versions().items() if k != "peft"}
    monkeypatch.setattr(manifest_module, "library_versions", lambda: installed)
    edit_manifest(ensemble_dir, versions={**installed, "peft": "0.13.2"})
    with pytest.warns(InconsistentVersionWarning, match="peft 0.13.2, which is not installed"):
        EmotionEnsemble.load(ensemble_dir)


def test_check_library_versions_covers_the_listed_libraries():
    now = library_versions()
    saved = {name: "0.0.1" for name in CHECKED_LIBRARIES}
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        issued = check_library_versions(saved, "somewhere")
    assert {w.library for w in issued} == set(CHECKED_LIBRARIES)
    assert len(record) == len(CHECKED_LIBRARIES)
    assert all(w.installed_version == now.get(w.library) for w in issued)
    assert check_library_versions("not a dict", "x") == []


@pytest.mark.parametrize("version, relation", [(2, "newer"), (99, "newer"), (0, "older"), ("1", "unreadable"), (None, "unreadable"), (True, "unreadable")])
def test_unreadable_format_versions_are_refused(ensemble_dir, version, relation):
    edit_manifest(ensemble_dir, format_version=version)
    with pytest.raises(FormatVersionError, match=rf"\({relation}") as info:  # not the tmp path, which holds the test name
        EmotionEnsemble.load(ensemble_dir)
    assert str(ensemble_dir) in str(info.value) and "reads version 1" in str(info.value)


def test_format_refusal_comes_before_version_warnings(ensemble_dir):
    edit_manifest(ensemble_dir, format_version=2, versions={"torch": "0.1"})
    with warnings.catch_warnings():
        warnings.simplefilter("error", InconsistentVersionWarning)
        with pytest.raises(FormatVersionError):
            EmotionEnsemble.load(ensemble_dir)


def test_checksums_still_guard_everything_but_the_manifest(ensemble_dir):
    """Editing a listed file (not the manifest) is refused, whatever the versions say."""
    fold_json = next(ensemble_dir.rglob("fold.json"))
    fold_json.write_text(fold_json.read_text().replace("{", '{"format_version": 99, ', 1))
    with pytest.raises(UnsafeArtifactError, match="checksum"):
        EmotionEnsemble.load(ensemble_dir)


def test_stacking_a_run_fitted_under_other_versions_warns(saved, tmp_path):
    import shutil

    run = shutil.copytree(saved.parent, tmp_path / "run")
    info = read_json(run / "run.json")
    info["versions"] = {**info["versions"], "scikit-learn": bump(info["versions"]["scikit-learn"])}
    write_json(run / "run.json", info)
    with pytest.warns(InconsistentVersionWarning, match="scikit-learn"):
        stack_run(run, write_report=False)
    with warnings.catch_warnings():  # the run as fitted: silent
        warnings.simplefilter("error", InconsistentVersionWarning)
        stack_run(shutil.copytree(saved.parent, tmp_path / "as_fitted"), write_report=False)
