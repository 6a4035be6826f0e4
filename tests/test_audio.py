import time
import warnings
import wave

import numpy as np
import pytest

from aicallerd.audio.mulaw import (
    ULAW_SILENCE,
    ulaw_decode,
    ulaw_decode_frames,
    ulaw_decode_rms,
    ulaw_encode,
)
from aicallerd.audio.resample import float_to_pcm16, pcm16_to_float, resample, rms
from aicallerd.audio.wav import read_wav, write_wav

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # the reference implementation (Python 3.11 stdlib)


ALL_INT16 = np.arange(-32768, 32768, dtype=np.int16)


def tone(freq: float, rate: int, seconds: float = 1.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def level_db(x: np.ndarray, rate: int, freq: float) -> float:
    """Amplitude of one frequency component (dB re full scale), edges skipped."""
    x = np.asarray(x, dtype=np.float64)[len(x) // 4 : 3 * len(x) // 4]
    t = np.arange(len(x)) / rate
    amp = 2 * np.abs(np.mean(x * np.exp(-2j * np.pi * freq * t)))
    return 20 * np.log10(amp + 1e-12)


def peak_freq(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


# --- mu-law -----------------------------------------------------------------------------


def test_ulaw_encode_matches_audioop_for_every_sample() -> None:
    assert ulaw_encode(ALL_INT16) == audioop.lin2ulaw(ALL_INT16.tobytes(), 2)


def test_ulaw_decode_matches_audioop_for_every_byte() -> None:
    every_byte = bytes(range(256))
    decoded = ulaw_decode(every_byte)
    assert decoded.dtype == np.int16
    assert decoded.tobytes() == audioop.ulaw2lin(every_byte, 2)


def test_ulaw_silence_decodes_to_zero_and_roundtrip_is_close() -> None:
    assert ulaw_decode(bytes([ULAW_SILENCE]))[0] == 0
    assert ulaw_encode(np.zeros(3, np.int16)) == bytes([ULAW_SILENCE]) * 3
    speech = (tone(440, 8000) * 20000).astype(np.int16)
    back = ulaw_decode(ulaw_encode(speech))
    assert np.max(np.abs(back.astype(int) - speech)) <= 1024  # mu-law step at the top segment


def test_ulaw_accepts_empty_and_noncontiguous_input() -> None:
    assert ulaw_encode(np.zeros(0, np.int16)) == b""
    assert ulaw_decode(b"").size == 0
    strided = ALL_INT16[::7]
    assert ulaw_encode(strided) == audioop.lin2ulaw(strided.tobytes(), 2)


def test_ulaw_encode_refuses_float_samples() -> None:
    with pytest.raises(TypeError, match="int16"):
        ulaw_encode(np.zeros(4, np.float32))


def test_ulaw_is_fast() -> None:
    pcm = (np.random.default_rng(0).standard_normal(8000) * 3000).astype(np.int16)
    data = ulaw_encode(pcm)
    start = time.perf_counter()
    for _ in range(100):
        ulaw_encode(pcm)
        ulaw_decode(data)
    per_second_of_audio = (time.perf_counter() - start) / 100
    assert per_second_of_audio < 1e-3


# --- resampling ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("src", "dst"),
    [(8000, 16000), (16000, 8000), (22050, 8000), (24000, 8000), (8000, 22050), (16000, 16000)],
)
def test_resample_keeps_frequency_and_level_of_1khz(src: int, dst: int) -> None:
    x = tone(1000, src)
    y = resample(x, src, dst)
    assert y.dtype == np.float32
    assert len(y) == dst  # one second in, one second out
    assert abs(peak_freq(y, dst) - 1000) < 2
    assert abs(level_db(y, dst, 1000) - level_db(x, src, 1000)) < 1.0


def test_resample_keeps_the_telephone_band() -> None:
    x = tone(3400, 22050)
    assert abs(level_db(resample(x, 22050, 8000), 8000, 3400) - level_db(x, 22050, 3400)) < 1.0


@pytest.mark.parametrize("freq", [4500, 6000, 9000])
def test_downsampling_removes_tones_above_the_new_nyquist(freq: int) -> None:
    x = tone(freq, 22050, amp=0.9)
    y = resample(x, 22050, 8000)
    alias = abs(8000 - freq) if freq < 8000 else abs(16000 - freq)
    assert level_db(y, 8000, alias) - level_db(x, 22050, freq) < -30
    assert rms(float_to_pcm16(y)) < 0.03 * rms(float_to_pcm16(x))


def test_upsampling_leaves_no_image() -> None:
    y = resample(tone(1000, 8000), 8000, 16000)
    assert level_db(y, 16000, 7000) < level_db(y, 16000, 1000) - 60


def test_resample_is_aligned_with_its_input() -> None:
    x = np.zeros(800, np.float32)
    x[400] = 1.0
    y = resample(x, 8000, 16000)
    assert int(np.argmax(y)) == 800


def test_resample_int16_input_is_scaled_to_float() -> None:
    pcm = float_to_pcm16(tone(1000, 8000))
    y = resample(pcm, 8000, 16000)
    assert 0.45 < np.max(np.abs(y)) < 0.55
    assert resample(np.zeros(0, np.int16), 22050, 8000).size == 0
    assert len(resample(np.ones(3, np.float32), 22050, 8000)) == 2  # ceil(3 * 8000 / 22050)


def test_resample_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        resample(np.zeros(10, np.float32), 0, 8000)
    with pytest.raises(ValueError):
        resample(np.zeros((10, 2), np.float32), 16000, 8000)
    with pytest.raises(TypeError):
        resample(np.zeros(10, np.int32), 16000, 8000)


def test_resample_five_seconds_is_fast() -> None:
    x = tone(1000, 22050, seconds=5)
    resample(x, 22050, 8000)  # filter design is cached
    start = time.perf_counter()
    for _ in range(5):
        resample(x, 22050, 8000)
    assert (time.perf_counter() - start) / 5 < 0.02


def test_pcm_float_conversion_roundtrips_and_clips() -> None:
    assert np.array_equal(float_to_pcm16(pcm16_to_float(ALL_INT16)), ALL_INT16)
    clipped = float_to_pcm16(np.array([-2.0, -1.0, 0.0, 0.5, 1.0, 3.0], np.float32))
    assert clipped.tolist() == [-32768, -32768, 0, 16384, 32767, 32767]


def test_rms_matches_audioop_scale() -> None:
    pcm = (tone(300, 8000) * 10000).astype(np.int16)
    assert abs(rms(pcm) - audioop.rms(pcm.tobytes(), 2)) < 1
    assert rms(np.zeros(0, np.int16)) == 0.0
    assert rms(np.full(10, -32768, np.int16)) == 32768.0  # no int16 overflow


def test_a_frame_decoded_with_its_level_matches_decode_then_rms() -> None:
    rng = np.random.default_rng(5)
    frames = [b"", bytes(range(256)), bytes([ULAW_SILENCE]) * 160, bytes([0x00]) * 160]
    frames += [rng.integers(0, 256, 160, dtype=np.uint8).tobytes() for _ in range(50)]
    for frame in frames:
        pcm, level = ulaw_decode_rms(frame)
        assert pcm.dtype == np.int16 and np.array_equal(pcm, ulaw_decode(frame))
        assert level == rms(ulaw_decode(frame))


def test_frames_decoded_together_match_one_by_one() -> None:
    """A quiet call's frames are decoded a handful at once: the same samples and levels
    (to rounding) as decoding each, so the RMS gate decides alike either way."""
    rng = np.random.default_rng(8)
    frames = [bytes([ULAW_SILENCE]) * 160, bytes([0x00]) * 160, bytes([0x7E, 0xFE]) * 80]
    frames += [rng.integers(0, 256, 160, dtype=np.uint8).tobytes() for _ in range(20)]
    pcm, levels = ulaw_decode_frames(b"".join(frames), 160)
    assert np.array_equal(pcm, ulaw_decode(b"".join(frames)))
    assert levels == pytest.approx([rms(ulaw_decode(f)) for f in frames], rel=1e-12)
    assert levels[0] == 0.0 and levels[1] == pytest.approx(32124.0)
    with pytest.raises(ValueError, match="161 bytes are not frames of 160"):
        ulaw_decode_frames(bytes(161), 160)


# --- WAV -------------------------------------------------------------------------------


def test_wav_roundtrip(tmp_path) -> None:
    pcm = float_to_pcm16(tone(440, 16000, seconds=0.25))
    path = tmp_path / "a.wav"
    write_wav(path, pcm, 16000)
    back, rate = read_wav(path)
    assert rate == 16000 and back.dtype == np.int16
    assert np.array_equal(back, pcm)


def _write_raw(path, channels: int, width: int, rate: int, frames: bytes) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(frames)


def test_read_wav_downmixes_stereo(tmp_path) -> None:
    left = np.array([1000, -2000, 32767], np.int16)
    right = np.array([3000, 2000, 32767], np.int16)
    path = tmp_path / "stereo.wav"
    _write_raw(path, 2, 2, 8000, np.column_stack([left, right]).astype("<i2").tobytes())
    mono, rate = read_wav(path)
    assert rate == 8000
    assert mono.tolist() == [2000, 0, 32767]


def test_read_wav_accepts_8bit(tmp_path) -> None:
    path = tmp_path / "u8.wav"
    _write_raw(path, 1, 1, 8000, bytes([128, 255, 0]))
    mono, _ = read_wav(path)
    assert mono.tolist() == [0, 127 * 256, -32768]


def test_read_wav_names_the_file_when_unsupported(tmp_path) -> None:
    path = tmp_path / "deep.wav"
    _write_raw(path, 1, 3, 8000, b"\x00" * 9)
    with pytest.raises(ValueError, match=r"deep\.wav.*24 bits"):
        read_wav(path)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not a wav at all")
    with pytest.raises(ValueError, match=r"junk\.wav"):
        read_wav(junk)
