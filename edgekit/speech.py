"""A spoken-keyword data set made on the machine: espeak-ng voices, noise, and the usual MFCC front end.

Why: keyword spotting (Google Speech Commands, 12 classes) is the standard temporal task of the streaming and spiking
papers edgekit implements (LMUFormer, L2MU, EGRU, the Stateful Conformer), but downloading it is not an option here.
So the clips are synthesised: Debian's ``espeak-ng`` says each word with many voices (language/accent × voice
variant), speeds, pitches and loudness; each word is placed at a random offset in a 1-second, 16 kHz clip and mixed
with generated background noise (white, pink, brown, mains hum) at a random signal-to-noise ratio.

The task (as Speech Commands' 12-class version): ``silence``, ``unknown`` (other words), and 10 keywords: yes, no,
up, down, left, right, on, off, stop, go.

Features: the keyword-spotting front end of "Hello Edge" (Zhang et al. 2017) that DS-CNN keyword models use:
40 ms Hann windows every 20 ms (49 frames over 1 s), power spectrum, 40 mel bands (20 Hz-7.6 kHz), log, DCT-II,
the first 10 coefficients: one clip is a [49, 10] float32 matrix. Each coefficient is then standardised with
fixed constants (``FEATURE_MEAN`` / ``FEATURE_STD``, measured once on the training split of seed 0) so that models
see inputs of unit scale. numpy and scipy only.

Splits are by *voice variant* (the timbre: m1, f3, klatt2, ...): the test speakers' variants never occur in training,
in any accent. Deterministic: the same seed gives the same arrays byte for byte (espeak-ng 1.51 is deterministic;
noise and every random choice come from numpy generators seeded per clip). Generated once in parallel and cached in
``$XDG_CACHE_HOME/edgekit/`` (about 1.5 minutes on 2 cores for the full set: 8,400 clips).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from edgekit.errors import DataError, UsageError

KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
CLASSES = ("silence", "unknown") + KEYWORDS
# Other words of Speech Commands (its "unknown" class), plus a few more so that "unknown" is not a short list.
UNKNOWN_WORDS = ("bed", "bird", "cat", "dog", "eight", "five", "four", "happy", "house", "marvin", "nine", "one",
                 "seven", "sheila", "six", "three", "tree", "two", "wow", "zero", "learn", "follow", "forward",
                 "backward", "visual", "yellow", "note", "toss", "gone", "light")
# Accents (espeak-ng 1.51 language voices) and voice variants (espeak-ng-data/voices/!v). Variants that are not
# voices (robots, demons, "fast") are left out.
ACCENTS = ("en", "en-029", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-gb-x-rp", "en-us", "en-us-nyc")
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2", "klatt3",
            "klatt4", "klatt5", "klatt6", "croak", "whisper", "whisperf", "Alex", "Alicia", "Andrea", "Andy", "Annie",
            "Denis", "Diogo", "Gene", "Henrique", "Hugo", "Jacky", "Lee", "Marco", "Mario", "Michael", "Mike",
            "Nguyen", "Storm", "Tweaky", "adam", "anika", "announcer", "antonio", "aunty", "belinda", "benjamin",
            "boris", "caleb", "david", "ed", "edward", "grandma", "grandpa", "gustave", "iven", "john", "linda",
            "max", "michel", "miguel", "norbert", "pablo", "paul", "pedro", "quincy", "rob", "robert", "sandro",
            "shelby", "steph", "travis", "victor", "zac")

SAMPLE_RATE = 16_000
CLIP_SAMPLES = SAMPLE_RATE  # 1 s
FRAME_SAMPLES = 640  # 40 ms
HOP_SAMPLES = 320    # 20 ms
FRAMES = 1 + (CLIP_SAMPLES - FRAME_SAMPLES) // HOP_SAMPLES  # 49
MEL_BANDS = 40
MFCC_COEFFS = 10
FEATURE_SHAPE = (FRAMES, MFCC_COEFFS)

# Per-coefficient standardisation constants: mean and standard deviation of the raw MFCCs over the training split of
# seed 0 (full size, 6,160 clips), measured once (`edgekit data kws --stats` prints them).
FEATURE_MEAN = np.array([-16.03, 5.05, 2.71, 2.08, 0.43, 0.53, 0.62, -0.03, 0.22, 0.03], dtype=np.float64)
FEATURE_STD = np.array([19.05, 7.05, 3.64, 3.56, 3.67, 2.75, 2.36, 1.98, 1.6, 1.36], dtype=np.float64)

_VERSION = 1  # bump when the recipe changes: cached sets are keyed by it


@dataclass(frozen=True)
class Recipe:
    """How many voices and clips: ``full`` for the bundled examples, ``small`` for tests."""

    name: str
    accents_per_variant: int   # each variant speaks in this many accents (chosen per seed): one speaker each
    unknown_per_speaker: int
    silence_per_speaker: int
    val_variants: int
    test_variants: int
    variants: int | None = None  # use only the first N variants (None: all)


RECIPES = {
    "full": Recipe("full", accents_per_variant=8, unknown_per_speaker=3, silence_per_speaker=1, val_variants=10,
                   test_variants=10),
    "small": Recipe("small", accents_per_variant=1, unknown_per_speaker=2, silence_per_speaker=1, val_variants=2,
                    test_variants=2, variants=10),
}


@dataclass(frozen=True)
class KwsData:
    """Features [N, 49, 10] float32 (standardised MFCC frames) and int64 labels (indices into ``CLASSES``) per split,
    and each clip's speaker (``accent+variant``) so that the split by voice can be checked."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    speakers_train: tuple[str, ...]
    speakers_val: tuple[str, ...]
    speakers_test: tuple[str, ...]

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        if name not in ("train", "val", "test"):
            raise UsageError(f"unknown split {name!r}; choose train, val or test")
        return getattr(self, f"x_{name}"), getattr(self, f"y_{name}")


