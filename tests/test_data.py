"""Datasets: generated with a seed, split by fraction, standardised from the training split only."""

import pytest
import torch

from nnrun import data
from nnrun.config import ConfigError, DatasetConfig, config_dir


def dataset(name: str, **changes) -> DatasetConfig:
    """The dataset of conf/dataset/<name>.yaml (its defaults are written there only), with `changes`."""
    import yaml

    return DatasetConfig(**{**yaml.safe_load((config_dir() / "dataset" / f"{name}.yaml").read_text()), **changes})


def test_xor_is_the_truth_table_and_evaluates_on_it():
    d = data.load(dataset("xor"))
    assert len(d.train) == 4
    raw = d.train.x * d.std + d.mean
    truth = {tuple(map(round, p.tolist())): int(label) for p, label in zip(raw, d.train.y)}
    assert truth == {(0, 0): 0, (0, 1): 1, (1, 0): 1, (1, 1): 0}
    assert d.val is d.train and d.test is d.train
    # On a device too: a split of fraction 0 stays the training split, evaluated once.
    moved = d.to(torch.device("cpu"))
    assert moved.val is moved.train and moved.test is moved.train
    noisy = data.load(dataset("xor", n_samples=40, val_fraction=0.25)).to(torch.device("cpu"))
    assert noisy.val is not noisy.train and noisy.test is noisy.train


def test_noisy_xor_clusters_around_the_corners():
    d = data.load(dataset("xor", n_samples=400, noise=0.1, val_fraction=0.25))
    assert (len(d.train), len(d.val), len(d.test)) == (300, 100, 300)
    assert d.train.y.float().mean().item() == pytest.approx(0.5, abs=0.1)


@pytest.mark.parametrize("name,classes", [("pass_fail", 2), ("spirals", 2), ("spirals", 3), ("circles", 2),
                                          ("gaussians", 4)])
def test_generated_datasets_split_and_standardise(name, classes):
    cfg = dataset(name, n_samples=600, noise=0.1, classes=classes, val_fraction=0.2, test_fraction=0.1)
    d = data.load(cfg)
    assert (len(d.train), len(d.val), len(d.test)) == (420, 120, 60)
    assert d.n_classes == classes and d.n_features == 2
    assert torch.allclose(d.train.x.mean(0), torch.zeros(2), atol=1e-5)
    assert torch.allclose(d.train.x.std(0, unbiased=False), torch.ones(2), atol=1e-4)
    assert set(torch.cat([d.train.y, d.val.y, d.test.y]).tolist()) == set(range(classes))
    again = data.load(cfg)
    assert torch.equal(d.train.x, again.train.x)
    other = data.load(DatasetConfig(**{**cfg.__dict__, "seed": 1}))
    assert not torch.equal(d.train.x, other.train.x)


def test_pass_fail_rule_favours_lectures_and_hours():
    d = data.load(dataset("pass_fail", n_samples=2000, noise=0.0))
    raw = d.train.x * d.std + d.mean
    assert d.feature_names == ["lectures", "hours"] and d.class_names == ["fail", "pass"]
    passed = d.train.y == 1
    assert raw[passed].mean(0)[0] > raw[~passed].mean(0)[0]
    assert raw[passed].mean(0)[1] > raw[~passed].mean(0)[1]


