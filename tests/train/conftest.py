import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf


def _song(rate: int, seconds: float, seed: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    n = int(rate * seconds)
    t = np.arange(n) / rate
    f0 = 200 + 100 * rng.random()
    vocals = 0.3 * np.sin(2 * np.pi * f0 * t * (1 + 0.05 * np.sin(2 * np.pi * 2 * t)))
    vocals *= (np.sin(2 * np.pi * 0.7 * t) > -0.3)  # phrases with gaps
    stems = {
        "vocals": vocals,
        "bass": 0.2 * np.sin(2 * np.pi * 55 * t),
        "drums": 0.1 * rng.standard_normal(n) * (np.sin(2 * np.pi * 2 * t) > 0.9),
        "other": 0.1 * np.sin(2 * np.pi * 440 * t) + 0.05 * np.sin(2 * np.pi * 660 * t),
    }
    stems = {k: np.stack([v, 0.9 * v], axis=1).astype(np.float32) for k, v in stems.items()}
    return sum(stems.values()), stems


def make_musdb_hq(root: Path, rate: int = 8000, seconds: float = 3.0) -> Path:
    for subset, names in (("train", ["Alpha - One", "Beta - Two"]), ("test", ["Gamma - Three", "Delta - Four"])):
        for i, name in enumerate(names):
            folder = root / subset / name
            folder.mkdir(parents=True)
            mix, stems = _song(rate, seconds, zlib.crc32(name.encode()) % 1000)
            sf.write(str(folder / "mixture.wav"), mix, rate, subtype="FLOAT")
            for stem, audio in stems.items():
                sf.write(str(folder / f"{stem}.wav"), audio, rate, subtype="FLOAT")
    return root


def make_dsd100(root: Path, rate: int = 8000, seconds: float = 3.0) -> Path:
    for split, names in (("Dev", ["001 - A"]), ("Test", ["002 - B"])):
        for name in names:
            mix, stems = _song(rate, seconds, len(name) + len(split))
            (root / "Mixtures" / split / name).mkdir(parents=True)
            (root / "Sources" / split / name).mkdir(parents=True)
            sf.write(str(root / "Mixtures" / split / name / "mixture.wav"), mix, rate, subtype="FLOAT")
            for stem, audio in stems.items():
                sf.write(str(root / "Sources" / split / name / f"{stem}.wav"), audio, rate, subtype="FLOAT")
    return root


@pytest.fixture(scope="session")
def musdb_hq(tmp_path_factory) -> Path:
    return make_musdb_hq(tmp_path_factory.mktemp("musdb-hq"))


@pytest.fixture(scope="session")
def dsd100(tmp_path_factory) -> Path:
    return make_dsd100(tmp_path_factory.mktemp("dsd100"))