# ---- the front end ---------------------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _mel_matrix() -> np.ndarray:
    """[MEL_BANDS, FFT/2+1] triangular mel filters (HTK mel scale), 20 Hz to 7.6 kHz."""
    n_fft = 1024
    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    inv = lambda m: 700.0 * (10 ** (m / 2595.0) - 1.0)  # noqa: E731
    edges = inv(np.linspace(mel(20.0), mel(7600.0), MEL_BANDS + 2))
    freqs = np.fft.rfftfreq(n_fft, 1.0 / SAMPLE_RATE)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None] - lo) / (mid - lo)
    down = (hi - freqs[None]) / (hi - mid)
    return np.maximum(0.0, np.minimum(up, down))


@lru_cache(maxsize=1)
def _dct_matrix() -> np.ndarray:
    from scipy.fft import dct

    return dct(np.eye(MEL_BANDS), type=2, norm="ortho", axis=0)[:MFCC_COEFFS]


def mfcc(clips: np.ndarray) -> np.ndarray:
    """[N, 16000] float waveforms -> [N, 49, 10] MFCC frames (not standardised), float64."""
    clips = np.asarray(clips, dtype=np.float64)
    if clips.ndim != 2 or clips.shape[1] != CLIP_SAMPLES:
        raise DataError(f"mfcc expects [N, {CLIP_SAMPLES}] clips of 1 s at 16 kHz, got shape {clips.shape}")
    idx = np.arange(FRAMES)[:, None] * HOP_SAMPLES + np.arange(FRAME_SAMPLES)[None]
    frames = clips[:, idx] * np.hanning(FRAME_SAMPLES)
    power = np.abs(np.fft.rfft(frames, n=1024, axis=-1)) ** 2
    logmel = np.log(power @ _mel_matrix().T + 1e-6)
    return logmel @ _dct_matrix().T


def features(clips: np.ndarray) -> np.ndarray:
    """[N, 16000] waveforms -> [N, 49, 10] standardised float32 features, what the keyword models read."""
    return ((mfcc(clips) - FEATURE_MEAN) / FEATURE_STD).astype(np.float32)