def test_csv_reads_features_and_maps_labels(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,b,label\n" + "".join(f"{i},{-i},{i % 2 * 5}\n" for i in range(20)))
    d = data.load(dataset("csv", path=str(path), val_fraction=0.2, test_fraction=0.0))
    assert d.feature_names == ["a", "b"] and d.class_names == ["0", "5"]
    assert (len(d.train), len(d.val)) == (16, 4)


def test_csv_text_labels_map_to_sorted_classes_and_keep_their_names(tmp_path):
    path = tmp_path / "iris.csv"
    species = ["virginica", "setosa", "versicolor"]
    path.write_text("species,petal_length,petal_width\n"
                    + "".join(f" {species[i % 3]} ,{i % 3 + 0.1 * i},{i % 3}\n" for i in range(30)))
    d = data.load(dataset("csv", path=str(path), target="species", val_fraction=0.0))
    assert d.class_names == ["setosa", "versicolor", "virginica"]
    assert d.feature_names == ["petal_length", "petal_width"]
    raw = d.train.x * d.std + d.mean
    # Row i has species[i % 3] and petal_width i % 3: virginica (0) -> 2, setosa (1) -> 0, versicolor (2) -> 1.
    assert {int(w): int(c) for w, c in zip(raw[:, 1].round(), d.train.y)} == {0: 2, 1: 0, 2: 1}


def test_csv_numeric_labels_sort_by_value_and_name_each_class_once(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,y\n" + "".join(f"{i},{label}\n" for i, label in enumerate(["10", "9", "5.0", "5", "9"])))
    d = data.load(dataset("csv", path=str(path), val_fraction=0.0, test_fraction=0.0))
    assert d.class_names == ["5", "9", "10"]
    labels = {int(a): int(c) for a, c in zip((d.train.x * d.std + d.mean)[:, 0].round(), d.train.y)}
    assert labels == {0: 2, 1: 1, 2: 0, 3: 0, 4: 1}


def test_csv_pass_fail_text_labels_and_a_text_feature_is_refused(tmp_path):
    good = tmp_path / "grades.csv"
    good.write_text("hours,result\n1,fail\n9,pass\n2,fail\n8,pass\n")
    assert data.load(dataset("csv", path=str(good))).class_names == ["fail", "pass"]
    bad = tmp_path / "bad.csv"
    bad.write_text("hours,colour,result\n1,2,fail\n9,red,pass\n")
    with pytest.raises(data.DataError) as err:
        data.load(dataset("csv", path=str(bad)))
    message = str(err.value)
    assert message.startswith(f"{bad}: row 3, column 'colour': 'red' is not a number")
    assert "only the target column ('result') may hold text" in message and "\n" not in message


@pytest.mark.parametrize("content,fragment", [
    ("", "empty"),
    ("a,b,y\n1,x,0\n2,3,1\n", "row 2, column 'b'"),
    ("a,b,y\n1,nan,0\n2,3,1\n", "not a finite number"),
    ("a,b,y\n1,2,0\n2,3,0\n", "one class only (0)"),
    ("a,b,y\n1,2,cat\n2,3,cat\n", "one class only (cat)"),
    ("a,b,y\n1,2,0\n2,3,inf\n", "row 3, column 'y': inf is not a finite number"),
    ("a,b,y\n1,2, \n2,3,1\n", "row 2, column 'y': empty label"),
    ("a,b,c\n1,2,0\n2,3,1\n", "no target column 'y'"),
])
def test_csv_errors_name_file_row_and_column(tmp_path, content, fragment):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(data.DataError, match="bad.csv") as err:
        data.load(dataset("csv", path=str(path), target="y"))
    assert fragment in str(err.value)


def test_missing_csv_is_a_data_error(tmp_path):
    with pytest.raises(data.DataError, match="no such file"):
        data.load(dataset("csv", path=str(tmp_path / "nope.csv")))
    with pytest.raises(data.DataError, match="a directory, not a CSV file"):
        data.load(dataset("csv", path=str(tmp_path)))


@pytest.mark.parametrize("n_samples,sizes", [(100, [34, 33, 33]), (101, [34, 34, 33]), (99, [33, 33, 33])])
def test_spirals_have_every_point_asked_for_the_first_arms_taking_the_remainder(n_samples, sizes):
    d = data.load(dataset("spirals", n_samples=n_samples, noise=0.0, classes=3, val_fraction=0.0,
                          test_fraction=0.0))
    assert torch.bincount(d.train.y).tolist() == sizes


def test_a_split_asked_for_has_a_point_even_where_its_fraction_rounds_to_none():
    d = data.load(dataset("circles", n_samples=10, noise=0.05, val_fraction=0.04, test_fraction=0.04))
    assert (len(d.train), len(d.val), len(d.test)) == (8, 1, 1)
    assert d.val is not d.train and d.test is not d.train


def test_fractions_that_leave_no_training_data_are_refused():
    with pytest.raises(ConfigError, match="leave training data"):
        data.load(dataset("gaussians", n_samples=4, val_fraction=0.5, test_fraction=0.4))


def grades(separator: str = ",", bom: bool = False) -> str:
    """The pass_fail data as a spreadsheet saves it: lectures, hours, result (the first column is the target
    in `first_target`)."""
    rows = [["lectures", "hours", "result"]] + [[str(i % 13), str((3 * i) % 12), "pass" if i % 13 > 6 else "fail"]
                                                 for i in range(20)]
    return ("\ufeff" if bom else "") + "".join(separator.join(row) + "\r\n" for row in rows)


def test_csv_byte_order_mark_is_not_part_of_the_first_name(tmp_path):
    """Excel's "CSV UTF-8" starts with a BOM: the first column is still `lectures`, and a target named after
    the first column is found."""
    path = tmp_path / "excel.csv"
    path.write_text(grades(bom=True), encoding="utf-8")
    d = data.load(dataset("csv", path=str(path)))
    assert d.feature_names == ["lectures", "hours"] and d.class_names == ["fail", "pass"]
    first = tmp_path / "first.csv"
    first.write_text("\ufeffresult,lectures,hours\npass,9,3\nfail,1,2\npass,8,8\n", encoding="utf-8")
    assert data.load(dataset("csv", path=str(first), target="result")).feature_names == \
        ["lectures", "hours"]


@pytest.mark.parametrize("separator", [";", "\t", "|"])
def test_csv_separator_is_detected(tmp_path, separator):
    path = tmp_path / "grades.csv"
    path.write_text(grades(separator))
    d = data.load(dataset("csv", path=str(path)))
    with_commas = tmp_path / "commas.csv"
    with_commas.write_text(grades(","))
    same = data.load(dataset("csv", path=str(with_commas)))
    assert d.feature_names == ["lectures", "hours"] and d.class_names == ["fail", "pass"]
    assert torch.equal(d.train.x, same.train.x) and torch.equal(d.train.y, same.train.y)


def test_csv_decimal_comma_and_one_column_header_say_what_was_read(tmp_path):
    path = tmp_path / "german.csv"
    path.write_text("lectures;hours;result\n3;2,5;pass\n1;1;fail\n")
    with pytest.raises(data.DataError) as err:
        data.load(dataset("csv", path=str(path)))
    assert "row 2, column 'hours': '2,5' is not a number; it has a decimal comma, write '2.5'" in str(err.value)
    lonely = tmp_path / "lonely.csv"
    lonely.write_text("lectures hours result\n3 2 pass\n1 1 fail\n")
    with pytest.raises(data.DataError) as err:
        data.load(dataset("csv", path=str(lonely)))
    assert "no feature columns besides the target 'lectures hours result': the header is one column; " \
           "columns are separated by ',', ';', tab or '|'" in str(err.value)


def test_csv_that_is_not_utf8_is_one_line(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("größe,result\n1,a\n2,b\n".encode("latin-1"))
    with pytest.raises(data.DataError, match=r"not UTF-8 text \(byte 0xf6 at offset 2\); save it as CSV UTF-8"):
        data.load(dataset("csv", path=str(path)))


def test_csv_rows_are_named_by_their_line_in_the_file(tmp_path):
    path = tmp_path / "gaps.csv"
    path.write_text("a,y\n1,0\n\n\n2,1\nthree,0\n")
    with pytest.raises(data.DataError, match="row 6, column 'a': 'three'"):
        data.load(dataset("csv", path=str(path)))


@pytest.mark.parametrize("name", ["xor", "pass_fail", "spirals", "circles", "gaussians"])
def test_the_keys_a_datasets_file_sets_are_the_ones_it_reads(name):
    """conf/dataset/<name>.yaml lists the keys nnrun takes for that dataset (any other is refused): each of them
    changes its data, and no other key does."""
    from dataclasses import replace

    from nnrun.config import choice_keys

    def arrays(cfg):
        d = data.load(cfg)
        return [t for split in (d.train, d.val, d.test) for t in (split.x, split.y)]

    base = dataset(name, n_samples=40, noise=0.1, val_fraction=0.25, test_fraction=0.25, classes=2)
    changes = {"n_samples": 44, "noise": 0.3, "classes": 3, "val_fraction": 0.5, "test_fraction": 0.1, "seed": 1}
    for key, value in changes.items():
        changed = arrays(replace(base, **{key: value}))
        differs = any(a.shape != b.shape or not torch.equal(a, b) for a, b in zip(arrays(base), changed))
        assert differs == (key in choice_keys("dataset")[name]), key
