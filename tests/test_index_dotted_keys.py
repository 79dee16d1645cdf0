"""Issue 18, point 8: a tar whose keys hold a dot (`song.v2.id`) is refused by `mmsample index`
naming the members and the dotted key, never as "no valid song.id member" (since fields may be
`NAME.EXT`, a reader splits `song.v2.id` at its first dot). Fields written as NAME.EXT next to
a plain key still index."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from mmsample.cli import main
from mmsample.sharding.tar_scan import scan_tar
from mmsample.shards.format import Manifest


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def sample(key: str, i: int, fields: tuple[str, ...] = ("wav",)) -> list[tuple[str, bytes]]:
    """`key.id`, `key.cls` (label i % 2), then one member per field."""
    head = [(f"{key}.id", str(i).encode()), (f"{key}.cls", str(i % 2).encode())]
    return head + [(f"{key}.{f}", b"payload") for f in fields]


def refusal(root: Path, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["index", str(root)]) == 1
    err = capsys.readouterr().err
    assert "cannot index" in err and not (root / "manifest.json").exists()
    return err


# (members, dotted key, its members as named): the tar, then others of the kind
CASES = {
    "issue": (sample("song.v2", 0), "song.v2", ["song.v2.id", "song.v2.cls", "song.v2.wav"]),
    "two dots": (
        sample("song.v2.b", 0),
        "song.v2.b",
        ["song.v2.b.id", "song.v2.b.cls", "song.v2.b.wav"],
    ),
    "media first": (  # the wav comes before the id that shows the key is dotted
        sample("take.2", 0)[::-1],
        "take.2",
        ["take.2.wav", "take.2.cls", "take.2.id"],
    ),
    "a NAME.EXT field of a dotted key": (
        sample("clip.final", 0, ("image.png",)),
        "clip.final",
        ["clip.final.id", "clip.final.cls", "clip.final.image.png"],
    ),
    "metadata only": ([("song.v2.json", b"{}")], "song.v2", ["song.v2.json"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_dotted_key_is_refused_naming_its_members(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    members, key, names = CASES[case]
    write_tar(tmp_path / "shard-000000.tar", members)
    err = refusal(tmp_path, capsys)
    assert "1 problem(s)" in err
    what = f"member {names[0]!r} has" if len(names) == 1 else f"members {names} have"
    assert f"shard-000000.tar:{key}: {what} the dotted key {key!r}" in err
    assert f"Rename the key, e.g. {key.replace('.', '_')!r}" in err
    assert "no valid" not in err and "is not KEY.EXT" not in err


def test_mixed_good_and_dotted_samples_name_only_the_dotted_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_tar(
        tmp_path / "shard-000000.tar",
        [
            *sample("a", 0),
            *sample("song.v2", 1),
            *sample("b", 2, ("v2.wav",)),  # a plain key with a NAME.EXT field: fine
            *sample("song.v3", 3),
            *sample("c", 4),
        ],
    )
    samples, problems = scan_tar(tmp_path / "shard-000000.tar")
    assert [s.key for s in samples] == ["a", "b", "c"]
    assert [s.sample_id for s in samples] == [0, 2, 4]
    assert [p.key for p in problems] == ["song.v2", "song.v3"]
    err = refusal(tmp_path, capsys)
    assert "2 problem(s)" in err
    for key in ("song.v2", "song.v3"):
        names = [f"{key}.id", f"{key}.cls", f"{key}.wav"]
        assert f"shard-000000.tar:{key}: members {names} have the dotted key {key!r}" in err
    for good in ("a", "b", "c"):
        assert f"tar:{good}:" not in err
    assert "no valid" not in err


def test_one_first_dot_key_with_two_dotted_keys_and_a_plain_sample(tmp_path: Path) -> None:
    """`song.id` and `song.v2.id` side by side: `song` is a sample, `song.v2` a dotted key,
    and `song.v2.wav` belongs to the dotted key, not to `song` as a field `v2.wav`."""
    write_tar(
        tmp_path / "shard-000000.tar",
        [*sample("song", 0), *sample("song.v2", 1), *sample("song.v2.b", 2)],
    )
    samples, problems = scan_tar(tmp_path / "shard-000000.tar")
    assert [(s.key, s.members, s.sample_id) for s in samples] == [("song", ["id", "cls", "wav"], 0)]
    assert [p.key for p in problems] == ["song.v2", "song.v2.b"]
    assert "['song.v2.b.id', 'song.v2.b.cls', 'song.v2.b.wav']" in str(problems[1])


def test_plain_keys_with_name_ext_fields_still_index(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_tar(
        tmp_path / "shard-000000.tar",
        [*sample("s0", 0, ("image.png", "v2.wav")), *sample("s1", 1, ("image.png", "v2.wav"))],
    )
    classes = tmp_path / "classes.txt"
    classes.write_text("zero\none\n")
    assert main(["index", str(tmp_path), "--classes", str(classes)]) == 0, capsys.readouterr()
    assert Manifest.load(tmp_path).num_samples == 2