# ---- synthesis -------------------------------------------------------------------------------------------------------

def _espeak() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise DataError("espeak-ng is not installed; run `make setup` (it installs the Debian package espeak-ng) "
                        "to make the keyword data set")
    return exe


def say(word: str, voice: str, speed: int, pitch: int) -> np.ndarray:
    """espeak-ng's rendering of ``word`` as float64 samples at 16 kHz (espeak-ng speaks at 22.05 kHz)."""
    from scipy.signal import resample_poly

    out = subprocess.run([_espeak(), "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", word],
                         capture_output=True, check=False)
    data = out.stdout
    at = data.find(b"data")
    if out.returncode != 0 or at < 0:
        raise DataError(f"espeak-ng could not say {word!r} with voice {voice!r}: "
                        f"{out.stderr.decode(errors='replace').strip() or 'no audio'}")
    pcm = np.frombuffer(data[at + 8:len(data) - (len(data) - at - 8) % 2], dtype="<i2").astype(np.float64) / 32768.0
    return resample_poly(pcm, 320, 441)  # 22,050 Hz -> 16,000 Hz


def _noise(rng: np.random.Generator, kind: str, samples: int = CLIP_SAMPLES) -> np.ndarray:
    white = rng.standard_normal(samples)
    if kind == "white":
        n = white
    elif kind in ("pink", "brown"):
        spec = np.fft.rfft(white)
        f = np.maximum(np.fft.rfftfreq(samples, 1.0 / SAMPLE_RATE), 20.0)
        n = np.fft.irfft(spec / (np.sqrt(f) if kind == "pink" else f), n=samples)
    else:  # mains hum: 50 or 60 Hz and harmonics, plus a little white noise
        base = 50.0 if rng.random() < 0.5 else 60.0
        t = np.arange(samples) / SAMPLE_RATE
        n = sum(rng.uniform(0.2, 1.0) / k * np.sin(2 * np.pi * base * k * t + rng.uniform(0, 2 * np.pi))
                for k in range(1, 6)) + 0.05 * white
    return n / (np.sqrt(np.mean(n ** 2)) + 1e-12)


NOISES = ("white", "pink", "brown", "hum")


def _clip(job: tuple) -> np.ndarray:
    """One 1-s clip (float32 waveform) from its job: (seed, index, word or None for silence, voice)."""
    seed, index, word, voice = job
    rng = np.random.default_rng([_VERSION, seed, index])
    noise = _noise(rng, NOISES[int(rng.integers(len(NOISES)))])
    clip = np.zeros(CLIP_SAMPLES)
    if word is None:  # silence: background only, at a random level
        return (noise * 10 ** rng.uniform(-3.5, -1.3)).astype(np.float32)
    speech = say(word, voice, speed=int(rng.integers(110, 230)), pitch=int(rng.integers(15, 86)))
    nz = np.flatnonzero(np.abs(speech) > 1e-3)  # trim espeak's leading/trailing silence
    speech = speech[nz[0]:nz[-1] + 1] if nz.size else speech
    if speech.size > CLIP_SAMPLES:
        start = (speech.size - CLIP_SAMPLES) // 2
        speech = speech[start:start + CLIP_SAMPLES]
    offset = int(rng.integers(0, CLIP_SAMPLES - speech.size + 1))
    clip[offset:offset + speech.size] = speech
    clip *= rng.uniform(0.05, 0.9) / (np.abs(clip).max() + 1e-12)  # loudness
    speech_rms = np.sqrt(np.mean(speech ** 2)) * np.abs(clip).max() / (np.abs(speech).max() + 1e-12)
    snr_db = rng.uniform(5.0, 30.0)
    clip += noise * speech_rms / 10 ** (snr_db / 20.0)
    return clip.astype(np.float32)


def _speakers(seed: int, recipe: Recipe) -> dict[str, list[str]]:
    """Voices (``accent+variant``) per split, the variants split so that no test timbre is heard in training."""
    rng = np.random.default_rng([_VERSION, seed, 7])
    variants = list(VARIANTS[:recipe.variants] if recipe.variants else VARIANTS)
    order = [variants[i] for i in rng.permutation(len(variants))]
    parts = {"test": order[:recipe.test_variants],
             "val": order[recipe.test_variants:recipe.test_variants + recipe.val_variants],
             "train": order[recipe.test_variants + recipe.val_variants:]}
    out = {}
    for split, vs in parts.items():
        out[split] = [f"{ACCENTS[a]}+{v}" for v in vs
                      for a in sorted(rng.choice(len(ACCENTS), recipe.accents_per_variant, replace=False))]
    return out


def _jobs(seed: int, recipe: Recipe) -> dict[str, list[tuple]]:
    """Per split: (seed, clip index, word or None, voice) and the label, in a fixed order."""
    rng = np.random.default_rng([_VERSION, seed, 11])
    jobs: dict[str, list[tuple]] = {}
    index = 0
    for split, voices in _speakers(seed, recipe).items():
        rows = []
        for voice in voices:
            words = [(w, CLASSES.index(w)) for w in KEYWORDS]
            words += [(UNKNOWN_WORDS[int(i)], 1) for i in rng.choice(len(UNKNOWN_WORDS), recipe.unknown_per_speaker,
                                                                      replace=False)]
            words += [(None, 0)] * recipe.silence_per_speaker
            for word, label in words:
                rows.append(((seed, index, word, voice), label))
                index += 1
        jobs[split] = rows
    return jobs


def _cache_path(seed: int, recipe: Recipe) -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgekit"
    key = hashlib.sha256(repr((_VERSION, recipe, ACCENTS, VARIANTS, UNKNOWN_WORDS, FEATURE_MEAN.tolist(),
                               FEATURE_STD.tolist())).encode()).hexdigest()[:12]
    return root / f"kws-{recipe.name}-seed{seed}-{key}.npz"


def generate(seed: int = 0, size: str = "full", workers: int | None = None, progress=None) -> KwsData:
    """Synthesise the data set (no cache); ``progress(done, total)`` is called as clips finish."""
    recipe = RECIPES.get(size)
    if recipe is None:
        raise UsageError(f"unknown keyword data set size {size!r}; choose one of {', '.join(RECIPES)}")
    _espeak()
    jobs = _jobs(seed, recipe)
    flat = [j for split in ("train", "val", "test") for j, _ in jobs[split]]
    workers = workers or max(1, min(os.cpu_count() or 1, 4))
    clips = np.zeros((len(flat), CLIP_SAMPLES), np.float32)
    with ProcessPoolExecutor(workers) as pool:
        for i, clip in enumerate(pool.map(_clip, flat, chunksize=32)):
            clips[i] = clip
            if progress is not None and ((i + 1) % 64 == 0 or i + 1 == len(flat)):
                progress(i + 1, len(flat))
    feats = np.concatenate([features(clips[i:i + 512]) for i in range(0, len(clips), 512)])
    out, at = {}, 0
    for split in ("train", "val", "test"):
        n = len(jobs[split])
        out[f"x_{split}"] = feats[at:at + n]
        out[f"y_{split}"] = np.array([label for _, label in jobs[split]], dtype=np.int64)
        out[f"speakers_{split}"] = tuple(job[3] for job, _ in jobs[split])
        at += n
    return KwsData(**out)


@lru_cache(maxsize=2)
def _cached(seed: int, size: str) -> KwsData:
    path = _cache_path(seed, RECIPES[size])  # kws() checked the size
    try:
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
        return KwsData(**{k: (tuple(v.tolist()) if k.startswith("speakers") else v) for k, v in arrays.items()})
    except (OSError, KeyError, ValueError, TypeError):
        pass
    data = generate(seed, size)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, **{k: (np.array(v) if k.startswith("speakers") else v) for k, v in data.__dict__.items()})
        os.replace(tmp, path)
    except OSError:
        pass  # no writable cache: still correct, slower next time
    return data


def kws(seed: int = 0, size: str = "full") -> KwsData:
    """The keyword data set for ``seed`` (``full``: 8,400 clips; ``small``: 130, for tests), cached."""
    if size not in RECIPES:
        raise UsageError(f"unknown keyword data set size {size!r}; choose one of {', '.join(RECIPES)}")
    return _cached(seed, size)


# ---- a continuous stream (the streaming demo) ------------------------------------------------------------------------

@dataclass(frozen=True)
class SpokenWord:
    """One word of a synthetic stream: what was said, by whom, from ``start_s`` to ``end_s``."""

    word: str
    voice: str
    start_s: float
    end_s: float

    @property
    def is_keyword(self) -> bool:
        return self.word in KEYWORDS


def make_stream(seconds: float = 60.0, seed: int = 0, words_per_minute: float = 24.0) -> tuple[np.ndarray,
                                                                                                 list[SpokenWord]]:
    """A continuous recording for streaming: ``seconds`` of background noise (pink, with mains hum) with keywords
    and other words (about 1 in 4) spoken at random times by the data set's *test* voices (unseen in training), at
    least 1.2 s apart. Deterministic for a seed. Returns the float32 waveform at 16 kHz and the script."""
    rng = np.random.default_rng([_VERSION, seed, 23, int(seconds * 1000)])
    samples = int(seconds * SAMPLE_RATE)
    wave = 0.02 * _noise(rng, "pink", samples) + 0.005 * _noise(rng, "hum", samples)
    voices = _speakers(0, RECIPES["full"])["test"]
    script: list[SpokenWord] = []
    t = rng.uniform(0.5, 1.5)
    n_words = int(seconds / 60.0 * words_per_minute)
    while len(script) < n_words and t < seconds - 1.5:
        word = KEYWORDS[int(rng.integers(len(KEYWORDS)))] if rng.random() < 0.75 else \
            UNKNOWN_WORDS[int(rng.integers(len(UNKNOWN_WORDS)))]
        voice = voices[int(rng.integers(len(voices)))]
        speech = say(word, voice, speed=int(rng.integers(130, 200)), pitch=int(rng.integers(25, 75)))
        nz = np.flatnonzero(np.abs(speech) > 1e-3)
        speech = speech[nz[0]:nz[-1] + 1][:CLIP_SAMPLES] if nz.size else speech[:CLIP_SAMPLES]
        speech = speech * rng.uniform(0.2, 0.8) / (np.abs(speech).max() + 1e-12)
        at = int(t * SAMPLE_RATE)
        wave[at:at + speech.size] += speech[:samples - at]
        script.append(SpokenWord(word, voice, at / SAMPLE_RATE, (at + speech.size) / SAMPLE_RATE))
        t = script[-1].end_s + rng.uniform(1.2, 3.0)
    return wave.astype(np.float32), script


def stream_features(wave: np.ndarray) -> np.ndarray:
    """A waveform of any length -> its standardised MFCC frames [T, 10] (the same front end as :func:`features`:
    40 ms frames every 20 ms); frame t ends at sample 640 + 320·t."""
    wave = np.asarray(wave, dtype=np.float64)
    if wave.ndim != 1 or wave.size < FRAME_SAMPLES:
        raise DataError(f"stream_features expects a 1-D waveform of at least {FRAME_SAMPLES} samples, got {wave.shape}")
    count = 1 + (wave.size - FRAME_SAMPLES) // HOP_SAMPLES
    idx = np.arange(count)[:, None] * HOP_SAMPLES + np.arange(FRAME_SAMPLES)[None]
    power = np.abs(np.fft.rfft(wave[idx] * np.hanning(FRAME_SAMPLES), n=1024, axis=-1)) ** 2
    mf = np.log(power @ _mel_matrix().T + 1e-6) @ _dct_matrix().T
    return ((mf - FEATURE_MEAN) / FEATURE_STD).astype(np.float32)
